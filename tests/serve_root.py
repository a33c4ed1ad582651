"""Build a mirror root for `mirror serve` without a sync: big synthetic layers behind one tag.

Shared by tests/test_serve_load.py and bench/serve.py. The root is what RepoIndex serves: an
OCI layout (`oci-layout`, `blobs/sha256/`) whose `index.json` names one image manifest by
`org.opencontainers.image.ref.name` = `<registry>/<repository>:<tag>`; a blob belongs to the
repository when that manifest lists it as its config or a layer. Blobs go through the project's
BlobStore writer (hashed while written, fsynced, published by rename), like a real sync. An
empty catalog database (schema at head) is created too: `mirror serve` refuses a root without
one, and its web pages read it.

Layer bytes are deterministic and not periodic at any useful scale: each MiB is one random MiB
with its first 16 bytes replaced by (seed, layer, MiB number), so a server that sends a wrong
range or repeats a chunk fails the digest check.
"""

from __future__ import annotations

import json
import os
import random
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from mirror.blobstore import BlobStore
from mirror.fsutil import atomic_write
from mirror.oci_layout import REF_NAME
from mirror.paths import MirrorPaths

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
MiB = 1 << 20
REPO = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Layer:
    digest: str
    size: int
    path: Path  # the file in the store


@dataclass(frozen=True)
class ServeRoot:
    root: Path
    repository: str  # as served: `bench/big`
    tag: str
    manifest_digest: str
    manifest: bytes  # the stored manifest, byte for byte
    layers: tuple[Layer, ...]

    def manifest_path(self) -> str:
        return f"/v2/{self.repository}/manifests/{self.tag}"

    def blob_path(self, digest: str) -> str:
        return f"/v2/{self.repository}/blobs/{digest}"


def layer_chunks(size: int, seed: int, layer: int) -> Iterator[bytes]:
    """The bytes of synthetic layer `layer`, one MiB (or less, at the end) at a time."""
    base = random.Random(seed).randbytes(MiB)
    done = 0
    n = 0
    while done < size:
        head = seed.to_bytes(4, "big") + layer.to_bytes(4, "big") + n.to_bytes(8, "big")
        chunk = (head + base[len(head) :])[: size - done]
        yield chunk
        done += len(chunk)
        n += 1


def build_root(
    root: Path,
    sizes: Sequence[int],
    *,
    repository: str = "bench/big",
    tag: str = "latest",
    registry: str = "nvcr.io",
    seed: int = 1,
) -> ServeRoot:
    """Write layers of `sizes` bytes, a config and a manifest into `root`; tag it in index.json."""
    from mirror.db import open_catalog_db

    paths = MirrorPaths(root)
    store = BlobStore(paths)
    store.init_layout()
    open_catalog_db(paths.db).dispose()
    layers: list[Layer] = []
    for i, size in enumerate(sizes):
        with store.writer(None, size, resume=False) as writer:
            for chunk in layer_chunks(size, seed, i):
                writer.write(chunk)
            digest = writer.commit()
        layers.append(Layer(digest, size, paths.blob(digest)))
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": [layer.digest for layer in layers]},
        },
        sort_keys=True,
    ).encode()
    config_digest = store.put_bytes(config)
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": len(config)},
            "layers": [
                {"mediaType": OCI_LAYER, "digest": layer.digest, "size": layer.size}
                for layer in layers
            ],
        },
        indent=2,
        sort_keys=True,
    ).encode()
    manifest_digest = store.put_bytes(manifest)
    index = {
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [
            {
                "mediaType": OCI_MANIFEST,
                "digest": manifest_digest,
                "size": len(manifest),
                "annotations": {REF_NAME: f"{registry}/{repository}:{tag}"},
            }
        ],
    }
    atomic_write(paths.index_json, json.dumps(index, indent=2).encode())
    return ServeRoot(root, repository, tag, manifest_digest, manifest, tuple(layers))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def start_mirror_serve(
    root: Path,
    *,
    python: str = sys.executable,
    uvicorn_options: dict[str, str] | None = None,
    timeout: float = 30.0,
) -> tuple[subprocess.Popen[bytes], str]:
    """`mirror serve` over `root` as a real process on a free loopback port; (process, base URL).

    With `uvicorn_options` (e.g. {"http": "h11", "loop": "asyncio"}) the process runs
    `mirror.serve.run(root, ..., **uvicorn_options)` instead of the CLI, to compare settings.
    Returns once `GET /v2/` answers 200; the caller stops the process (`stop`).
    """
    port = free_port()
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("MIRROR_", "NGC_")) and not k.lower().endswith("_proxy")
    }
    env["MIRROR_HOME"] = str(root)
    if uvicorn_options is None:
        argv = [python, "-m", "mirror", "serve", "--host", "127.0.0.1", "--port", str(port)]
    else:
        code = (
            "import sys; from mirror.serve import run; "
            f"run(sys.argv[1], host='127.0.0.1', port={port}, **{uvicorn_options!r})"
        )
        argv = [python, "-c", code, str(root)]
    proc = subprocess.Popen(
        argv,
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"mirror serve exited with {proc.returncode}")
        try:
            direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # no proxy
            with direct.open(f"{base}/v2/", timeout=2) as resp:
                if resp.status == 200:
                    return proc, base
        except (urllib.error.URLError, OSError):
            pass
        if time.monotonic() > deadline:
            proc.kill()
            proc.wait()
            raise RuntimeError("mirror serve did not answer in time")
        time.sleep(0.05)


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
