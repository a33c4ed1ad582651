"""A real `mirror sync` of a container image, killed with SIGKILL in the middle of a 64 MiB
layer, then run again: it must continue the partial download with Range, publish the tag and
leave a store that verifies and that skopeo can copy out of."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

from tests.conftest import REPO, mirror_cmd, require_tool, run_mirror
from tests.registry_peer import Layout, Registry
from tests.test_image_support import (
    MiB,
    StreamProxy,
    add_image,
    env_for,
    index_refs,
    partials,
    push,
    registry_config,
    skopeo_out,
    stored,
    tar_layer,
    verify_clean,
    wait_for,
)

BIG = 64 * MiB
RATE = 4 * MiB  # bytes/s through the proxy while throttled: the layer would take 16 s


def _size(p: Path) -> int:
    try:
        return p.stat().st_size
    except FileNotFoundError:  # not started yet, or finished and renamed
        return 0


def test_kill_9_mid_layer_then_rerun_resumes_with_range(tmp_path: Path) -> None:
    require_tool("docker-registry")
    require_tool("skopeo")
    skopeo_home = tmp_path / "skopeo-home"
    layout = Layout(tmp_path / "layout")
    small = tar_layer("etc/small.txt", b"small layer\n" * 100)
    big = tar_layer("opt/big.bin", os.urandom(BIG))
    big_digest = big.digest
    layout.tags["app"] = add_image(layout, [small, big], created="2026-02-01T00:00:00Z")
    layout.write_index()
    home = tmp_path / "mirror"
    with Registry(tmp_path / "reg") as reg, StreamProxy(reg.url, rate=RATE) as proxy:
        push(layout, "app", reg.host, "big/app", "1.0", home=skopeo_home)
        cfg = registry_config(tmp_path / "m.toml", proxy.url, ["big/app"])
        env = env_for(home)
        proc = subprocess.Popen(
            mirror_cmd("--config", str(cfg), "sync"),
            env=env,
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_for(
                lambda: _size(home / "tmp" / f"sha256-{big_digest[7:]}.partial") > MiB,
                timeout=30.0,
                what="a partial layer download",
            )
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert proc.returncode == -signal.SIGKILL

        # the kill left exactly the big layer half-done in tmp/, nothing of it under blobs/
        left = partials(home)
        assert [p.name for p in left] == [f"sha256-{big_digest[7:]}.partial"]
        cut = left[0].stat().st_size
        assert MiB < cut < len(big.data)
        assert left[0].read_bytes() == big.data[:cut]
        assert big_digest not in stored(home)
        assert index_refs(home) == {}  # nothing published yet

        proxy.rate = None
        first_hits = len(proxy.blob_hits(big_digest))
        again = run_mirror(["--config", str(cfg), "sync", "--json"], env)
        assert again.returncode == 0, again.stderr
        assert json.loads(again.stdout)["outcome"] == "ok"

        # the rerun continued the partial: one GET with Range from the cut, answered 206
        resumed = proxy.blob_hits(big_digest)[first_hits:]
        assert [(h.range, h.status) for h in resumed] == [(f"bytes={cut}-", 206)]
        assert resumed[0].sent == len(big.data) - cut
    assert partials(home) == []
    assert (home / "blobs" / "sha256" / big_digest[7:]).read_bytes() == big.data
    verify_clean(env)
    ref = f"127.0.0.1:{proxy.port}/big/app:1.0"
    assert index_refs(home) == {ref: layout.tags["app"]["digest"]}
    out = skopeo_out(home, ref, tmp_path / "out", skopeo_home=skopeo_home)
    assert (out / big_digest[7:]).read_bytes() == big.data
