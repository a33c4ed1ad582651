"""Benchmark: `mirror sync` against curl + sha256sum on the same files, side by side.

    .venv/bin/python bench/sync_throughput.py [--files 8] [--size 256MiB] [--rounds 3]
                                              [--big 2GiB] [--workdir DIR]

1. Starts the fake NGC server as its own process, serving COUNT files of SIZE from disk
   (sendfile), on 127.0.0.1.
2. Per round, in alternating order: `mirror sync` into a fresh mirror root, and curl fetching
   the same presigned URLs to disk (4 at a time, like mirror's default concurrency, and one at
   a time) followed by `sha256sum` of the files. Prints medians and the ratio
   mirror / (curl + sha256sum). Target: <= 1.0 (one pass that hashes while writing should beat
   download-then-hash).
3. Syncs one BIG file and prints the sync process's peak RSS. Target: <= 150 MiB.

The machine is shared and noisy: compare the ratios, not absolute times across runs.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PY = sys.executable
SHA256SUM = ["sha256sum"]
OPENSSL = ["openssl", "dgst", "-sha256"]


def start_server(workdir: Path, files: int, size: str) -> tuple[subprocess.Popen[bytes], str]:
    ready = workdir / f"url-{files}x{size}"
    ready.unlink(missing_ok=True)
    proc = subprocess.Popen(
        [
            PY,
            "-m",
            "mirror.fakengc",
            "--big-files",
            f"{files}x{size}",
            "--data-dir",
            str(workdir / f"data-{files}x{size}"),
            "--ready-file",
            str(ready),
        ],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 600
    while not ready.exists() or not ready.read_text().strip():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit("fake server did not start")
        time.sleep(0.2)
    return proc, ready.read_text().strip()


def presigned_urls(base: str) -> list[str]:
    with urllib.request.urlopen(f"{base}/v2/models/org/nvidia/team/bench/bigfiles/1/files") as r:
        doc = json.load(r)
    urls: list[str] = doc["urls"]
    return urls


def run_mirror(base: str, home: Path, cfg: Path) -> tuple[float, int]:
    """Wall time and peak RSS (bytes) of one `mirror sync` process."""
    env = {
        **os.environ,
        "MIRROR_HOME": str(home),
        "MIRROR_NGC_API_URL": base,
        "MIRROR_NGC_KINDS": "model",
    }
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [PY, "-m", "mirror", "--config", str(cfg), "sync", "--quiet"], cwd=REPO, env=env
    )
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"mirror sync failed with {os.waitstatus_to_exitcode(status)}")
    return wall, usage.ru_maxrss * 1024


def run_curl(urls: list[str], dest: Path, parallel: int, hasher: list[str]) -> float:
    dest.mkdir(parents=True, exist_ok=True)
    args = ["curl", "-sS", "--no-progress-meter", "--fail"]
    if parallel > 1:
        args += ["--parallel", "--parallel-max", str(parallel)]
    for i, u in enumerate(urls):
        args += ["-o", str(dest / f"f{i}"), u]
    t0 = time.perf_counter()
    subprocess.run(args, check=True)
    subprocess.run(
        ["sha256sum", *sorted(str(p) for p in dest.iterdir())],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return time.perf_counter() - t0


def drop(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=8)
    ap.add_argument("--size", default="256MiB")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--big", default="2GiB")
    ap.add_argument("--workdir", type=Path, default=None)
    args = ap.parse_args()
    for tool in ("curl", "sha256sum", "openssl"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is required")
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench-sync-"))
    work.mkdir(parents=True, exist_ok=True)
    cfg = work / "bench.toml"
    cfg.write_text('[[select]]\npattern = "nvidia/bench/*"\nlatest = 1\n')

    server, base = start_server(work, args.files, args.size)
    try:
        urls = presigned_urls(base)
        total = sum(
            int(
                urllib.request.urlopen(urllib.request.Request(u, method="HEAD")).headers[
                    "Content-Length"
                ]
            )
            for u in urls
        )
        mirror_t: list[float] = []
        curl4_t: list[float] = []
        curl1_t: list[float] = []
        ossl_t: list[float] = []
        for rnd in range(args.rounds):
            order = ["mirror", "curl4", "curl1", "ossl"]
            if rnd % 2:
                order.reverse()
            for what in order:
                home, dest = work / "home", work / "curl"
                drop(home)
                drop(dest)
                os.sync()
                if what == "mirror":
                    mirror_t.append(run_mirror(base, home, cfg)[0])
                elif what == "curl4":
                    curl4_t.append(run_curl(urls, dest, 4, SHA256SUM))
                elif what == "curl1":
                    curl1_t.append(run_curl(urls, dest, 1, SHA256SUM))
                else:
                    ossl_t.append(run_curl(urls, dest, 4, OPENSSL))
            drop(work / "home")
            drop(work / "curl")
    finally:
        server.terminate()
        server.wait()
    m, c4, c1, co = (statistics.median(x) for x in (mirror_t, curl4_t, curl1_t, ossl_t))
    mb = total / 1e6
    print(f"sync_throughput: {args.files} x {args.size} = {mb:.0f} MB, median of {args.rounds}")
    print(f"  mirror sync                      {m:6.2f} s  {mb / m:7.0f} MB/s")
    print(f"  curl -Z (4 at once) + sha256sum  {c4:6.2f} s  {mb / c4:7.0f} MB/s")
    print(f"  curl (one at a time) + sha256sum {c1:6.2f} s  {mb / c1:7.0f} MB/s")
    print(f"  curl -Z + openssl dgst -sha256   {co:6.2f} s  {mb / co:7.0f} MB/s")
    print(f"  ratio mirror / (curl -Z + sha256sum)  = {m / c4:.2f}   (target <= 1.0)")
    print(f"  ratio mirror / (curl + sha256sum)     = {m / c1:.2f}")
    # coreutils sha256sum may lack the SHA extensions OpenSSL uses; this is the harder peer
    print(f"  ratio mirror / (curl -Z + openssl)    = {m / co:.2f}")

    if args.big and args.big != "0":
        server, base = start_server(work, 1, args.big)
        try:
            home = work / "home-big"
            drop(home)
            wall, rss = run_mirror(base, home, cfg)
        finally:
            server.terminate()
            server.wait()
            drop(work / "home-big")
        print(
            f"  peak RSS syncing one {args.big} file: {rss / 2**20:.0f} MiB "
            f"(target <= 150 MiB), {wall:.1f} s"
        )
    if args.workdir is None:
        drop(work)


if __name__ == "__main__":
    main()
