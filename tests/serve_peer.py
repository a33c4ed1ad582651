"""`mirror serve` in a background thread (uvicorn on a free loopback port) for tests."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from tests.registry_peer import free_port
from tests.tls_certs import TlsFiles


class ServeThread:
    """uvicorn serving `mirror.serve.create_app(root, **options)`; `with ServeThread(...) as s`."""

    def __init__(self, root: Path, *, tls: TlsFiles | None = None, **options: Any) -> None:
        import uvicorn

        from mirror.serve import create_app

        self.port = free_port()
        self.app = create_app(root, **options)
        extra: dict[str, Any] = {}
        if tls is not None:
            extra = {"ssl_certfile": str(tls.cert), "ssl_keyfile": str(tls.key)}
        config = uvicorn.Config(
            self.app,
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
            lifespan="on",
            **extra,
        )
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}"
        self.host = f"127.0.0.1:{self.port}"
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> ServeThread:
        self.thread.start()
        deadline = time.monotonic() + 15
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
