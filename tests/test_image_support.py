"""Helpers shared by the tests/test_image_*.py files (this module holds no tests).

- building OCI layouts with chosen `created` dates, layer sizes and platforms (the layouts of
  tests/registry_peer.py have one fixed date), and pushing them with skopeo;
- what a tag should cost: the unique blobs a tag needs (index, selected children, configs,
  layers), so tests can compare the mirror's byte counts with the truth;
- `StreamProxy`: a recording HTTP proxy that *streams* bodies (optionally throttled) so a
  layer download can take seconds and a `kill -9` lands in the middle of it. FaultProxy in
  registry_peer.py reads whole bodies first, which cannot do that;
- small CLI conveniences: a `[[registry]]` config, index.json refs, `mirror verify`.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import io
import json
import os
import shutil
import subprocess
import tarfile
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from tests.conftest import (
    cli_env,
    run_mirror,
    wait_for,  # noqa: F401  (re-exported for the image tests)
)
from tests.registry_peer import (
    OCI_CONFIG,
    OCI_INDEX,
    OCI_MANIFEST,
    Layout,
    _Server,
    skopeo_copy,
)

MiB = 1 << 20
REF_NAME = "org.opencontainers.image.ref.name"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
NOWHERE = "http://127.0.0.1:9"  # the NGC API is never asked: `[ngc] kinds = []`


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


# -- layouts ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Blob:
    """A gzip'd tar layer and the digest of the tar inside (its diff_id)."""

    data: bytes
    diff_id: str

    @property
    def digest(self) -> str:
        return sha256(self.data)


def tar_layer(name: str, payload: bytes) -> Blob:
    """A gzip'd tar holding one file. Level 0 (stored deflate blocks) is instant even for
    64 MiB, and being gzip already, skopeo pushes it unchanged (it would compress a plain tar
    on its way to a registry, changing every digest)."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo(name)
        info.size, info.mtime, info.mode = len(payload), 1_700_000_000, 0o644
        tar.addfile(info, io.BytesIO(payload))
    plain = raw.getvalue()
    return Blob(gzip.compress(plain, compresslevel=0, mtime=0), sha256(plain))


def add_image(
    layout: Layout, layers: list[Blob], *, created: str, arch: str = "amd64"
) -> dict[str, Any]:
    """An OCI image manifest over these layers with this `created` date."""
    config = {
        "architecture": arch,
        "os": "linux",
        "created": created,
        "config": {"Env": ["PATH=/usr/bin"]},
        "rootfs": {"type": "layers", "diff_ids": [b.diff_id for b in layers]},
    }
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": layout.add(json.dumps(config).encode(), OCI_CONFIG),
        "layers": [layout.add(b.data, OCI_LAYER_GZIP) for b in layers],
    }
    return layout.add(json.dumps(manifest, indent=3).encode(), OCI_MANIFEST)


def add_index(layout: Layout, children: list[tuple[dict[str, Any], str]]) -> dict[str, Any]:
    """An OCI index over (image descriptor, architecture) pairs, all linux."""
    index = {
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [
            {**desc, "platform": {"architecture": arch, "os": "linux"}} for desc, arch in children
        ],
    }
    return layout.add(json.dumps(index).encode(), OCI_INDEX)


def needed_blobs(
    layout: Layout,
    desc: dict[str, Any],
    platforms: Iterable[str] = ("linux/amd64",),
    *,
    manifests: bool = True,
) -> dict[str, int]:
    """digest -> size of every blob a tag needs: the index, selected children, configs, layers.

    With `manifests=False` only what is fetched from `/blobs/` (configs and layers): that is
    what `bytes_fetched` counts, manifests come through `/manifests/`.
    """
    wanted = set(platforms)
    out = {desc["digest"]: desc["size"]}
    doc = json.loads(layout.blobs[desc["digest"]])
    images = []
    if desc["mediaType"] == OCI_INDEX:
        for child in doc["manifests"]:
            plat = child["platform"]
            if f"{plat['os']}/{plat['architecture']}" in wanted:
                out[child["digest"]] = child["size"]
                images.append(json.loads(layout.blobs[child["digest"]]))
    else:
        images.append(doc)
    if not manifests:
        out = {}
    for image in images:
        for blob in [image["config"], *image["layers"]]:
            out[blob["digest"]] = blob["size"]
    return out


def push(
    layout: Layout,
    tag: str,
    host: str,
    repo: str,
    dest_tag: str,
    *,
    home: Path,
    creds: str | None = None,
) -> None:
    """skopeo copy one layout tag to `host/repo:dest_tag` (every platform of an index)."""
    skopeo_copy(layout.root, tag, host, repo, dest_tag, home=home, creds=creds, extra=("--all",))


# -- the mirror CLI --------------------------------------------------------------------------
def registry_config(
    path: Path,
    url: str,
    repositories: list[str],
    **options: Any,
) -> Path:
    """A config with no NGC kinds and one `[[registry]]` table (options as TOML values)."""
    lines = ["[ngc]", "kinds = []", "", "[[registry]]", f"url = {json.dumps(url)}"]
    lines.append(f"repositories = {json.dumps(repositories)}")
    for key, value in options.items():
        lines.append(f"{key} = {json.dumps(value)}")
    path.write_text("\n".join(lines) + "\n")
    return path


def env_for(home: Path, **extra: str) -> dict[str, str]:
    return cli_env(home, NOWHERE, **extra)


def index_refs(home: Path) -> dict[str, str]:
    """ref.name -> digest from the mirror root's index.json."""
    doc = json.loads((home / "index.json").read_text())
    return {m["annotations"][REF_NAME]: m["digest"] for m in doc["manifests"]}


