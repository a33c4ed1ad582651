"""A real `mirror import` killed with SIGKILL, then run again: the rerun finishes the job.

- mid-blob, dir bundle: to make the kill land mid-copy every time (no race with a fast local
  disk), the large blob's file in the bundle is replaced by a named pipe: the importer opens
  it like any file and reads what the test feeds it, as from a very slow USB stick. The test
  feeds 3 MiB, waits until they are in tmp/…partial, and kills it there.
- mid-blob, tar bundle: a part cannot be a pipe (its size is checked first), so the killed
  process carries a `sitecustomize` hook that SIGKILLs it once 1.5 MiB of the blob are staged.
- after the commit, before the receipt: the same kind of hook, on the receipt write.
The reruns never carry a hook.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from mirror.fakengc import FakeNGC, seed_catalog
from tests.conftest import REPO, mirror_cmd
from tests.test_bundle_support import (
    MiB,
    assert_same_catalog,
    big_entry,
    env,
    export,
    manifest,
    mirror,
    ok,
    store_blobs,
    sync,
    table_count,
)

BIG = 16 * MiB
FED = 3 * MiB


def _wait_for(cond: Callable[[], bool], proc: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + 60
    while not cond():
        if proc.poll() is not None:
            raise AssertionError(f"import exited {proc.returncode} before {what}")
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not reached in 60 s")
        time.sleep(0.01)


def _open_writer(fifo: Path, proc: subprocess.Popen[bytes]) -> int:
    fd: list[int] = []

    def opened() -> bool:
        try:
            fd.append(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        except OSError as exc:
            if exc.errno != errno.ENXIO:  # ENXIO: no reader yet
                raise
        return bool(fd)

    _wait_for(opened, proc, "the importer opened the big blob")
    fcntl.fcntl(fd[0], fcntl.F_SETFL, fcntl.fcntl(fd[0], fcntl.F_GETFL) & ~os.O_NONBLOCK)
    return fd[0]


def test_kill_9_mid_import_then_rerun_resumes(tmp_path: Path) -> None:
    src, site = tmp_path / "src", tmp_path / "site"
    cat = seed_catalog(limit=3, include_resources=False, file_size=1500)
    big = cat.add(big_entry("huge", BIG))
    big_hex = big.versions[0].files[0].sha256_hex
    with FakeNGC(cat) as fake:
        sync(src, fake)
    bundle = tmp_path / "bundle"
    export(src, bundle)
    digests = [b["digest"] for b in manifest(bundle)["blobs"]]  # the order import reads them
    assert "sha256:" + big_hex in digests

    blob = bundle / "blobs" / "sha256" / big_hex
    real = tmp_path / "real-big.bin"
    shutil.move(blob, real)
    os.mkfifo(blob)
    partial = site / "tmp" / f"sha256-{big_hex}.partial"
    proc = subprocess.Popen(
        mirror_cmd("import", str(bundle)),
        env=env(site),
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    fd = -1
    try:
        fd = _open_writer(blob, proc)
        with open(real, "rb") as fh:
            os.write(fd, fh.read(FED))  # blocks until the importer has read it all
        _wait_for(lambda: partial.exists() and partial.stat().st_size == FED, proc, "3 MiB")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if fd >= 0:
            os.close(fd)
    assert proc.returncode == -signal.SIGKILL

    # killed mid-blob: a partial in tmp/, blobs verified before it staged, nothing published
    assert partial.stat().st_size == FED
    before_big = digests[: digests.index("sha256:" + big_hex)]
    assert before_big  # (the seed makes this deterministic: some blobs sort before it)
    staged = {p.name for p in (site / "tmp").iterdir()}
    assert {f"sha256-{d[7:]}.verified" for d in before_big} <= staged
    assert store_blobs(site) == {}
    assert table_count(site, "imports") == 0 and table_count(site, "entries") == 0
    ok(mirror(site, "verify"))

    blob.unlink()
    shutil.move(real, blob)
    again = ok(mirror(site, "-v", "import", str(bundle)))
    assert f"resuming sha256:{big_hex} at byte {FED}" in again.stderr
    assert "imported bundle" in again.stdout
    assert list((site / "tmp").iterdir()) == []
    verify = ok(mirror(site, "verify", "--json"))
    assert '"clean": true' in verify.stdout
    assert_same_catalog(src, site)
    assert store_blobs(site)[big_hex] == big_hex

    once_more = ok(mirror(site, "import", str(bundle)))
    assert "already imported" in once_more.stdout
    assert table_count(site, "imports") == 1


KILL_AT_RECEIPT = """
import os, signal
import mirror.bundle.importer as importer
def _die(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGKILL)
importer._write_receipt = _die
"""


def test_kill_9_after_commit_before_receipt_then_rerun_writes_it(tmp_path: Path) -> None:
    """Killed in the last step (catalog committed, receipt not yet written): the rerun is
    "already imported" and must still leave the receipt the exporter needs."""
    src, site = tmp_path / "src", tmp_path / "site"
    with FakeNGC(seed_catalog(limit=2, include_resources=False, file_size=1000)) as fake:
        sync(src, fake)
    bundle = tmp_path / "bundle"
    export(src, bundle, "--site", "lab")
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(KILL_AT_RECEIPT)
    killed = subprocess.run(
        mirror_cmd("import", str(bundle)),
        env=env(site, PYTHONPATH=str(hook)),
        cwd=REPO,
        capture_output=True,
        timeout=120,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert table_count(site, "imports") == 1  # the catalog transaction had committed
    receipt = bundle / "mirror-receipt.json"
    assert not receipt.exists() and not (site / "receipts" / "latest.json").exists()

    again = ok(mirror(site, "import", str(bundle)))
    assert "already imported" in again.stdout
    assert receipt.is_file(), "the rerun left no receipt to carry back"
    assert (site / "receipts" / "latest.json").read_bytes() == receipt.read_bytes()
    doc = json.loads(receipt.read_bytes())
    assert [i["bundle_id"] for i in doc["imports"]] == [manifest(bundle)["bundle_id"]]
    # and it works for its purpose: the exporter now knows the site has everything
    done = ok(
        mirror(src, "export", str(tmp_path / "b2"), "--site", "lab", "--receipt", str(receipt))
    )
    assert "nothing to export" in done.stdout


KILL_MID_BLOB = """
import os, signal
import mirror.blobstore as blobstore
_write = blobstore.BlobWriter.write
def write(self, chunk):
    _write(self, chunk)  # (unbuffered: these bytes are in tmp/ now)
    if self.stage and self.expected_digest == os.environ["KILL_DIGEST"]:
        if self.offset >= int(os.environ["KILL_AT"]):
            os.kill(os.getpid(), signal.SIGKILL)
