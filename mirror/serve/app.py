"""The one ASGI app `mirror serve` runs: registry API, NGC API and web pages on one port.

Routing: the NGC paths (`/v2/products`, `/v2/search/...`, `/v2/models|resources|repos|org/...`,
`/token`, `/v3/keys/...`, `/_dl/...`, see ngc_api.is_ngc_path) go to the NGC API; the rest of
`/v2` is the OCI distribution API (manifest and blob paths are always the registry's, whatever
the repository is called); everything else is the web UI. With `[serve] token_file`, every
read needs one of the tokens (see auth.py); `/token` and signed `/_dl` links check their own.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

from mirror.blobstore import BlobStore
from mirror.paths import MirrorPaths
from mirror.serve.asgi import Receive, Scope, Send, headers_of, respond, respond_json
from mirror.serve.auth import ReadAuth
from mirror.serve.blobs import BlobServer
from mirror.serve.ngc_api import NgcApi, is_ngc_path
from mirror.serve.registry_api import RegistryApp
from mirror.serve.web import WebApp

log = logging.getLogger(__name__)


class MirrorApp:
    def __init__(
        self,
        root: Path | str,
        *,
        tokens: list[str] | None = None,
        token_file: Path | None = None,
        reverify: str = "first",
        web: bool = True,
    ) -> None:
        root = Path(root)
        self.auth = ReadAuth(tokens, token_file=token_file)
        self.blobs = BlobServer(BlobStore(MirrorPaths(root)), reverify)
        self.registry = RegistryApp(root, self.blobs)
        self.ngc = NgcApi(root, self.auth, self.blobs)
        self.web: WebApp | None = WebApp(root) if web else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        path = str(scope.get("path", "/"))
        method = str(scope.get("method", "GET")).upper()
        if is_ngc_path(path):
            await self.ngc(scope, receive, send)
            return
        allowed = self.auth.allowed(headers_of(scope))
        if path == "/v2" or path.startswith("/v2/"):
            if not allowed:
                await _challenge_registry(send, method)
                return
            await self.registry(scope, receive, send)
            return
        if not allowed:
            await respond(
                send,
                method,
                401,
                b"<!doctype html><title>401</title><p>This mirror needs a read token.</p>",
                "text/html; charset=utf-8",
                [("WWW-Authenticate", 'Basic realm="mirror", charset="UTF-8"')],
            )
            return
        if self.web is None:
            await respond(send, method, 404, b"not found\n", "text/plain")
            return
        await self.web(scope, receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await self.registry.refresh()  # read index.json before the first pull
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self.web is not None:
                    await asyncio.to_thread(self.web.close)
                await send({"type": "lifespan.shutdown.complete"})
                return


async def _challenge_registry(send: Send, method: str) -> None:
    doc: dict[str, Any] = {
        "errors": [
            {
                "code": "UNAUTHORIZED",
                "message": "a read token is required (use it as the password)",
                "detail": None,
            }
        ]
    }
    await respond_json(
        send,
        method,
        401,
        doc,
        [
            ("WWW-Authenticate", 'Basic realm="mirror"'),
            ("Docker-Distribution-Api-Version", "registry/2.0"),
        ],
    )


def create_app(
    root: Path | str,
    *,
    tokens: list[str] | None = None,
    token_file: Path | None = None,
    reverify: str = "first",
    web: bool = True,
) -> MirrorApp:
    """The whole `mirror serve` app over the mirror root `root`."""
    return MirrorApp(root, tokens=tokens, token_file=token_file, reverify=reverify, web=web)


def run(
    root: Path | str,
    host: str = "127.0.0.1",
    port: int = 5000,
    *,
    tokens: list[str] | None = None,
    token_file: Path | None = None,
    reverify: str = "first",
    tls_cert: str = "",
    tls_key: str = "",
    **uvicorn_options: Any,
) -> None:
    """Serve `root` with uvicorn (loopback by default, https with a cert and key)."""
    import uvicorn

    app = create_app(root, tokens=tokens, token_file=token_file, reverify=reverify)
    if tls_cert:
        uvicorn_options.update(ssl_certfile=tls_cert, ssl_keyfile=tls_key)
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", **uvicorn_options)
    if not tls_cert:  # after Config, which sets up uvicorn's loggers
        logging.getLogger("uvicorn.error").addFilter(NotHttpOnce())
    uvicorn.Server(config).run()


class NotHttpOnce(logging.Filter):
    """uvicorn warns "Invalid HTTP request received." for each TLS handshake that reaches a
    plain-http port, and docker and podman try https first on every pull from an insecure
    registry: say once what it is, then keep quiet."""

    NOISE = "Invalid HTTP request received."

    def __init__(self) -> None:
        super().__init__()
        self.told = False

    def filter(self, record: logging.LogRecord) -> bool:
        if record.getMessage() != self.NOISE:
            return True
        if self.told:
            return False
        self.told = True
        record.msg = (
            "a client sent something that is not HTTP (docker and podman try https first on a "
            "plain-http port: harmless; serve https with --tls-cert/--tls-key to stop it); "
            "further ones are not logged"
        )
        record.args = ()
        return True
