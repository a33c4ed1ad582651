"""A full disk during import: nothing published, a clear error, store and DB unchanged."""

from __future__ import annotations

from pathlib import Path

from mirror.fakengc import FakeNGC, seed_catalog
from tests.test_bundle_support import (
    MiB,
    assert_unchanged,
    big_entry,
    export,
    frozen,
    import_,
    mirror,
    sync,
)


def test_disk_full_during_import_changes_nothing(tmp_path: Path, small_disk: Path) -> None:
    cat = seed_catalog(limit=3, include_resources=False)
    src = tmp_path / "src"
    with FakeNGC(cat) as fake:
        sync(src, fake)
        first = tmp_path / "b1"
        export(src, first)
        cat.add(big_entry("huge", 12 * MiB))  # twice what the small disk holds
        sync(src, fake)
    second = tmp_path / "b2"
    export(src, second, "--since", "1")
    site = small_disk / "site"
    import_(site, first)  # fits: the site now has content to protect
    before = frozen(site)
    proc = mirror(site, "import", str(second))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "disk full" in proc.stderr and "Traceback" not in proc.stderr
    assert_unchanged(before, site)
    assert mirror(site, "verify").returncode == 0
