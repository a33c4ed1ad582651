"""The NGC API key never travels: no bundle file (dir or tar) and no output contains it."""

from __future__ import annotations

from pathlib import Path

from mirror.fakengc import FakeNGC, seed_catalog
from tests.test_bundle_support import MiB, big_entry, mirror, mirror_inproc, ok, sync

KEY = "NGCKEY-bundle-sekrit-5e0c9a4471b2d3f8"


def _files_with(root: Path, needle: bytes) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and needle in p.read_bytes()]


def test_api_key_is_in_no_bundle_file(tmp_path: Path) -> None:
    src, site = tmp_path / "src", tmp_path / "site"
    cat = seed_catalog(limit=3, include_resources=False, file_size=1500)
    cat.add(big_entry("bigone", MiB + 4321))
    with FakeNGC(cat, api_key=KEY) as fake:
        sync(src, fake, api_key=KEY)
        # key mode was really used: a token exchange and key-mode listings with a bearer token
        assert fake.count(r"^/token") >= 1
        assert any(r.path.startswith("/v2/org/") for r in fake.requests)
    outputs = []
    for name, args in (
        ("dir", ()),
        ("tar", ("--format", "tar", "--split", "1MiB")),
        ("signed", ("--sign", str(tmp_path / "k"))),
    ):
        if name == "signed":
            ok(mirror_inproc(src, "keys", "generate", str(tmp_path / "k")))
        # a real process with the key in its environment, as cron would run it
        proc = ok(mirror(src, "-vv", "export", str(tmp_path / name), *args, NGC_API_KEY=KEY))
        outputs += [proc.stdout, proc.stderr]
    assert len(list((tmp_path / "tar").glob("bundle.tar.*"))) >= 2
    imp = ok(mirror_inproc(site, "import", str(tmp_path / "tar")))
    assert "4 entries" in imp.stdout  # the bundles do carry the catalog
    for name in ("dir", "tar", "signed"):
        assert (tmp_path / name / "mirror-bundle.json").is_file()
        assert _files_with(tmp_path / name, KEY.encode()) == [], name
    assert _files_with(site, KEY.encode()) == []
    for text in outputs:
        assert KEY not in text
    # the control for the grep: it does find what is there
    assert _files_with(src.parent / "dir", b"nvidia/bigone") != []