blobstore.BlobWriter.write = write
"""


def test_kill_9_mid_tar_import_then_rerun_resumes(tmp_path: Path) -> None:
    """The tar path resumes too (it cannot seek: it skips through the member). A part file
    cannot be a pipe (its size is checked first), so the killed run carries a hook that
    SIGKILLs the process once 1.5 MiB of the large blob are staged."""
    src, site = tmp_path / "src", tmp_path / "site"
    cat = seed_catalog(limit=2, include_resources=False, file_size=1000)
    big = cat.add(big_entry("huge", 3 * MiB))
    digest = "sha256:" + big.versions[0].files[0].sha256_hex
    with FakeNGC(cat) as fake:
        sync(src, fake)
    bundle = tmp_path / "bundle"
    export(src, bundle, "--format", "tar", "--split", "1MiB")
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(KILL_MID_BLOB)
    killed = subprocess.run(
        mirror_cmd("import", str(bundle)),
        env=env(site, PYTHONPATH=str(hook), KILL_DIGEST=digest, KILL_AT=str(3 * MiB // 2)),
        cwd=REPO,
        capture_output=True,
        timeout=120,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    partial = site / "tmp" / f"sha256-{digest[7:]}.partial"
    cut = partial.stat().st_size
    assert 3 * MiB // 2 <= cut < 3 * MiB
    assert store_blobs(site) == {} and table_count(site, "imports") == 0

    again = mirror(site, "-v", "import", str(bundle))
    assert again.returncode == 0, again.stderr
    assert f"resuming {digest} at byte {cut}" in again.stderr
    assert list((site / "tmp").iterdir()) == []
    assert '"clean": true' in ok(mirror(site, "verify", "--json")).stdout
    assert_same_catalog(src, site)
