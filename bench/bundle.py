"""Benchmark: `mirror export` / `mirror import` against cp -r, tar and sha256sum, side by side.

    .venv/bin/python bench/bundle.py [--files 8] [--size 256MiB] [--rounds 3] [--workdir DIR]

Builds a source mirror holding FILES x SIZE (synced from the fake NGC server), then per round,
in alternating order, times on the same data:

  dir export      `mirror export DEST`                    vs  `cp -r blobs DEST`
  dir import      `mirror import DEST` (verifies)         vs  `cp -r` + `sha256sum` of the copy
  tar export      `mirror export --format tar --split 1GiB`  vs  `tar -c | split` + `sha256sum`
  tar import      `mirror import` of the parts             vs  `cat parts | tar -x` + `sha256sum`

and prints medians and ratios mirror / peer (target <= 1.5 each). Compare ratios, not times:
the machine is shared.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "bench"))

from sync_throughput import start_server  # noqa: E402

PY = sys.executable


def mirror(home: Path, *args: str) -> None:
    env = {**os.environ, "MIRROR_HOME": str(home)}
    subprocess.run([PY, "-m", "mirror", *args], cwd=REPO, env=env, check=True,
                   stdout=subprocess.DEVNULL)


def timed(fn: Callable[[], None]) -> float:
    os.sync()
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def sh(cmd: str) -> None:
    subprocess.run(["bash", "-c", cmd], check=True, stdout=subprocess.DEVNULL)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=8)
    ap.add_argument("--size", default="256MiB")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--workdir", type=Path, default=None)
    args = ap.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench-bundle-"))
    work.mkdir(parents=True, exist_ok=True)
    src = work / "src"
    if not (src / "mirror.db").exists():
        cfg = work / "bench.toml"
        cfg.write_text('[[select]]\npattern = "nvidia/bench/*"\nlatest = 1\n')
        server, base = start_server(work, args.files, args.size)
        try:
            env = {**os.environ, "MIRROR_HOME": str(src), "MIRROR_NGC_API_URL": base,
                   "MIRROR_NGC_KINDS": "model"}
            subprocess.run([PY, "-m", "mirror", "--config", str(cfg), "sync", "--quiet"],
                           cwd=REPO, env=env, check=True)
        finally:
            server.terminate()
            server.wait()
    total = sum(p.stat().st_size for p in (src / "blobs" / "sha256").iterdir())
    out = work / "out"
    times: dict[str, list[float]] = {k: [] for k in (
        "dir_export", "cp", "dir_import", "cp_sha", "tar_export", "tar_split_sha",
        "tar_import", "untar_sha")}

    def fresh(*paths: Path) -> None:
        for p in paths:
            shutil.rmtree(p, ignore_errors=True)

    for rnd in range(args.rounds):
        pairs: list[tuple[str, Callable[[], None], Callable[[], None] | None]] = [
            ("dir_export", lambda: mirror(src, "export", str(out / "bdir")),
             lambda: fresh(out / "bdir")),
            ("cp", lambda: sh(f"cp -r {src}/blobs {out}/cpdir"), lambda: fresh(out / "cpdir")),
            ("tar_export", lambda: mirror(src, "export", str(out / "btar"), "--format", "tar",
                                          "--split", "1GiB"), lambda: fresh(out / "btar")),
            ("tar_split_sha", lambda: sh(
                f"mkdir -p {out}/tsplit && cd {src} && tar -cf - blobs | "
                f"split -b 1G - {out}/tsplit/part. && sha256sum {out}/tsplit/part.*"),
             lambda: fresh(out / "tsplit")),
        ]
        if rnd % 2:
            pairs.reverse()
        out.mkdir(parents=True, exist_ok=True)
        for name, fn, cleanup in pairs:
            if cleanup:
                cleanup()
            times[name].append(timed(fn))
        # imports read the bundles written above
        imports: list[tuple[str, Callable[[], None]]] = [
            ("dir_import", lambda: mirror(out / "tdir", "import", str(out / "bdir"))),
            ("cp_sha", lambda: sh(f"cp -r {out}/bdir/blobs {out}/cpsha && "
                                  f"find {out}/cpsha -type f -print0 | xargs -0 sha256sum")),
            ("tar_import", lambda: mirror(out / "ttar", "import", str(out / "btar"))),
            ("untar_sha", lambda: sh(f"mkdir -p {out}/untar && cat {out}/tsplit/part.* | "
                                     f"tar -xf - -C {out}/untar && find {out}/untar -type f "
                                     "-print0 | xargs -0 sha256sum")),
        ]
        if rnd % 2:
            imports.reverse()
        for name, fn in imports:
            fresh(out / "tdir", out / "ttar", out / "cpsha", out / "untar")
            times[name].append(timed(fn))
        fresh(out)
    med = {k: statistics.median(v) for k, v in times.items()}
    mb = total / 1e6
    print(f"bundle: {args.files} x {args.size} = {mb:.0f} MB of blobs, median of {args.rounds}")
    for a, b, label in (("dir_export", "cp", "dir export / cp -r"),
                        ("dir_import", "cp_sha", "dir import / (cp -r + sha256sum)"),
                        ("tar_export", "tar_split_sha", "tar export / (tar | split + sha256sum)"),
                        ("tar_import", "untar_sha", "tar import / (cat | tar -x + sha256sum)")):
        ratio = med[a] / med[b]
        print(f"  {label:<42} {med[a]:6.2f} s vs {med[b]:6.2f} s  ratio {ratio:.2f}"
              f"  {'PASS' if ratio <= 1.5 else 'FAIL'} (target <= 1.5)")
    if args.workdir is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
