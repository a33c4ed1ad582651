"""`mirror serve` in a background thread (uvicorn on a free loopback port) for tests."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from mirror.fakengc import FakeEntry, FakeVersion
from tests.registry_peer import Layout
from tests.tls_certs import TlsFiles


class ServeThread:
    """uvicorn serving `mirror.serve.create_app(root, **options)`; `with ServeThread(...) as s`."""

    def __init__(self, root: Path, *, tls: TlsFiles | None = None, **options: Any) -> None:
        import socket

        import uvicorn

        from mirror.serve import create_app

        # bound here, handed to uvicorn: no window for another process to take the port
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.port = int(self.sock.getsockname()[1])
        self.app = create_app(root, **options)
        extra: dict[str, Any] = {}
        if tls is not None:
            extra = {"ssl_certfile": str(tls.cert), "ssl_keyfile": str(tls.key)}
        config = uvicorn.Config(
            self.app,
            log_level="warning",
            lifespan="on",
            timeout_keep_alive=60,  # past any client's idle keep-alive: no reuse-while-closing race
            **extra,
        )
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}"
        self.host = f"127.0.0.1:{self.port}"
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True
        )

    def __enter__(self) -> ServeThread:
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.sock.close()


def ngc_image_entry(name: str = "single") -> FakeEntry:
    """An NGC container repository nvidia/<name> with tags v2 (newest) and v1, for a fake NGC
    whose registry_url is a docker-registry holding those tags."""
    day = {"v1": "2026-01-01T00:00:00.000Z", "v2": "2026-02-01T00:00:00.000Z"}
    return FakeEntry(
        kind="image",
        org="nvidia",
        team=None,
        name=name,
        description="A test container from NGC.",
        updated=day["v2"],
        versions=[FakeVersion(t, created=day[t], updated=day[t]) for t in ("v2", "v1")],
    )


def raw_request(
    host: str, method: str, path: str, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    """http.client to host:port: the path goes out exactly as written (no normalisation, no
    proxy) -> (status, lower-cased headers, body)."""
    import http.client

    name, port = host.rsplit(":", 1)
    conn = http.client.HTTPConnection(name, int(port), timeout=10)
    try:
        conn.request(method, path, headers=headers or {})
        resp = conn.getresponse()
        body = resp.read()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, body
    finally:
        conn.close()


def synced_test_images(work: Path) -> tuple[Path, Layout]:
    """A mirror root made by a real `mirror sync` from docker-registry holding the test images
    of `build_layout` (test/multi:1.0 index taken for linux/amd64 only, test/single:v1 OCI,
    test/docker:v1 Docker schema2) -> (mirror root, the layout pushed; skopeo HOME work/home)."""
    from tests.conftest import cli_env, require_tool, run_mirror
    from tests.registry_peer import Registry, build_layout, push_test_images

    require_tool("docker-registry")
    require_tool("skopeo")
    layout = build_layout(work / "layout")
    root = work / "root"
    with Registry(work / "reg") as reg:
        push_test_images(layout.root, reg, work / "home", None)
        cfg = work / "images.toml"
        cfg.write_text(
            f'[ngc]\nkinds = []\n\n[[registry]]\nurl = "{reg.url}"\n'
            'repositories = ["test/multi", "test/single", "test/docker"]\n'
            'tags = ["*"]\nplatforms = ["linux/amd64"]\n'
        )
        done = run_mirror(
            ["--config", str(cfg), "sync", "--json"], cli_env(root, "http://127.0.0.1:9")
        )
        assert done.returncode == 0, done.stderr
    return root, layout
