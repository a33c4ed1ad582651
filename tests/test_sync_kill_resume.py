"""A real `mirror sync` process killed with SIGKILL mid-download, then run again."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

from mirror.fakengc import FakeEntry, FakeFile, FakeNGC, FakeVersion, Fault, seed_catalog
from tests.conftest import REPO, cli_env, mirror_cmd, run_mirror, wait_for, write_config

BIG = 4 * 1024 * 1024


def _size(p: Path) -> int:
    """Size of a partial, 0 once it is gone (a small file finishes and is renamed meanwhile)."""
    try:
        return p.stat().st_size
    except FileNotFoundError:
        return 0


def _big_partial(home: Path, big: FakeFile) -> Path:
    return home / "tmp" / f"sha256-{big.sha256_hex}.partial"


def test_kill_9_mid_download_then_rerun_resumes_and_verifies(home: Path, tmp_path: Path) -> None:
    cat = seed_catalog(limit=4, include_resources=False)
    big = FakeFile("weights/big.bin", content=os.urandom(BIG))
    cat.add(
        FakeEntry(
            kind="model",
            org="nvidia",
            team=None,
            name="bigmodel",
            display_name="Big Model",
            updated="2024-01-01T00:00:00.000Z",
            versions=[FakeVersion("1.0", files=[big])],
        )
    )
    cfg = write_config(tmp_path / "m.toml")
    with FakeNGC(cat) as fake:
        fake.add_fault(Fault(r"^/_dl/.*big\.bin", throttle_bps=1_000_000, times=None))
        env = cli_env(home, fake.url)
        proc = subprocess.Popen(
            mirror_cmd("--config", str(cfg), "sync"),
            env=env,
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        try:
            wait_for(lambda: _size(_big_partial(home, big)) > 256 * 1024)
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        finally:
            if proc.poll() is None:
                proc.kill()
        assert proc.returncode == -signal.SIGKILL
        cut = _size(_big_partial(home, big))
        assert cut, "the kill left no partial download to resume"
        assert 0 < cut < BIG
        # nothing partial or corrupt is visible under blobs/
        blobs = home / "blobs" / "sha256"
        assert big.sha256_hex not in {p.name for p in blobs.iterdir()}
        assert run_mirror(["verify"], env).returncode == 0
        # status already tells the killed run from a running one (its pid is gone)
        runs = json.loads(run_mirror(["status", "--json"], env).stdout)["runs"]
        assert (runs[0]["command"], runs[0]["outcome"]) == ("sync", "interrupted")

        fake.clear_faults()
        fake.clear_requests()
        again = run_mirror(["--config", str(cfg), "sync"], env)
        assert again.returncode == 0, again.stderr
        ranges = [r.headers.get("range") for r in fake.requests if "big.bin" in r.path]
        assert ranges and ranges[0] is not None and int(ranges[0][6:].rstrip("-")) >= cut - 1
        assert (blobs / big.sha256_hex).read_bytes() == big.content
        v = run_mirror(["verify", "--json"], env)
        assert v.returncode == 0 and '"clean": true' in v.stdout
        status = run_mirror(["status", "--json"], env).stdout
        assert '"interrupted"' in status  # the killed run is recorded as such


def test_second_concurrent_sync_exits_5_naming_the_holder(home: Path, tmp_path: Path) -> None:
    cat = seed_catalog(limit=2, include_resources=False, file_size=400_000)
    cfg = write_config(tmp_path / "m.toml")
    with FakeNGC(cat) as fake:
        # slow enough that the first sync still holds the lock when a loaded machine has
        # started the second one (the first is killed at the end, so this costs nothing)
        fake.add_fault(Fault(r"^/_dl/", throttle_bps=20_000, times=None))
        env = cli_env(home, fake.url)
        first = subprocess.Popen(
            mirror_cmd("--config", str(cfg), "sync"),
            env=env,
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        try:
            wait_for(lambda: fake.count(r"^/_dl/") > 0)
            second = run_mirror(["--config", str(cfg), "sync"], env)
            assert second.returncode == 5, second.stderr
            assert f"pid {first.pid}" in second.stderr and "started" in second.stderr
        finally:
            first.kill()
            first.wait()
