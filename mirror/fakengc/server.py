"""The fake NGC HTTP server: lifecycle, request log and fault injection.

Request routing lives in :mod:`.handler`; this module owns the state a test inspects or
changes: the catalog, the recorded requests, the armed faults and the issued tokens.
"""

from __future__ import annotations

import contextlib
import hmac
import ipaddress
import re
import secrets
import socket
import socketserver
import ssl
import threading
from dataclasses import dataclass
from http.server import ThreadingHTTPServer
from types import TracebackType
from typing import Any, NamedTuple

from .catalog import FakeCatalog
from .handler import Handler


@dataclass
class Fault:
    """A misbehaviour injected into matching requests.

    Attributes:
        path_regex: ``re.search``-ed against the raw request path, plus ``"?" + query`` when
            the request has a query string.
        status: Respond with this status and an NGC error envelope (or ``body``).
        times: How many matching requests the fault applies to; None means forever.
        retry_after: Value of a ``Retry-After`` response header.
        body: Raw body to send instead of the real one (status 200 unless ``status``).
        truncate_at: Send the real headers (full Content-Length) but drop the connection
            after this many body bytes.
        corrupt: Flip one byte in the middle of the body.
        delay: Seconds to sleep before responding.
        throttle_bps: Send the body at about this many bytes per second.
    """

    path_regex: str
    status: int | None = None
    times: int | None = 1
    retry_after: str | None = None
    body: bytes | None = None
    truncate_at: int | None = None
    corrupt: bool = False
    delay: float = 0.0
    throttle_bps: int | None = None


class RequestRecord(NamedTuple):
    """One request as the server received it.

    Attributes:
        method: HTTP method.
        path: Raw (still percent-encoded) path, without the query.
        query: Parsed query string (blank values kept).
        headers: Request headers with lower-case names.
    """

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]


def _loopback_host(host: str) -> str:
    if host == "localhost":
        return "127.0.0.1"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"FakeNGC binds loopback only; {host!r} is not an IP address") from None
    if not address.is_loopback:
        raise ValueError(f"FakeNGC binds loopback only, not {host!r}")
    return host


class _HTTPServer(ThreadingHTTPServer):
    """ThreadingHTTPServer that knows its FakeNGC and can drop idle keep-alive connections."""

    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    request_queue_size = 128  # benchmarks open many parallel connections at once

    def __init__(
        self, address: tuple[str, int], fake: FakeNGC, ssl_context: ssl.SSLContext | None = None
    ) -> None:
        self.fake = fake
        self._connections: set[socket.socket] = set()
        self._conn_lock = threading.Lock()
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, Handler)
        if ssl_context is not None:
            # Accepted sockets come out as SSLSockets. The handshake is deferred to the
            # handler thread (Handler.setup): done in accept() it would let one stalled
            # client block the whole accept loop.
            self.socket = ssl_context.wrap_socket(
                self.socket, server_side=True, do_handshake_on_connect=False
            )

    def server_bind(self) -> None:
        # HTTPServer.server_bind does a reverse DNS lookup (getfqdn) that can hang for
        # seconds in a network-isolated sandbox; the name is never needed here.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), int(port)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._conn_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._conn_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        """Shut down every open client connection so handler threads end promptly."""
        with self._conn_lock:
            connections = list(self._connections)
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Errors inside a request are handled (and recorded) by the handler; what gets
        # here is a client hanging up, which is normal for download tests. Stay quiet.
        return None


