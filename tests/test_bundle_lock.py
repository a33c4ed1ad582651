"""Another writer holds the mirror: import and export exit 5 naming it, and change nothing."""

from __future__ import annotations

import os
from pathlib import Path

from mirror.fakengc import FakeNGC, seed_catalog
from mirror.fsutil import MirrorLock
from tests.test_bundle_support import assert_unchanged, export, frozen, import_, mirror, sync


def test_import_and_export_exit_5_while_another_writer_holds_the_lock(tmp_path: Path) -> None:
    src, site = tmp_path / "src", tmp_path / "site"
    with FakeNGC(seed_catalog(limit=2, include_resources=False, file_size=1000)) as fake:
        sync(src, fake)
    b1 = export(src, tmp_path / "b1")
    import_(site, tmp_path / "b1")
    with FakeNGC(seed_catalog(limit=3, include_resources=False, file_size=1000)) as fake:
        sync(src, fake)
    export(src, tmp_path / "b2", "--since", str(b1["target_snapshot"]))

    held = MirrorLock(site / "lock", "sync").acquire()
    try:
        before = frozen(site)
        proc = mirror(site, "import", str(tmp_path / "b2"))
        assert proc.returncode == 5, proc.stderr
        assert f"pid {os.getpid()}" in proc.stderr and "`mirror sync`" in proc.stderr
        assert_unchanged(before, site)
    finally:
        held.release()

    held = MirrorLock(src / "lock", "sync").acquire()
    try:
        proc = mirror(src, "export", str(tmp_path / "b3"))
        assert proc.returncode == 5, proc.stderr
        assert not (tmp_path / "b3").exists()
        plan = mirror(src, "export", str(tmp_path / "b3"), "--dry-run")  # takes no lock
        assert plan.returncode == 0 and "plan (dry run)" in plan.stdout
    finally:
        held.release()
    assert import_(site, tmp_path / "b2")["upserts"] >= 1
