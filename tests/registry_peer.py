"""Real registry peers for the registry client tests (oci.md §6), all on 127.0.0.1.

- `Registry`: Debian's `docker-registry` 2.8 with no auth, htpasswd, or token auth.
- `TokenServer`: a small token service minting RS256 JWTs with `x5c` that distribution trusts
  through `rootcertbundle` (oci.md §2.5, §6.3); records every token request.
- `build_layout` + `skopeo_copy`: synthetic images (random gzip'd tar layers, a shared base
  layer, configs, a linux/amd64 + linux/arm64 index) as an OCI layout pushed with skopeo.
- `FaultProxy`: sits in front of a registry and misbehaves on request (corrupt or truncate
  a body, 429/5xx, expire tokens, redirect blobs to `SideServer`, schema1, paging tags).

Every server is a context manager and is stopped on exit; tests use them from fixtures.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import gzip
import hashlib
import http.client
import io
import json
import os
import random
import re
import socket
import subprocess
import tarfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any, Self
from urllib.parse import parse_qs, urlencode, urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

NGC_USER, NGC_KEY = "$oauthtoken", "nvapi-FAKE-test-key"
HTP_USER, HTP_PASS = "testuser", "testpass"
SERVICE, ISSUER = "test-registry", "test-issuer"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class _Server:
    """A ThreadingHTTPServer on a free loopback port, run in a thread, stopped on exit."""

    def __init__(self, handler: type[BaseHTTPRequestHandler], host: str = "127.0.0.1") -> None:
        self.httpd = ThreadingHTTPServer((host, 0), handler)
        self.httpd.daemon_threads = True
        self.httpd.owner = self  # type: ignore[attr-defined]
        self.host = host
        self.port = int(self.httpd.server_address[1])
        self.url = f"http://{host}:{self.port}"
        self._thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self._thread.join(timeout=5)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass  # keep pytest output clean

    @property
    def owner(self) -> Any:
        return self.server.owner  # type: ignore[attr-defined]

    def reply(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)


# -- token service ---------------------------------------------------------------------------
def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class TokenSigner:
    """An RSA key and self-signed certificate; the cert is the registry's rootcertbundle."""

    def __init__(self, workdir: Path) -> None:
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test-token-issuer")])
        now = dt.datetime.now(dt.UTC)
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(hours=1))
            .not_valid_after(now + dt.timedelta(days=2))
            .sign(self.key, hashes.SHA256())
        )
        self.cert_path = workdir / "token-cert.pem"
        self.cert_path.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))
        self._x5c = base64.b64encode(self.cert.public_bytes(serialization.Encoding.DER)).decode()

    def mint(self, aud: str, sub: str, access: list[dict[str, Any]], ttl: int) -> str:
        now = int(time.time())
        header = {"typ": "JWT", "alg": "RS256", "x5c": [self._x5c]}
        claims = {
            "iss": ISSUER,
            "sub": sub,
            "aud": aud,
            "iat": now,
            "nbf": now - 5,
            "exp": now + ttl,
            "jti": uuid.uuid4().hex,
            "access": access,
        }
        signing = f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}"
        sig = self.key.sign(signing.encode(), padding.PKCS1v15(), hashes.SHA256())
        return f"{signing}.{_b64url(sig)}"


@dataclass
class TokenRequest:
    user: str | None
    service: str | None
    scopes: list[str]
    account: str | None


class _TokenHandler(_Handler):
    def do_GET(self) -> None:
        srv: TokenServer = self.owner
        query = parse_qs(urlsplit(self.path).query)
        user: str | None = None
        password: str | None = None
        auth = self.headers.get("Authorization", "")
        if auth.startswith("Basic "):
            user, _, password = base64.b64decode(auth[6:]).decode().partition(":")
        service = query["service"][0] if "service" in query else None
        account = query["account"][0] if "account" in query else None
        srv.requests.append(TokenRequest(user, service, query.get("scope", []), account))
        if user is not None and srv.users.get(user) != password:
            self.reply(401, b'{"errors":[{"code":"UNAUTHORIZED"}]}')
            return
        access = []
        for scope in query.get("scope", []):
            kind, _, rest = scope.partition(":")
            name, _, actions = rest.rpartition(":")
            wanted = actions.split(",")
            allowed = wanted if user is not None else [a for a in wanted if a == "pull"]
            if kind == "repository" and not srv.allow_anonymous and user is None:
                allowed = []
            access.append({"type": kind, "name": name, "actions": allowed})
        aud = (query.get("service") or [SERVICE])[0]
        token = srv.signer.mint(aud, user or "anonymous", access, srv.ttl)
        body: dict[str, Any] = {"token": token, "access_token": token, "expires_in": srv.ttl}
        body["issued_at"] = dt.datetime.now(dt.UTC).isoformat()
        # text/plain on purpose: nvcr.io has served token JSON with odd content types
        self.reply(200, json.dumps(body).encode(), {"Content-Type": "text/plain"})