class FakeNGC:
    """A fake NGC catalog API on loopback, with fault injection.

    Args:
        catalog: What to serve; may be mutated (or replaced) while running.
        api_key: If set, ``/token`` requires it and key-mode paths require a bearer token
            issued by ``/token``; guest paths stay open.
        search_page_size: Cap of the search ``pageSize``.
        list_page_size: Cap of ``page-size`` for version and file lists.
        url_page_size: Page size of the download-URL listing.
        host: A loopback address (``127.0.0.1``, ``::1``, ``localhost``).
        port: TCP port; 0 picks a free one.
        ssl_context: If set, a server-side context (certificate chain loaded): the server
            speaks HTTPS, and :attr:`url` (hence every presigned download URL it hands out)
            starts with ``https://``. The real NGC client (ngcsdk) only speaks HTTPS.

    Raises:
        ValueError: host is not a loopback address, or a page size is below 1.
    """

    def __init__(
        self,
        catalog: FakeCatalog,
        *,
        api_key: str | None = None,
        search_page_size: int = 100,
        list_page_size: int = 1000,
        url_page_size: int = 25,
        host: str = "127.0.0.1",
        port: int = 0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.host = _loopback_host(host)
        if min(search_page_size, list_page_size, url_page_size) < 1:
            raise ValueError("page sizes must be >= 1")
        self.catalog = catalog
        self.port = port
        self.ssl_context = ssl_context
        self.search_page_size = search_page_size
        self.list_page_size = list_page_size
        self.url_page_size = url_page_size
        self.requests: list[RequestRecord] = []
        self.errors: list[str] = []  # tracebacks of unexpected handler exceptions
        self._api_key = api_key
        self._targets: list[str] = []  # raw path[?query] of each record, for count()
        self._faults: list[tuple[Fault, re.Pattern[str], list[int | None]]] = []
        self._tokens: set[str] = set()
        self._lock = threading.Lock()
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> FakeNGC:
        """Bind and serve in a daemon thread.

        Returns:
            self, so that ``fake = FakeNGC(cat).start()`` works.
        """
        if self._httpd is not None:
            raise RuntimeError("FakeNGC already started")
        self._httpd = _HTTPServer((self.host, self.port), self, self.ssl_context)
        self.port = int(self._httpd.server_address[1])
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"fakengc:{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, drop open connections and release the port. Idempotent."""
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        httpd.shutdown()
        httpd.close_connections()
        httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> FakeNGC:
        return self if self._httpd is not None else self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:40123`` (``https://`` with TLS; only while started)."""
        if self._httpd is None:
            raise RuntimeError("FakeNGC is not running")
        host = f"[{self.host}]" if ":" in self.host else self.host
        scheme = "https" if self.ssl_context is not None else "http"
        return f"{scheme}://{host}:{self.port}"

    # -- request log -----------------------------------------------------------------

    def record(
        self,
        method: str,
        path: str,
        query: dict[str, list[str]],
        headers: dict[str, str],
        target: str,
    ) -> None:
        """Append a request to :attr:`requests` (called by the handler)."""
        with self._lock:
            self.requests.append(RequestRecord(method, path, query, headers))
            self._targets.append(target)

    def clear_requests(self) -> None:
        """Forget the recorded requests."""
        with self._lock:
            self.requests.clear()
            self._targets.clear()

    def count(self, path_regex: str) -> int:
        """Number of recorded requests whose path (``?query`` appended if any) matches.

        Args:
            path_regex: Regular expression, applied with ``re.search``.

        Returns:
            The count.
        """
        rx = re.compile(path_regex)
        with self._lock:
            return sum(1 for t in self._targets if rx.search(t))

    # -- faults ----------------------------------------------------------------------

    def add_fault(self, fault: Fault) -> Fault:
        """Arm a fault; the first armed fault that matches a request applies to it.

        Args:
            fault: The fault. Its ``times`` is copied: the object is not mutated.

        Returns:
            The fault.
        """
        armed = (fault, re.compile(fault.path_regex), [fault.times])
        with self._lock:
            self._faults.append(armed)
        return fault

    def clear_faults(self) -> None:
        """Disarm all faults."""
        with self._lock:
            self._faults.clear()

    def take_fault(self, target: str) -> Fault | None:
        """Consume one use of the first armed fault matching target (called by the handler)."""
        with self._lock:
            for fault, rx, left in self._faults:
                if left[0] is not None and left[0] <= 0:
                    continue
                if rx.search(target):
                    if left[0] is not None:
                        left[0] -= 1
                    return fault
        return None

    # -- auth ------------------------------------------------------------------------

    @property
    def auth_required(self) -> bool:
        """Whether an API key is configured (key-mode paths then need a token)."""
        return self._api_key is not None

    def check_api_key(self, candidate: str) -> bool:
        """Constant-time comparison with the configured key (True if none is set)."""
        if self._api_key is None:
            return True
        return hmac.compare_digest(candidate.encode(), self._api_key.encode())

    def issue_token(self) -> str:
        """Create and remember a new bearer token."""
        token = secrets.token_urlsafe(32)
        with self._lock:
            self._tokens.add(token)
        return token

    def check_bearer(self, token: str) -> bool:
        """Whether token was issued by /token (or is the configured ``nvapi-`` key)."""
        if self._api_key is None:
            return True
        with self._lock:
            if token in self._tokens:
                return True
        return self._api_key.startswith("nvapi-") and self.check_api_key(token)

    def record_error(self, text: str) -> None:
        """Keep the traceback of an unexpected handler exception."""
        with self._lock:
            self.errors.append(text)
