"""Benchmark: `mirror serve` against nginx serving the same files, side by side.

    .venv/bin/python bench/serve.py [--size 1GiB] [--rounds 5] [--clients 16] [--duration 5]
                                    [--uvicorn KEY=VALUE ...] [--workdir DIR]

Builds a mirror root (tests/serve_root.py: one layer of SIZE behind `bench/big:latest`), then
starts two servers on 127.0.0.1:

  mirror serve   `python -m mirror serve` with MIRROR_HOME at the root (a real process); with
                 --uvicorn (e.g. `--uvicorn http=h11 --uvicorn loop=asyncio`) a process running
                 `mirror.serve.run(root, ..., **options)` instead, to compare server settings
  nginx          Debian's nginx, one process (`master_process off`), sendfile on, serving the
                 same blob file and the same manifest file from the store under the same URLs

First one full GET of the layer from each, printed on its own: mirror serve re-verifies a blob
the first time a process serves it (`[serve] reverify = "first"`: sha256 while streaming), so
that download costs more. Then per round, in alternating order:

1. Large blob: `curl -o /dev/null` of the whole layer (verified by then). Prints median MB/s,
   the server's CPU seconds per GB (from /proc) and the ratio mirror / nginx. Target: >= 0.7.
2. Manifests: `wrk` with CLIENTS connections for DURATION seconds on the tagged manifest
   (`GET /v2/bench/big/manifests/latest`). Prints median req/s and the ratio (no target: the
   app parses, routes and checks every request in Python; nginx only maps a URL to a file).

Needs curl, nginx and wrk (`apt-get install -y nginx wrk`). The machine is shared and noisy:
compare the ratios, not absolute figures across runs.
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from mirror.config import parse_size  # noqa: E402
from tests.serve_root import ServeRoot, build_root, free_port, start_mirror_serve, stop  # noqa: E402

PY = sys.executable
BLOB_TARGET = 0.7
NGINX_CONF = """\
daemon off;
master_process off;
{user}
pid {work}/nginx.pid;
error_log {work}/error.log warn;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  sendfile on;
  tcp_nopush on;
  keepalive_requests 1000000;
  client_body_temp_path {work}/tmp;
  proxy_temp_path {work}/tmp;
  fastcgi_temp_path {work}/tmp;
  uwsgi_temp_path {work}/tmp;
  scgi_temp_path {work}/tmp;
  server {{
    listen 127.0.0.1:{port};
    location = {manifest_url} {{
      alias {manifest_file};
      default_type application/vnd.oci.image.manifest.v1+json;
    }}
    location = {blob_url} {{
      alias {blob_file};
      default_type application/octet-stream;
    }}
  }}
}}
"""


def start_nginx(work: Path, served: ServeRoot) -> tuple[subprocess.Popen[bytes], str]:
    """nginx in one process on a free loopback port serving the root's manifest and layer."""
    work.mkdir(parents=True, exist_ok=True)
    (work / "tmp").mkdir(exist_ok=True)
    port = free_port()
    layer = served.layers[0]
    conf = work / "nginx.conf"
    conf.write_text(
        NGINX_CONF.format(
            # as root nginx would drop to `nobody`, who may not read a 0700 temp dir
            user="user root;" if os.geteuid() == 0 else "",
            work=work,
            port=port,
            manifest_url=served.manifest_path(),
            manifest_file=served.root / "blobs" / "sha256" / served.manifest_digest[7:],
            blob_url=served.blob_path(layer.digest),
            blob_file=layer.path,
        )
    )
    proc = subprocess.Popen(
        ["nginx", "-p", str(work), "-e", str(work / "error.log"), "-c", str(conf)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 10
    while True:
        if proc.poll() is not None:
            raise SystemExit(f"nginx exited with {proc.returncode}: see {work}/error.log")
        try:
            with urllib.request.urlopen(base + served.manifest_path(), timeout=2) as r:
                if r.status == 200:
                    return proc, base
        except OSError:
            pass
        if time.monotonic() > deadline:
            stop(proc)
            raise SystemExit("nginx did not start")
        time.sleep(0.05)


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and all its threads."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def curl_blob(url: str, size: int) -> float:
    """Download `url` to /dev/null; MB/s as curl measured it. Checks status and length."""
    out = subprocess.run(
        [
            "curl",
            "-sS",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code} %{size_download} %{speed_download}",
            url,
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    if out[0] != "200" or int(out[1]) != size:
        raise SystemExit(f"{url}: status {out[0]}, {out[1]} bytes (want 200, {size})")
    return float(out[2]) / 1e6


def wrk(url: str, clients: int, duration: int) -> float:
    """Requests per second from wrk; every response must be 2xx."""
    out = subprocess.run(
        ["wrk", "-t", "2", "-c", str(clients), "-d", f"{duration}s", url],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    if "Non-2xx" in out or "Socket errors" in out:
        raise SystemExit(f"wrk against {url} saw errors:\n{out}")
    match = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if match is None:
        raise SystemExit(f"cannot read wrk output:\n{out}")
    return float(match[1])


def alternate(
    rounds: int, runs: dict[str, Callable[[], float]], pids: dict[str, int]
) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Run each side once per round, order reversed every other round; results and CPU-s."""
    results: dict[str, list[float]] = {k: [] for k in runs}
    cpu: dict[str, list[float]] = {k: [] for k in runs}
    for rnd in range(rounds):
        order = list(runs)
        if rnd % 2:
            order.reverse()
        for name in order:
            before = cpu_seconds(pids[name])
            results[name].append(runs[name]())
            cpu[name].append(cpu_seconds(pids[name]) - before)
    return results, cpu


def uvicorn_flavour() -> str:
    """What uvicorn's default http="auto"/loop="auto" picks in this environment."""
    http = "httptools" if importlib.util.find_spec("httptools") else "h11"
    loop = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
    return f"mirror serve (uvicorn auto: http={http} loop={loop})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="1GiB", help="layer size (default 1GiB)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--clients", type=int, default=16, help="concurrent manifest clients")
    ap.add_argument("--duration", type=int, default=5, help="seconds per wrk run")
    ap.add_argument(
        "--uvicorn",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="run mirror.serve.run(**options) instead of the CLI",
    )
    ap.add_argument("--workdir", type=Path, default=None)
    args = ap.parse_args()
    options = dict(opt.split("=", 1) for opt in args.uvicorn) if args.uvicorn else None
    for tool in ("curl", "nginx", "wrk"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is required (apt-get install -y curl nginx wrk)")
    size = parse_size(args.size)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench-serve-"))
    work.mkdir(parents=True, exist_ok=True)
    root = work / "root"
    shutil.rmtree(root, ignore_errors=True)
    served = build_root(root, [size])
    layer = served.layers[0]

    mirror_proc, mirror_base = start_mirror_serve(root, python=PY, uvicorn_options=options)
    try:
        nginx_proc, nginx_base = start_nginx(work / "nginx", served)
        try:
            pids = {"mirror": mirror_proc.pid, "nginx": nginx_proc.pid}
            bases = {"mirror": mirror_base, "nginx": nginx_base}
            for base in bases.values():
                with urllib.request.urlopen(base + served.manifest_path()) as r:
                    if r.read() != served.manifest:
                        raise SystemExit(f"{base}: wrong manifest bytes")
            blob_url = {k: v + served.blob_path(layer.digest) for k, v in bases.items()}
            first = {k: curl_blob(u, size) for k, u in blob_url.items()}
            blob, blob_cpu = alternate(
                args.rounds,
                {k: functools.partial(curl_blob, u, size) for k, u in blob_url.items()},
                pids,
            )
            manifest_url = {k: v + served.manifest_path() for k, v in bases.items()}
            rounds_m = max(3, args.rounds // 2 + 1)
            rps, _ = alternate(
                rounds_m,
                {
                    k: functools.partial(wrk, u, args.clients, args.duration)
                    for k, u in manifest_url.items()
                },
                pids,
            )
        finally:
            stop(nginx_proc)
    finally:
        stop(mirror_proc)

    mb = {k: statistics.median(v) for k, v in blob.items()}
    cpu_gb = {k: statistics.median(v) / (size / 1e9) for k, v in blob_cpu.items()}
    req = {k: statistics.median(v) for k, v in rps.items()}
    ratio = mb["mirror"] / mb["nginx"]
    flavour = f"run(**{options})" if options else uvicorn_flavour()
    print(f"serve: one {args.size} layer ({size / 1e6:.0f} MB), median of {args.rounds}; {flavour}")
    print(
        f"  first GET (mirror re-verifies while streaming): mirror {first['mirror']:.0f} MB/s,"
        f" nginx {first['nginx']:.0f} MB/s, ratio {first['mirror'] / first['nginx']:.2f}"
    )
    for name, label in (("mirror", "mirror serve"), ("nginx", "nginx sendfile")):
        runs = " ".join(f"{x:.0f}" for x in blob[name])
        print(
            f"  blob GET  {label:<15} {mb[name]:7.0f} MB/s   server {cpu_gb[name]:.2f} CPU-s/GB"
            f"   [{runs}]"
        )
    print(
        f"  ratio mirror / nginx (blob MB/s)      = {ratio:.2f}  "
        f"{'PASS' if ratio >= BLOB_TARGET else 'FAIL'} (target >= {BLOB_TARGET})"
    )
    print(f"  manifests, {args.clients} clients (wrk), median of {rounds_m} x {args.duration} s")
    for name, label in (("mirror", "mirror serve"), ("nginx", "nginx static")):
        runs = " ".join(f"{x:.0f}" for x in rps[name])
        print(f"  manifest  {label:<15} {req[name]:7.0f} req/s   [{runs}]")
    print(
        f"  ratio mirror / nginx (manifest req/s) = {req['mirror'] / req['nginx']:.2f}  (no target)"
    )
    if args.workdir is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