class TokenServer(_Server):
    """Accepts `$oauthtoken`+fake NGC key and testuser; anonymous gets pull only."""

    def __init__(self, signer: TokenSigner, *, ttl: int = 300, allow_anonymous: bool = True):
        super().__init__(_TokenHandler)
        self.signer = signer
        self.ttl = ttl
        self.allow_anonymous = allow_anonymous
        self.users = {NGC_USER: NGC_KEY, HTP_USER: HTP_PASS}
        self.requests: list[TokenRequest] = []
        self.realm = f"{self.url}/token"


# -- docker-registry -------------------------------------------------------------------------
class Registry:
    """`docker-registry serve` on 127.0.0.1 with auth = none | htpasswd | token."""

    def __init__(
        self, workdir: Path, *, auth: str = "none", token_realm: str = "", cert: Path | None = None
    ) -> None:
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.url = f"http://{self.host}"
        config: dict[str, Any] = {
            "version": 0.1,
            "log": {"level": "error", "accesslog": {"disabled": True}},
            "storage": {
                "filesystem": {"rootdirectory": str(workdir / "data")},
                "delete": {"enabled": True},
            },
            "http": {"addr": self.host, "secret": uuid.uuid4().hex},
        }
        if auth == "htpasswd":
            htpasswd = workdir / "htpasswd"
            out = subprocess.run(
                ["htpasswd", "-Bbn", HTP_USER, HTP_PASS], check=True, capture_output=True
            )
            htpasswd.write_bytes(out.stdout)
            config["auth"] = {"htpasswd": {"realm": "basic-realm", "path": str(htpasswd)}}
        elif auth == "token":
            assert cert is not None and token_realm
            config["auth"] = {
                "token": {
                    "realm": token_realm,
                    "service": SERVICE,
                    "issuer": ISSUER,
                    "rootcertbundle": str(cert),
                }
            }
        self.auth = auth
        self.config = workdir / "config.yml"
        self.config.write_text(json.dumps(config))  # JSON is YAML
        self.log = workdir / "registry.log"
        self._proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Self:
        with open(self.log, "wb") as log:
            self._proc = subprocess.Popen(
                ["docker-registry", "serve", str(self.config)],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # no *_proxy env
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"docker-registry exited: {self.log.read_text()[-2000:]}")
            try:
                direct.open(f"{self.url}/v2/", timeout=1).close()
                return self
            except urllib.error.HTTPError:
                return self  # 401: up, and asking for auth
            except OSError:
                time.sleep(0.05)
        self.__exit__(None, None, None)
        raise RuntimeError("docker-registry did not start within 20 s")

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()


# -- synthetic images ------------------------------------------------------------------------
@dataclass
class Layout:
    """An OCI image layout being built in `root`; `tags` maps ref.name -> descriptor."""

    root: Path
    tags: dict[str, dict[str, Any]] = field(default_factory=dict)
    blobs: dict[str, bytes] = field(default_factory=dict)

    def add(self, data: bytes, media_type: str, **extra: Any) -> dict[str, Any]:
        digest = sha256(data)
        self.blobs[digest] = data
        path = self.root / "blobs" / "sha256" / digest[7:]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return {"mediaType": media_type, "digest": digest, "size": len(data), **extra}

    def write_index(self) -> None:
        (self.root / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
        manifests = [
            {**desc, "annotations": {"org.opencontainers.image.ref.name": tag}}
            for tag, desc in self.tags.items()
        ]
        index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests}
        (self.root / "index.json").write_text(json.dumps(index))


