"""A full disk during `mirror sync`: a clear error before anything is fetched when the plan
cannot fit, and when the disk fills mid-download, a stop at once with the space given back, the
run recorded as failed, the store clean; the next run on a bigger disk completes."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from mirror.fakengc import FakeNGC, Fault, seed_catalog
from tests.conftest import REPO, cli_env, mirror_cmd, run_mirror, tmpfs, wait_for, write_config
from tests.test_bundle_support import MiB, big_entry


def _size(p: Path) -> int:
    try:
        return p.stat().st_size
    except FileNotFoundError:
        return 0


def _last_run(env: dict[str, str]) -> dict[str, object]:
    status = run_mirror(["status", "--json"], env)
    assert status.returncode == 0, status.stderr
    runs = json.loads(status.stdout)["runs"]
    last: dict[str, object] = runs[0]
    return last


def test_a_plan_that_cannot_fit_fetches_nothing_and_says_why(tmp_path: Path) -> None:
    cat = seed_catalog(limit=3, include_resources=False)
    cfg = write_config(tmp_path / "m.toml")
    with tmpfs(tmp_path / "disk", "6m") as disk, FakeNGC(cat) as fake:
        env = cli_env(disk / "mirror", fake.url)
        assert run_mirror(["--config", str(cfg), "sync"], env).returncode == 0
        huge = cat.add(big_entry("huge", 12 * MiB))
        fake.clear_requests()
        done = run_mirror(["--config", str(cfg), "sync"], env)
        assert done.returncode == 1, done.stdout + done.stderr
        assert "needs 12.0 MiB more" in done.stderr and "free" in done.stderr
        assert "mirror prune" in done.stderr and "Traceback" not in done.stderr
        assert fake.count(r"^/_dl/") == 0  # refused before the first byte
        # ... but the catalog moved on: the new entry is known, its bytes are not here
        shown = run_mirror(["show", "nvidia/huge", "--json"], env)
        assert shown.returncode == 0, shown.stderr
        assert [v["mirrored"] for v in json.loads(shown.stdout)["versions"]] == [False]
        last = _last_run(env)
        assert last["outcome"] == "failed" and "needs 12.0 MiB" in str(last["error"])
        assert run_mirror(["verify"], env).returncode == 0
        assert list((disk / "mirror" / "tmp").iterdir()) == []

        # a bigger disk: the same command completes
        grown = subprocess.run(["mount", "-o", "remount,size=64m", str(disk)], capture_output=True)
        assert grown.returncode == 0, grown.stderr
        assert run_mirror(["--config", str(cfg), "sync"], env).returncode == 0
        digest = huge.versions[0].files[0].sha256_hex
        assert (disk / "mirror" / "blobs" / "sha256" / digest).is_file()


def test_disk_filling_mid_download_stops_the_run_and_gives_the_space_back(
    tmp_path: Path,
) -> None:
    cat = seed_catalog(limit=3, include_resources=False)
    huge = cat.add(big_entry("huge", 12 * MiB))
    cfg = write_config(tmp_path / "m.toml")
    # 12 MiB to fetch + a twentieth kept for the catalog fit in 24 MiB: the check lets it start
    with tmpfs(tmp_path / "disk", "24m") as disk, FakeNGC(cat) as fake:
        fake.add_fault(Fault(r"^/_dl/.*huge", throttle_bps=3_000_000, times=None))
        env = cli_env(disk / "mirror", fake.url)
        proc = subprocess.Popen(
            mirror_cmd("--config", str(cfg), "sync"),
            env=env,
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        filler = disk / "someone-elses-file"
        try:
            name = f"sha256-{huge.versions[0].files[0].sha256_hex}.partial"
            partial = disk / "mirror" / "tmp" / name
            # 2 MiB in: what the partial gives back is room enough to record the failure
            wait_for(lambda: _size(partial) > 2 * MiB, what="the big download")
            # another program takes what is left of the disk
            with open(filler, "wb") as fh:
                try:
                    while True:
                        fh.write(b"\0" * MiB)
                        fh.flush()
                except OSError:
                    pass
            out, err = proc.communicate(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert proc.returncode == 1, out + err
        assert "disk full while writing" in err and "Traceback" not in err
        assert list((disk / "mirror" / "tmp").iterdir()) == []  # the partial gave its space back
        last = _last_run(env)
        assert last["outcome"] == "failed" and "disk full" in str(last["error"])
        assert run_mirror(["verify"], env).returncode == 0

        os.unlink(filler)
        fake.clear_faults()
        again = run_mirror(["--config", str(cfg), "sync"], env)
        assert again.returncode == 0, again.stderr
        digest = huge.versions[0].files[0].sha256_hex
        assert (disk / "mirror" / "blobs" / "sha256" / digest).is_file()
