"""A real `mirror export` killed with SIGKILL mid-blob, then run again.

A local copy of even a large blob takes milliseconds, so to kill the exporter *inside* a copy
every time, the killed process starts with a `sitecustomize` that makes `shutil.copyfile`
of the large blob write half of it, fsync, signal the test and hang — what a slow medium
would look like at the moment of the kill. The rerun has no hook.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

from mirror.fakengc import FakeNGC, seed_catalog
from tests.conftest import REPO, mirror_cmd
from tests.test_bundle_support import (
    MiB,
    assert_same_catalog,
    big_entry,
    env,
    export,
    import_,
    manifest,
    mirror,
    ok,
    sync,
)

BIG = 16 * MiB

HOOK = """
import os, shutil, time
_copyfile = shutil.copyfile
def copyfile(src, dst, *args, **kwargs):
    if os.path.getsize(src) == int(os.environ["BUNDLE_TEST_STALL_SIZE"]):
        with open(src, "rb") as fi, open(dst, "wb") as fo:
            fo.write(fi.read(os.path.getsize(src) // 2))
            fo.flush()
            os.fsync(fo.fileno())
        open(os.environ["BUNDLE_TEST_MARK"], "w").close()
        while True:
            time.sleep(1)
    return _copyfile(src, dst, *args, **kwargs)
shutil.copyfile = copyfile
"""


def test_kill_9_mid_dir_export_then_rerun_finishes(tmp_path: Path) -> None:
    src, site = tmp_path / "src", tmp_path / "site"
    dest = tmp_path / "usb" / "bundle"
    cat = seed_catalog(limit=3, include_resources=False, file_size=1500)
    with FakeNGC(cat) as fake:
        sync(src, fake)
        export(src, dest)  # an older, complete bundle already on the medium
        assert (dest / "mirror-bundle.json").is_file()
        big = cat.add(big_entry("huge", BIG))
        sync(src, fake)
    big_hex = big.versions[0].files[0].sha256_hex

    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(HOOK)
    mark = tmp_path / "stalled"
    run_env = env(
        src,
        PYTHONPATH=str(hook),
        BUNDLE_TEST_STALL_SIZE=str(BIG),
        BUNDLE_TEST_MARK=str(mark),
    )
    proc = subprocess.Popen(
        mirror_cmd("export", str(dest)),
        env=run_env,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 60
        while not mark.exists():
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the export never reached the big blob"
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL

    # killed mid-copy: half a blob under a temporary name, and no manifest vouching for
    # anything (the older bundle's manifest was removed before the first new byte)
    blobs = dest / "blobs" / "sha256"
    partial = blobs / f".{big_hex}.partial"
    assert partial.stat().st_size == BIG // 2
    assert not (blobs / big_hex).exists()
    assert not (dest / "mirror-bundle.json").exists()
    refused = mirror(site, "import", str(dest))
    assert refused.returncode == 2 and "no mirror-bundle.json" in refused.stderr
    assert "re-run the export" in refused.stderr
    copied_before = {p.name for p in blobs.iterdir() if not p.name.startswith(".")}

    res = export(src, dest)
    assert res["blobs_reused"] >= len(copied_before) > 0
    assert res["blobs_copied"] + res["blobs_reused"] == res["blobs"]
    assert not partial.exists()
    assert "sha256:" + big_hex in {b["digest"] for b in manifest(dest)["blobs"]}

    imp = import_(site, dest)
    assert imp["target_snapshot"] == res["target_snapshot"]
    assert '"clean": true' in ok(mirror(site, "verify", "--json")).stdout
    assert_same_catalog(src, site)
