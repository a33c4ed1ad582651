"""Benchmark: `mirror sync` of container images against `skopeo sync`, side by side.

    .venv/bin/python bench/images_vs_skopeo.py [--repos 20] [--tags 3] [--layer-mib 17]
                                               [--rounds 2] [--small] [--workdir DIR] [--keep]

1. Builds an OCI layout in Python: REPOS repositories x TAGS tags, each image 3-5 layers of
   random bytes: one of 4 base layers (6 units, shared across repositories), a framework
   layer per repository (3 units, shared by its tags) and 1-3 small layers of its own (0.5-1
   unit); a unit is LAYER_MIB MiB. The defaults give ~2.9 GiB unique and ~3.6x that counted
   per image, like the skopeo baseline in reference/performance.md (2.92 GiB unique).
   Layers are gzip level 0 (stored blocks): instant to build, and skopeo pushes them as-is.
2. Starts Debian's docker-registry on 127.0.0.1 and pushes every tag once with skopeo.
3. Per round, alternating which goes first, each into a fresh directory:
   - `mirror sync --json` with `[ngc] kinds = []` and one `[[registry]]` listing every repo;
   - `skopeo sync --src yaml --dest dir` with a yaml listing every repo and tag.
4. Prints wall times and their ratio mirror/skopeo (target <= 0.25), bytes moved (mirror: the
   `bytes_fetched` of its JSON report, i.e. blob GETs; skopeo: du of its output, which it
   writes as it downloads), bytes on disk (du -sb of the mirror's blobs/ vs skopeo's dir) and
   the unique bytes (target for the mirror: moved = on disk = unique). Each round also times
   curl fetching every unique config and layer once (the floor for a deduplicating sync).

The machine is shared and noisy: compare ratios measured in the same run, not absolute times.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
PY = sys.executable
MiB = 1 << 20
GiB = 1 << 30
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
N_BASES = 4


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


# -- the fixture -----------------------------------------------------------------------------
@dataclass
class Fixture:
    root: Path
    images: list[tuple[str, str, str]] = field(default_factory=list)  # (layout ref, repo, tag)
    sizes: dict[str, int] = field(default_factory=dict)  # every unique blob
    manifests: set[str] = field(default_factory=set)
    per_image: int = 0  # bytes counting each image's blobs separately
    index: list[dict[str, Any]] = field(default_factory=list)

    def add(self, data: bytes, media_type: str) -> dict[str, Any]:
        digest = sha256(data)
        if digest not in self.sizes:
            path = self.root / "blobs" / "sha256" / digest[7:]
            path.write_bytes(data)
            self.sizes[digest] = len(data)
        return {"mediaType": media_type, "digest": digest, "size": len(data)}

    @property
    def unique(self) -> int:
        return sum(self.sizes.values())

    @property
    def unique_blobs(self) -> int:
        """Configs and layers: what is fetched from /blobs/ (manifests come separately)."""
        return sum(n for d, n in self.sizes.items() if d not in self.manifests)


def layer(name: str, size: int) -> tuple[bytes, str]:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo(name)
        info.size, info.mtime, info.mode = size, 1_700_000_000, 0o644
        tar.addfile(info, io.BytesIO(os.urandom(size)))
    plain = raw.getvalue()
    return gzip.compress(plain, compresslevel=0, mtime=0), sha256(plain)


def build_fixture(root: Path, repos: int, tags: int, unit: int) -> Fixture:
    (root / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
    fx = Fixture(root)
    bases = [layer(f"base{b}.bin", 6 * unit) for b in range(min(N_BASES, repos))]
    for r in range(repos):
        framework = layer(f"framework{r}.bin", 3 * unit)
        for t in range(tags):
            own = [
                layer(f"r{r}t{t}l{n}.bin", unit // 2 + unit // 4 * ((3 * r + t + n) % 3))
                for n in range(1 + (r + t) % 3)
            ]
            layers = [bases[r % len(bases)], framework, *own]
            config = {
                "architecture": "amd64",
                "os": "linux",
                "created": f"2026-01-{1 + t:02d}T00:00:00Z",
                "config": {"Env": ["PATH=/usr/bin"]},
                "rootfs": {"type": "layers", "diff_ids": [diff for _, diff in layers]},
            }
            manifest = {
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": fx.add(json.dumps(config).encode(), OCI_CONFIG),
                "layers": [fx.add(blob, OCI_LAYER) for blob, _ in layers],
            }
            data = json.dumps(manifest).encode()
            desc = fx.add(data, OCI_MANIFEST)
            fx.manifests.add(desc["digest"])
            fx.per_image += len(data) + sum(d["size"] for d in [manifest["config"]])
            fx.per_image += sum(d["size"] for d in manifest["layers"])
            ref = f"r{r:02d}-t{t}"
            fx.index.append({**desc, "annotations": {"org.opencontainers.image.ref.name": ref}})
            fx.images.append((ref, f"bench/r{r:02d}", f"t{t}"))
    (root / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": fx.index}
    (root / "index.json").write_text(json.dumps(index))
    return fx


# -- peers -----------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_registry(work: Path) -> tuple[subprocess.Popen[bytes], str]:
    host = f"127.0.0.1:{free_port()}"
    config = {
        "version": 0.1,
        "log": {"level": "error", "accesslog": {"disabled": True}},
        "storage": {"filesystem": {"rootdirectory": str(work / "registry-data")}},
        "http": {"addr": host, "secret": os.urandom(16).hex()},
    }
    (work / "registry.yml").write_text(json.dumps(config))  # JSON is YAML
    log = open(work / "registry.log", "wb")  # noqa: SIM115 - lives as long as the process
    proc = subprocess.Popen(
        ["docker-registry", "serve", str(work / "registry.yml")], stdout=log, stderr=log
    )
    direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"docker-registry exited: {(work / 'registry.log').read_text()}")
        try:
            direct.open(f"http://{host}/v2/", timeout=1).close()
            return proc, host
        except (OSError, urllib.error.URLError):
            time.sleep(0.05)
    proc.terminate()
    raise SystemExit("docker-registry did not start")


def skopeo_env(work: Path) -> dict[str, str]:
    home = work / "skopeo-home"
    home.mkdir(exist_ok=True)
    return {"HOME": str(home), "PATH": os.environ.get("PATH", "/usr/bin:/bin")}


def push_all(fx: Fixture, host: str, work: Path) -> float:
    env = skopeo_env(work)

    def push_repo(items: list[tuple[str, str, str]]) -> None:
        for ref, repo, tag in items:  # tags of one repo in order: shared blobs go once
            subprocess.run(
                [
                    "skopeo",
                    "--insecure-policy",
                    "copy",
                    "-q",
                    "--dest-tls-verify=false",
                    f"oci:{fx.root}:{ref}",
                    f"docker://{host}/{repo}:{tag}",
                ],
                env=env,
                check=True,
            )

    by_repo: dict[str, list[tuple[str, str, str]]] = {}
    for item in fx.images:
        by_repo.setdefault(item[1], []).append(item)
    t0 = time.perf_counter()
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(push_repo, by_repo.values()))
    return time.perf_counter() - t0


# -- the two contenders ----------------------------------------------------------------------
def du(path: Path) -> int:
    """Apparent bytes under path (du -sb)."""
    out = subprocess.run(["du", "-sb", str(path)], capture_output=True, text=True, check=True)
    return int(out.stdout.split()[0])


def run_mirror(fx: Fixture, host: str, work: Path) -> tuple[float, int, int]:
    """(wall seconds, bytes_fetched, bytes on disk under blobs/)."""
    home = work / "mirror-home"
    shutil.rmtree(home, ignore_errors=True)
    repos = sorted({repo for _, repo, _ in fx.images})
    cfg = work / "mirror.toml"
    cfg.write_text(
        "[ngc]\nkinds = []\n\n[[registry]]\n"
        f'url = "http://{host}"\nrepositories = {json.dumps(repos)}\n'
    )
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("MIRROR_", "NGC_")) and not k.lower().endswith("_proxy")
    }
    env["MIRROR_HOME"] = str(home)
    os.sync()
    t0 = time.perf_counter()
    done = subprocess.run(
        [PY, "-m", "mirror", "--config", str(cfg), "sync", "--json"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"mirror sync failed ({done.returncode}): {done.stderr[-2000:]}")
    report = json.loads(done.stdout)
    if report["images_tags"] != len(fx.images) or report["failures"]:
        raise SystemExit(f"mirror sync did not mirror every tag: {report}")
    on_disk = du(home / "blobs")
    shutil.rmtree(home, ignore_errors=True)
    return wall, int(report["bytes_fetched"]), on_disk


def run_skopeo(fx: Fixture, host: str, work: Path) -> tuple[float, int]:
    """(wall seconds, bytes written = bytes moved)."""
    dest = work / "skopeo-out"
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir()
    images: dict[str, list[str]] = {}
    for _, repo, tag in fx.images:
        images.setdefault(repo, []).append(tag)
    lines = [f"{host}:", "  tls-verify: false", "  images:"]
    lines += [f"    {repo}: {json.dumps(tags)}" for repo, tags in sorted(images.items())]
    yaml = work / "skopeo-sync.yaml"
    yaml.write_text("\n".join(lines) + "\n")
    os.sync()
    t0 = time.perf_counter()
    done = subprocess.run(
        ["skopeo", "--insecure-policy", "sync", "--src", "yaml", "--dest", "dir", str(yaml)]
        + [str(dest)],
        env=skopeo_env(work),
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"skopeo sync failed: {done.stderr[-2000:]}")
    copied = sum(1 for p in dest.rglob("manifest.json"))
    if copied != len(fx.images):
        raise SystemExit(f"skopeo sync wrote {copied} images, expected {len(fx.images)}")
    size = du(dest)
    shutil.rmtree(dest, ignore_errors=True)
    return wall, size


def run_curl(fx: Fixture, host: str, work: Path) -> float:
    """The floor for a deduplicating sync: curl fetching each unique config and layer once,
    one at a time, to disk (reference/performance.md)."""
    dest = work / "curl-out"
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir()
    where = {}
    for ref, repo, _ in fx.images:
        desc = next(
            m for m in fx.index if m["annotations"]["org.opencontainers.image.ref.name"] == ref
        )
        manifest = json.loads((fx.root / "blobs" / "sha256" / desc["digest"][7:]).read_bytes())
        for blob in [manifest["config"], *manifest["layers"]]:
            where.setdefault(blob["digest"], repo)
    lines = [
        f'url = "http://{host}/v2/{repo}/blobs/{digest}"\noutput = "{dest / digest[7:]}"'
        for digest, repo in where.items()
    ]
    (work / "curl.cfg").write_text("\n".join(lines) + "\n")
    os.sync()
    t0 = time.perf_counter()
    subprocess.run(["curl", "-sS", "--fail", "-K", str(work / "curl.cfg")], check=True)
    wall = time.perf_counter() - t0
    shutil.rmtree(dest, ignore_errors=True)
    return wall


def gib(n: float) -> str:
    return f"{n / GiB:.3f} GiB"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repos", type=int, default=20)
    ap.add_argument("--tags", type=int, default=3)
    ap.add_argument("--layer-mib", type=float, default=17.0, help="one layer unit, in MiB")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--small", action="store_true", help="quick run: 4 repos x 2 tags, 1 MiB")
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--keep", action="store_true", help="keep the workdir")
    args = ap.parse_args()
    if args.small:
        args.repos, args.tags, args.layer_mib = 4, 2, 1.0
    for tool in ("docker-registry", "skopeo", "du"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is required")
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench-images-"))
    work.mkdir(parents=True, exist_ok=True)
    unit = int(args.layer_mib * MiB)

    t0 = time.perf_counter()
    fx = build_fixture(work / "layout", args.repos, args.tags, unit)
    built = time.perf_counter() - t0
    registry, host = start_registry(work)
    try:
        pushed = push_all(fx, host, work)
        mirror_t: list[float] = []
        skopeo_t: list[float] = []
        fetched: list[int] = []
        mirror_disk: list[int] = []
        skopeo_disk: list[int] = []
        print(
            f"images_vs_skopeo: {args.repos} repos x {args.tags} tags = {len(fx.images)} images,"
            f" unit {args.layer_mib:g} MiB; built in {built:.1f} s, pushed in {pushed:.1f} s"
        )
        print(
            f"  unique bytes {gib(fx.unique)} ({fx.unique} B, {len(fx.sizes)} blobs);"
            f" configs+layers {fx.unique_blobs} B;"
            f" per image {gib(fx.per_image)} ({fx.per_image / fx.unique:.2f}x unique)"
        )
        curl_t: list[float] = []
        for rnd in range(args.rounds):
            order = ["mirror", "skopeo"] if rnd % 2 == 0 else ["skopeo", "mirror"]
            if shutil.which("curl"):
                curl_t.append(run_curl(fx, host, work))
            times = {}
            for who in order:
                if who == "mirror":
                    wall, moved, disk = run_mirror(fx, host, work)
                    mirror_t.append(wall)
                    fetched.append(moved)
                    mirror_disk.append(disk)
                else:
                    wall, disk = run_skopeo(fx, host, work)
                    skopeo_t.append(wall)
                    skopeo_disk.append(disk)
                times[who] = wall
            print(
                f"  round {rnd + 1} ({order[0]} first): mirror {times['mirror']:.2f} s,"
                f" skopeo {times['skopeo']:.2f} s, ratio {times['mirror'] / times['skopeo']:.3f}"
            )
    finally:
        registry.terminate()
        registry.wait()
    m, s = statistics.median(mirror_t), statistics.median(skopeo_t)
    moved, mdisk, sdisk = fetched[-1], mirror_disk[-1], skopeo_disk[-1]
    print(f"  median of {args.rounds} round(s):")
    print(
        f"  wall         mirror {m:7.2f} s   skopeo {s:7.2f} s   ratio mirror/skopeo"
        f" {m / s:.3f}   (target <= 0.25)"
    )
    print(
        f"  bytes moved  mirror {gib(moved)} ({moved / fx.unique_blobs:.3f}x unique configs+"
        f"layers)   skopeo {gib(sdisk)} ({sdisk / fx.unique:.2f}x unique)"
        f"   ratio {moved / sdisk:.3f}"
    )
    print(
        f"  on disk      mirror {gib(mdisk)} ({mdisk / fx.unique:.3f}x unique)   skopeo"
        f" {gib(sdisk)} ({sdisk / fx.unique:.2f}x unique)   ratio {mdisk / sdisk:.3f}"
    )
    print(
        f"  throughput   mirror {fx.unique / m / 1e6:.0f} MB/s of unique bytes;"
        f" skopeo {sdisk / s / 1e6:.0f} MB/s written"
    )
    if curl_t:
        c = statistics.median(curl_t)
        print(
            f"  floor        curl, unique configs+layers one at a time {c:.2f} s;"
            f" mirror/curl {m / c:.2f}"
        )
    if len(set(fetched)) > 1 or len(set(mirror_disk)) > 1:
        print(f"  (per round: mirror moved {fetched}, on disk {mirror_disk})")
    if not args.keep and args.workdir is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
