"""An incremental bundle whose base the site lacks is refused, naming what is missing."""

from __future__ import annotations

from pathlib import Path

from mirror.fakengc import FakeFile, FakeNGC, FakeVersion, seed_catalog
from tests.test_bundle_support import (
    assert_same_catalog,
    assert_unchanged,
    det_bytes,
    export,
    frozen,
    import_,
    mirror,
    store_blobs,
    sync,
    table_count,
)


def test_bundle_continuing_a_missing_snapshot_is_refused(tmp_path: Path) -> None:
    src, site, fresh = tmp_path / "src", tmp_path / "site", tmp_path / "fresh"
    cat = seed_catalog(limit=3, include_resources=False, file_size=1500)
    snaps = []
    with FakeNGC(cat) as fake:
        sync(src, fake)
        b1 = export(src, tmp_path / "b1")
        import_(site, tmp_path / "b1")
        snaps.append(b1["target_snapshot"])
        for n, entry in enumerate(cat.of_kind("model")[:2]):
            f = FakeFile("extra.bin", det_bytes(2500, n))
            cat.add_version(entry, FakeVersion(f"{n + 2}.0", files=[f]))
            sync(src, fake)
            b = export(src, tmp_path / f"b{n + 2}", "--since", str(snaps[-1]))
            snaps.append(b["target_snapshot"])
    s1, s2, s3 = snaps
    assert s1 < s2 < s3

    # the site has s1; b3 continues s2, which it never got
    before = frozen(site)
    proc = mirror(site, "import", str(tmp_path / "b3"))
    assert proc.returncode == 2, proc.stderr
    assert f"continues snapshot {s2}" in proc.stderr
    assert f"only up to snapshot {s1}: missing snapshot {s2}" in proc.stderr
    assert "--receipt" in proc.stderr and "hint:" in proc.stderr
    assert_unchanged(before, site)

    # a mirror that never imported anything from that source
    proc = mirror(fresh, "import", str(tmp_path / "b3"))
    assert proc.returncode == 2, proc.stderr
    assert f"nothing from it: missing snapshots 1..{s2}" in proc.stderr
    assert store_blobs(fresh) == {} and table_count(fresh, "entries") == 0
    assert table_count(fresh, "imports") == 0

    # in order, it works
    import_(site, tmp_path / "b2")
    import_(site, tmp_path / "b3")
    assert_same_catalog(src, site)
