"""Export usage mistakes exit 2 with a clear message and never touch the destination."""

from __future__ import annotations

from pathlib import Path

import pytest

from mirror.fakengc import FakeNGC, seed_catalog
from tests.test_bundle_support import export, import_, mirror_inproc, sync, tree


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    src = tmp_path_factory.mktemp("usage") / "src"
    with FakeNGC(seed_catalog(limit=2, include_resources=False, file_size=1000)) as fake:
        sync(src, fake)
    return src


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--format", "tar", "--split", "100KiB"), "--split must be at least 1MiB"),
        (("--split", "4GiB"), "--split needs --format tar"),
        (("--format", "zip"), "unknown format 'zip'"),
        (("--since", "1", "--site", "lab"), "use --since or --site, not both"),
        (("--receipt", "r.json"), "--receipt needs --site NAME"),
        (("--since", "99"), "snapshot 99 is newer than this mirror's latest"),
    ],
)
def test_usage_error_leaves_an_existing_bundle_alone(
    source: Path, tmp_path: Path, args: tuple[str, ...], message: str
) -> None:
    dest = tmp_path / "usb"
    export(source, dest)  # a good bundle already on the medium
    before = tree(dest)
    proc = mirror_inproc(source, "export", str(dest), *args)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr
    assert "unexpected error" not in proc.stderr
    assert tree(dest) == before
    assert import_(tmp_path / "site", dest)["upserts"] == 2  # still a complete bundle