def stored(home: Path) -> set[str]:
    blobs = home / "blobs" / "sha256"
    return {"sha256:" + p.name for p in blobs.iterdir()} if blobs.is_dir() else set()


def partials(home: Path) -> list[Path]:
    tmp = home / "tmp"
    return sorted(tmp.glob("*.partial")) if tmp.is_dir() else []


def verify_clean(env: dict[str, str]) -> dict[str, Any]:
    done = run_mirror(["verify", "--json"], env)
    assert done.returncode == 0, done.stdout + done.stderr
    doc: dict[str, Any] = json.loads(done.stdout)
    assert doc["clean"] and not doc["corrupt"] and not doc["missing"]
    return doc


def skopeo_out(home: Path, ref: str, dest: Path, *, skopeo_home: Path) -> Path:
    """`skopeo copy oci:$MIRROR_HOME:<ref> dir:<dest>`; returns dest."""
    env = {"HOME": str(skopeo_home), "PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    skopeo_home.mkdir(parents=True, exist_ok=True)
    if dest.exists():
        shutil.rmtree(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["skopeo", "--insecure-policy", "copy", "-q", f"oci:{home}:{ref}", f"dir:{dest}"],
        env=env,
        capture_output=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    return dest


# -- a streaming, throttling, recording proxy ------------------------------------------------
@dataclass
class Hit:
    method: str
    path: str
    range: str | None
    status: int = 0
    sent: int = 0  # body bytes written to the client (fewer if it went away)
    headers: dict[str, str] = field(default_factory=dict)


_HOP = {"connection", "keep-alive", "transfer-encoding", "host", "te", "proxy-connection"}


class _StreamHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_HEAD(self) -> None:
        self.do_GET()

    def do_GET(self) -> None:
        proxy: StreamProxy = self.server.owner  # type: ignore[attr-defined]
        headers = {k.lower(): v for k, v in self.headers.items()}
        hit = Hit(self.command, self.path, headers.get("range"), headers=headers)
        with proxy.lock:
            proxy.hits.append(hit)
        conn = http.client.HTTPConnection(*proxy.upstream, timeout=30)
        try:
            conn.request(
                self.command,
                self.path,
                headers={k: v for k, v in headers.items() if k not in _HOP},
            )
            resp = conn.getresponse()
            hit.status = resp.status
            self.send_response(resp.status)
            for key, value in resp.getheaders():
                if key.lower() not in _HOP:
                    self.send_header(key, value)
            self.end_headers()
            if self.command == "HEAD":
                return
            slow = "/blobs/" in self.path and proxy.rate is not None
            started = time.monotonic()
            while chunk := resp.read(64 * 1024):
                self.wfile.write(chunk)
                hit.sent += len(chunk)
                if slow and proxy.rate:
                    ahead = hit.sent / proxy.rate - (time.monotonic() - started)
                    if ahead > 0:
                        time.sleep(ahead)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client went away (that is the point)
        finally:
            conn.close()


class StreamProxy(_Server):
    """Forwards every request to `upstream`, streaming bodies; blob bodies are throttled to
    `rate` bytes/s while `rate` is set. Records each request (`hits`), its Range header, the
    status and how many body bytes reached the client."""

    def __init__(self, upstream: str, *, rate: float | None = None) -> None:
        parts = urlsplit(upstream)
        self.upstream = (parts.hostname or "127.0.0.1", parts.port or 80)
        self.rate = rate
        self.hits: list[Hit] = []
        self.lock = threading.Lock()
        super().__init__(_StreamHandler)

    def blob_hits(self, digest: str) -> list[Hit]:
        with self.lock:
            return [h for h in self.hits if h.path.endswith(f"/blobs/{digest}")]
