"""Small ASGI plumbing shared by the registry API, the NGC API and the web pages."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import parse_qs

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]


def raw_path(scope: Scope) -> str:
    """The undecoded request path (no query string)."""
    raw = scope.get("raw_path")
    path = raw.decode("latin-1") if isinstance(raw, bytes) else str(scope.get("path", "/"))
    return path.split("?", 1)[0]


def headers_of(scope: Scope) -> dict[str, str]:
    """Request headers, names lower-cased (the last of repeated headers wins)."""
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}


def query_of(scope: Scope) -> dict[str, list[str]]:
    return parse_qs(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)


def base_url(scope: Scope) -> str:
    """scheme://host[:port] as the client addressed this server."""
    scheme = "https" if scope.get("scheme") == "https" else "http"
    host = headers_of(scope).get("host", "")
    if not host or any(c in host for c in "/\\@ \t\r\n?#"):
        server = scope.get("server") or ("127.0.0.1", 80)
        h = str(server[0])
        host = f"[{h}]:{server[1]}" if ":" in h else f"{h}:{server[1]}"
    return f"{scheme}://{host}"


def encode_headers(pairs: list[tuple[str, str]]) -> list[tuple[bytes, bytes]]:
    return [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in pairs]


async def respond(
    send: Send,
    method: str,
    status: int,
    body: bytes,
    content_type: str,
    extra: list[tuple[str, str]] | None = None,
) -> None:
    headers = [("Content-Type", content_type), ("Content-Length", str(len(body))), *(extra or [])]
    await send(
        {"type": "http.response.start", "status": status, "headers": encode_headers(headers)}
    )
    await send({"type": "http.response.body", "body": b"" if method == "HEAD" else body})


async def respond_json(
    send: Send, method: str, status: int, doc: Any, extra: list[tuple[str, str]] | None = None
) -> None:
    await respond(send, method, status, json.dumps(doc).encode(), "application/json", extra)
