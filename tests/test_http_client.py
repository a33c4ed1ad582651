"""HttpClient behaviour at the transport seam (httpx.MockTransport, no sockets)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import httpcore
import httpx
import pytest

from mirror.blobstore import BlobStore
from mirror.config import HttpSettings
from mirror.errors import HTTPStatusError, ProtocolError, UpstreamError
from mirror.http import SOCKET_READ_BYTES, HttpClient, parse_retry_after
from mirror.paths import MirrorPaths


def client(handler, sleeps: list[float], retries: int = 3) -> HttpClient:  # type: ignore[no-untyped-def]
    return HttpClient(
        HttpSettings(retries=retries, backoff=0.01, max_backoff=5.0),
        transport=httpx.MockTransport(handler),
        sleep=sleeps.append,
    )


def test_httpcore_read_size_pin_still_applies() -> None:
    # mirror/http.py raises httpcore's private socket read size; if httpcore renames it the
    # throughput regresses silently, so fail loudly here instead.
    assert httpcore._sync.http11.HTTP11Connection.READ_NUM_BYTES == SOCKET_READ_BYTES


def test_429_with_retry_after_is_honoured_then_succeeds() -> None:
    calls = []

    def handler(req: httpx.Request) -> httpx.Response:
        calls.append(req)
        if len(calls) == 1:
            return httpx.Response(429, headers={"Retry-After": "2"})
        return httpx.Response(200, json={"ok": True})

    sleeps: list[float] = []
    assert client(handler, sleeps).get_json("http://127.0.0.1/x") == {"ok": True}
    assert sleeps == [2.0] and len(calls) == 2


def test_500_storm_beyond_budget_names_url_without_query() -> None:
    def handler(req: httpx.Request) -> httpx.Response:
        return httpx.Response(500, json={"requestStatus": {"statusDescription": "boom"}})

    sleeps: list[float] = []
    with pytest.raises(HTTPStatusError) as info:
        client(handler, sleeps, retries=2).get_json("http://127.0.0.1/v2/x?sig=SECRET")
    msg = str(info.value)
    assert "HTTP 500" in msg and "http://127.0.0.1/v2/x" in msg and "SECRET" not in msg
    assert "3 attempts" in msg and len(sleeps) == 2
    assert info.value.exit_code == 3


def test_404_is_not_retried() -> None:
    sleeps: list[float] = []
    with pytest.raises(HTTPStatusError):
        client(lambda r: httpx.Response(404), sleeps).get_json("http://127.0.0.1/x")
    assert sleeps == []


def test_malformed_json_is_a_clear_protocol_error() -> None:
    def handler(req: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=b'{"model": ')

    with pytest.raises(ProtocolError, match="malformed JSON.*127.0.0.1/m"):
        client(handler, []).get_json("http://127.0.0.1/m")


def test_connection_errors_retry_then_give_up() -> None:
    def handler(req: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused")

    sleeps: list[float] = []
    with pytest.raises(UpstreamError, match="cannot reach upstream"):
        client(handler, sleeps, retries=2).get_json("http://127.0.0.1/x")
    assert len(sleeps) == 2


def test_401_triggers_one_reauth() -> None:
    tokens = ["old"]

    def handler(req: httpx.Request) -> httpx.Response:
        if req.headers.get("authorization") == "Bearer new":
            return httpx.Response(200, json={})
        return httpx.Response(401)

    def refresh() -> bool:
        tokens[0] = "new"
        return True

    c = client(handler, [])
    assert (
        c.get_json(
            "http://127.0.0.1/x",
            headers=lambda: {"Authorization": f"Bearer {tokens[0]}"},
            on_unauthorized=refresh,
        )
        == {}
    )


def test_retry_after_http_date() -> None:
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412480 - 10) == 10.0
    assert parse_retry_after("soon") is None


def test_download_resumes_with_range_after_a_broken_body(tmp_path: Path) -> None:
    data = bytes(range(256)) * 4000
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    ranges = []

    def handler(req: httpx.Request) -> httpx.Response:
        rng = req.headers.get("range")
        ranges.append(rng)
        if rng is None:

            def broken():  # type: ignore[no-untyped-def]
                yield data[:300_000]
                raise httpx.ReadError("connection reset")

            return httpx.Response(200, headers={"Content-Length": str(len(data))}, content=broken())
        start = int(rng.split("=")[1].rstrip("-"))
        return httpx.Response(
            206,
            headers={"Content-Range": f"bytes {start}-{len(data) - 1}/{len(data)}"},
            content=iter([data[start:]]),
        )

    store = BlobStore(MirrorPaths(tmp_path))
    store.init_layout()
    with store.writer(digest, len(data)) as w:
        client(handler, []).download("http://127.0.0.1/f", w)
        assert w.commit() == digest
    assert ranges == [None, "bytes=300000-"]


def test_download_restarts_when_server_ignores_range(tmp_path: Path) -> None:
    data = b"abcdefgh" * 1000
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    store = BlobStore(MirrorPaths(tmp_path))
    store.init_layout()
    store.paths.partial(digest).write_bytes(data[:100])

    def handler(req: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=iter([data]))

    with store.writer(digest, len(data)) as w:
        assert w.offset == 100
        client(handler, []).download("http://127.0.0.1/f", w)
        assert w.commit() == digest