def make_layer(rng: random.Random, name: str, size: int) -> tuple[bytes, str]:
    """A gzip'd tar holding one file of random bytes; returns (blob, diff_id)."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo(name)
        info.size, info.mtime, info.mode = size, 1_700_000_000, 0o644
        tar.addfile(info, io.BytesIO(rng.randbytes(size)))
    tar_bytes = raw.getvalue()
    return gzip.compress(tar_bytes, mtime=0), sha256(tar_bytes)


def add_image(
    layout: Layout, arch: str, layers: list[tuple[bytes, str]]
) -> tuple[dict[str, Any], bytes]:
    config = {
        "architecture": arch,
        "os": "linux",
        "created": "2026-01-01T00:00:00Z",
        "config": {"Env": ["PATH=/usr/bin"]},
        "rootfs": {"type": "layers", "diff_ids": [diff for _, diff in layers]},
    }
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": layout.add(json.dumps(config).encode(), OCI_CONFIG),
        "layers": [layout.add(blob, OCI_LAYER) for blob, _ in layers],
    }
    data = json.dumps(manifest, indent=3).encode()  # odd indent: re-serialising would show
    return layout.add(data, OCI_MANIFEST), data


def build_layout(root: Path, seed: int = 7) -> Layout:
    """Tags `single` (amd64 image, 3 layers) and `multi` (index: amd64 + arm64, shared base)."""
    rng = random.Random(seed)
    layout = Layout(root)
    base = make_layer(rng, "base.bin", 200_000)
    amd = make_layer(rng, "amd64.bin", 300_000)
    arm = make_layer(rng, "arm64.bin", 300_000)
    small = make_layer(rng, "small.bin", 5_000)
    amd_desc, _ = add_image(layout, "amd64", [base, amd, small])
    arm_desc, _ = add_image(layout, "arm64", [base, arm])
    index = {
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [
            {**amd_desc, "platform": {"architecture": "amd64", "os": "linux"}},
            {**arm_desc, "platform": {"architecture": "arm64", "os": "linux"}},
        ],
    }
    layout.tags["single"] = amd_desc
    layout.tags["multi"] = layout.add(json.dumps(index).encode(), OCI_INDEX)
    layout.write_index()
    return layout


def skopeo(*args: str, home: Path) -> str:
    env = {"HOME": str(home), "PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    home.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["skopeo", "--insecure-policy", *args], env=env, capture_output=True, timeout=120
    )
    if done.returncode != 0:
        raise RuntimeError(f"skopeo {' '.join(args)} failed: {done.stderr.decode()[-2000:]}")
    return done.stdout.decode()


def skopeo_copy(
    layout: Path,
    tag: str,
    registry: str,
    repo: str,
    dest_tag: str,
    *,
    home: Path,
    creds: str | None = None,
    extra: tuple[str, ...] = (),
) -> None:
    auth = ("--dest-creds", creds) if creds else ()
    skopeo(
        "copy",
        "-q",
        "--dest-tls-verify=false",
        *auth,
        *extra,
        f"oci:{layout}:{tag}",
        f"docker://{registry}/{repo}:{dest_tag}",
        home=home,
    )


def skopeo_raw(registry: str, repo: str, ref: str, *, home: Path, creds: str | None) -> bytes:
    """`skopeo inspect --raw`: the manifest bytes as a trusted client sees them."""
    auth = ("--creds", creds) if creds else ("--no-creds",)
    sep = "@" if ref.startswith("sha256:") else ":"
    image = f"docker://{registry}/{repo}{sep}{ref}"
    out = subprocess.run(
        ["skopeo", "inspect", "--raw", "--tls-verify=false", *auth, image],
        env={"HOME": str(home), "PATH": os.environ.get("PATH", "/usr/bin:/bin")},
        capture_output=True,
        timeout=60,
        check=True,
    )
    return out.stdout


def push_test_images(layout: Path, registry: Registry, home: Path, creds: str | None) -> None:
    """test/multi:1.0 (OCI index), test/single:v1 (OCI), test/docker:v1 (Docker schema2)."""
    host = registry.host
    skopeo_copy(
        layout, "multi", host, "test/multi", "1.0", home=home, creds=creds, extra=("--all",)
    )
    skopeo_copy(layout, "single", host, "test/single", "v1", home=home, creds=creds)
    v2s2 = ("--format", "v2s2")
    skopeo_copy(layout, "single", host, "test/docker", "v1", home=home, creds=creds, extra=v2s2)


# -- fault injection -------------------------------------------------------------------------
@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    host: str = ""


class _SideHandler(_Handler):
    def do_GET(self) -> None:
        side: SideServer = self.owner
        side.seen.append(
            Seen("GET", self.path, {k.lower(): v for k, v in self.headers.items()}, side.url)
        )
        if side.challenge:
            self.reply(401, b"", {"WWW-Authenticate": side.challenge})
            return
        data = side.blobs.get(self.path)
        if data is None:
            self.reply(404)
            return
        status, headers, start = 200, {}, 0
        rng = self.headers.get("Range")
        if rng and (m := re.fullmatch(r"bytes=(\d+)-", rng)):
            start = int(m.group(1))
            status = 206
            headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
        body = data[start:]
        if side.truncate_next > 0:
            side.truncate_next -= 1
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body[: len(body) // 2])
            self.close_connection = True
            return
        self.reply(status, body, headers)


class SideServer(_Server):
    """Stands in for the CDN / object store a registry redirects blob GETs to.

    Records every request (did `Authorization` arrive?); with `challenge` set it plays a
    hostile host that asks the client for credentials.
    """

    def __init__(self, host: str = "127.0.0.1") -> None:
        super().__init__(_SideHandler, host)
        self.blobs: dict[str, bytes] = {}
        self.seen: list[Seen] = []
        self.challenge: str | None = None  # answer 401 with this WWW-Authenticate
        self.truncate_next = 0  # cut this many responses halfway


UNAUTHORIZED = b'{"errors":[{"code":"UNAUTHORIZED"}]}'
_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "host", "te"}


class _ProxyHandler(_Handler):
    def do_HEAD(self) -> None:
        self.do_GET()

    def do_GET(self) -> None:
        proxy: FaultProxy = self.owner
        headers = {k.lower(): v for k, v in self.headers.items()}
        proxy.seen.append(Seen(self.command, self.path, headers))
        kind = proxy.kind(self.path)
        if proxy.token_expired(headers.get("authorization", "")):
            status, hdrs, _ = proxy.forward(self.command, self.path, headers, drop_auth=True)
            challenge = proxy.expiry_challenge(hdrs.get("www-authenticate", ""))
            self.reply(401, UNAUTHORIZED, {"WWW-Authenticate": challenge})
            return
        action = proxy.next_action(kind)  # after the token check: a 401 must not eat a fault
        if action in ("429", "500", "502", "503"):
            extra = {"Retry-After": proxy.retry_after} if action == "429" else {}
            self.reply(int(action), b'{"errors":[{"code":"TOOMANYREQUESTS"}]}', extra)
            return
        tag = self.path.rsplit("/", 1)[-1]
        if kind == "manifest" and tag in proxy.schema1_tags:
            self.reply(200, SCHEMA1_BODY, {"Content-Type": SCHEMA1_TYPE})
            return
        if kind == "tags" and proxy.tags_page_size:
            self._tags_page(proxy, headers)
            return
        redirect = kind == "blob" and self.command == "GET" and proxy.redirect_to is not None
        fwd = {k: v for k, v in headers.items() if not (redirect and k == "range")}
        status, hdrs, body = proxy.forward(self.command, self.path, fwd)
        if "www-authenticate" in hdrs and proxy.strip_service:
            hdrs["www-authenticate"] = re.sub(r',?\s*service="[^"]*"', "", hdrs["www-authenticate"])
        if kind == "manifest" and proxy.digest_header is not None and status == 200:
            hdrs["docker-content-digest"] = proxy.digest_header
        if kind == "manifest" and proxy.content_type is not None and status == 200:
            hdrs["content-type"] = proxy.content_type
        if redirect and status == 200 and proxy.redirect_to is not None:
            key = f"/b/{uuid.uuid4().hex}"
            proxy.redirect_to.blobs[key] = body
            self.reply(307, b"", {"Location": proxy.redirect_to.url + key})
            return
        if action == "corrupt" and body:
            mid = len(body) // 2
            body = body[:mid] + bytes([body[mid] ^ 0xFF]) + body[mid + 1 :]
        out = {k: v for k, v in hdrs.items() if k not in _HOP}
        if action == "truncate" and self.command == "GET" and len(body) > 1:
            self.send_response(status)
            for key, value in out.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body[: len(body) // 3])
            self.wfile.flush()
            self.close_connection = True
            return
        self.reply(status, body, out)

    def _tags_page(self, proxy: FaultProxy, headers: dict[str, str]) -> None:
        path, _, query = self.path.partition("?")
        status, hdrs, body = proxy.forward("GET", path, headers)
        if status != 200:
            self.reply(status, body, {k: v for k, v in hdrs.items() if k not in _HOP})
            return
        doc = json.loads(body)
        tags = sorted(doc.get("tags") or [])
        params = parse_qs(query)
        n = min(int(params.get("n", [proxy.tags_page_size])[0]), proxy.tags_page_size)
        last = params.get("last", [""])[0]
        rest = [t for t in tags if t > last] if last else tags
        page = rest[:n]
        out = {"Content-Type": "application/json"}
        if len(rest) > n and proxy.tags_link:
            base = proxy.tags_link_base or ""
            out["Link"] = f'<{base}{path}?{urlencode({"n": n, "last": page[-1]})}>; rel="next"'
        self.reply(200, json.dumps({"name": doc.get("name"), "tags": page}).encode(), out)


SCHEMA1_TYPE = "application/vnd.docker.distribution.manifest.v1+prettyjws"
SCHEMA1_BODY = json.dumps(
    {
        "schemaVersion": 1,
        "name": "test/old",
        "tag": "legacy",
        "architecture": "amd64",
        "fsLayers": [{"blobSum": "sha256:" + "a" * 64}],
        "history": [{"v1Compatibility": "{}"}],
        "signatures": [{"header": {"alg": "ES256"}, "signature": "x", "protected": "y"}],
    },
    indent=3,
).encode()


class FaultProxy(_Server):
    """A fault-injecting HTTP proxy in front of `upstream` (a Registry URL).

    One-shot faults are queued per request kind (`blob`, `manifest`, `tags`, `base`, `any`):
    `429`, `500`, `502`, `503`, `truncate` (send a third, then close), `corrupt` (flip a byte),
    `pass`. Persistent behaviours are attributes (token expiry, redirects, schema1, paging).
    """

    def __init__(self, upstream: str) -> None:
        super().__init__(_ProxyHandler)
        parts = urlsplit(upstream)
        self.upstream = (parts.hostname or "127.0.0.1", parts.port or 80)
        self.seen: list[Seen] = []
        self.actions: dict[str, deque[str]] = {}
        self.retry_after = "1"
        self.expire_after: int | None = None  # a bearer token dies after N uses
        self.realm_after_expiry: str | None = None  # nvcr.io moves the realm (oci.md §2.3)
        self.strip_service = False  # nvcr.io challenges carry no service
        self.schema1_tags: set[str] = set()
        self.digest_header: str | None = None
        self.content_type: str | None = None
        self.redirect_to: SideServer | None = None
        self.tags_page_size = 0
        self.tags_link = True
        self.tags_link_base: str | None = None
        self._uses: dict[str, int] = {}
        self._dead: set[str] = set()
        self._lock = threading.Lock()

    def plan(self, kind: str, *actions: str) -> None:
        with self._lock:
            self.actions.setdefault(kind, deque()).extend(actions)

    def next_action(self, kind: str) -> str:
        with self._lock:
            for key in (kind, "any"):
                queue = self.actions.get(key)
                if queue:
                    return queue.popleft()
        return "pass"

    @staticmethod
    def kind(path: str) -> str:
        path = path.split("?", 1)[0]
        if "/blobs/" in path:
            return "blob"
        if "/manifests/" in path:
            return "manifest"
        if path.endswith("/tags/list"):
            return "tags"
        return "base"

    def token_expired(self, authorization: str) -> bool:
        if self.expire_after is None or not authorization.startswith("Bearer "):
            return False
        with self._lock:
            if authorization in self._dead:
                return True
            self._uses[authorization] = self._uses.get(authorization, 0) + 1
            if self._uses[authorization] > self.expire_after:
                self._dead.add(authorization)
                return True
        return False

    def expiry_challenge(self, upstream_challenge: str) -> str:
        challenge = upstream_challenge + ',error="invalid_token"'
        if self.realm_after_expiry:
            challenge = re.sub(r'realm="[^"]*"', f'realm="{self.realm_after_expiry}"', challenge)
        return challenge

    def forward(
        self, method: str, path: str, headers: dict[str, str], *, drop_auth: bool = False
    ) -> tuple[int, dict[str, str], bytes]:
        conn = http.client.HTTPConnection(*self.upstream, timeout=30)
        try:
            fwd = {k: v for k, v in headers.items() if k not in _HOP}
            if drop_auth:
                fwd.pop("authorization", None)
            conn.request(method, path, headers=fwd)
            resp = conn.getresponse()
            body = resp.read()
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, body
        finally:
            conn.close()

    def requests_for(self, kind: str) -> list[Seen]:
        return [s for s in self.seen if self.kind(s.path) == kind]


@contextlib.contextmanager
def running(*servers: Any) -> Iterator[None]:
    """Enter servers in order and always exit them all, in reverse."""
    with contextlib.ExitStack() as stack:
        for server in servers:
            stack.enter_context(server)
        yield


def make_client(
    url: str,
    *,
    username: str | None = None,
    password: str | None = None,
    sleeps: list[float] | None = None,
    retries: int = 3,
) -> Any:
    """A RegistryClient with fast backoff; `sleeps` records waits instead of sleeping."""
    from mirror.config import HttpSettings, Secret
    from mirror.http import HttpClient
    from mirror.sources.registry import RegistryClient

    http = HttpClient(
        HttpSettings(retries=retries, backoff=0.01, max_backoff=0.05, timeout=20.0),
        sleep=sleeps.append if sleeps is not None else time.sleep,
    )
    secret = Secret(password) if password is not None else None
    return RegistryClient(url, http, username=username, password=secret)
