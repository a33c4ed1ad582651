"""The only module that imports httpx: client factory, retries, error translation, downloads.

Retries (429, 500, 502, 503, 504, connection and read errors) back off exponentially with
jitter and honour `Retry-After`; when the budget is spent the last failure becomes our
`HTTPStatusError` / `UpstreamError`, naming the URL without its query string.

Throughput: httpcore reads the socket 64 KiB at a time, which caps a download near half of
curl's speed on this class of machine (bench/, reference/performance.md). We raise that read
size to 1 MiB; it is a private class attribute, so the httpcore version is pinned in
pyproject.toml and tests/test_http_client.py fails if the attribute disappears.
"""

from __future__ import annotations

import email.utils
import json
import logging
import random
import ssl
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import httpcore
import httpx

from mirror.blobstore import BlobWriter
from mirror.config import HttpSettings
from mirror.errors import (
    ConfigError,
    HTTPStatusError,
    IntegrityError,
    ProtocolError,
    UpstreamError,
    redact_url,
)

log = logging.getLogger(__name__)

SOCKET_READ_BYTES = 1 << 20
httpcore._sync.http11.HTTP11Connection.READ_NUM_BYTES = SOCKET_READ_BYTES

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
USER_AGENT = "mirror/0.1 (+offline NGC mirror)"

HeaderProvider = Callable[[], Mapping[str, str]]
# Called on a 401 with (URL that answered, its WWW-Authenticate values); True = retry. Token
# auth needs the *current* challenge (realm, scope, error) and must know which origin sent it.
ChallengeHandler = Callable[[str, list[str]], bool]


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP-date), or None."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def _ssl_context(ca_bundle: str) -> ssl.SSLContext | bool:
    """System trust, plus the CA certificates in `ca_bundle` when one is configured."""
    if not ca_bundle:
        return True
    ctx = ssl.create_default_context()
    try:
        ctx.load_verify_locations(cafile=ca_bundle)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            f"cannot load CA certificates: {exc}",
            path=ca_bundle,
            hint="[http] ca_bundle must name a PEM file of CA certificates",
        ) from None
    return ctx


def _refuse_untrusted(exc: BaseException, url: str) -> None:
    """A certificate that does not verify is a configuration error, not a retryable blip."""
    cause: BaseException | None = exc
    while cause is not None and not isinstance(cause, ssl.SSLCertVerificationError):
        cause = cause.__cause__ or cause.__context__
    if cause is not None:
        reason = getattr(cause, "verify_message", "") or "not trusted"
        raise UpstreamError(
            f"the server's TLS certificate does not verify ({reason})",
            url=url,
            hint="if it is signed by a private CA (e.g. an upstream `mirror serve`), "
            "set [http] ca_bundle to that CA's PEM file",
        ) from None


def _detail(response: httpx.Response) -> str:
    """A short human detail from an NGC error envelope, if the body has one."""
    try:
        body = response.json()
    except (ValueError, httpx.ResponseNotRead):
        return ""
    if isinstance(body, dict):
        status = body.get("requestStatus")
        if isinstance(status, dict) and status.get("statusDescription"):
            return str(status["statusDescription"])[:200]
        for key in ("detail", "message"):
            if isinstance(body.get(key), str):
                return str(body[key])[:200]
    return ""


class HttpClient:
    """A retrying HTTP client shared by the sources; thread-safe (one httpx.Client)."""

    def __init__(
        self,
        settings: HttpSettings,
        *,
        user_agent: str = USER_AGENT,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.settings = settings
        self._sleep = sleep
        limits = httpx.Limits(
            max_connections=settings.concurrency * 2 + 2,
            max_keepalive_connections=settings.concurrency * 2 + 2,
        )
        self._client = httpx.Client(
            timeout=httpx.Timeout(settings.timeout),
            limits=limits,
            headers={"User-Agent": user_agent},
            trust_env=settings.trust_env,
            verify=_ssl_context(settings.ca_bundle),
            follow_redirects=True,  # httpx drops Authorization when a redirect changes origin
            transport=transport,
        )
        self._lock = threading.Lock()
        self.requests_made = 0

    def close(self) -> None:
        self._client.close()

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return float(min(retry_after, max(self.settings.max_backoff, 1.0)))
        base = float(self.settings.backoff) * (2 ** (attempt - 1))
        return float(min(self.settings.max_backoff, base * (0.5 + random.random())))

    def _count(self) -> None:
        with self._lock:
            self.requests_made += 1

    def _send(
        self,
        method: str,
        url: str,
        *,
        headers: HeaderProvider | None,
        on_unauthorized: Callable[[], bool] | None,
        extra: Mapping[str, str] | None = None,
        stream: bool = False,
        on_challenge: ChallengeHandler | None = None,
    ) -> httpx.Response:
        """Send with retries; return a successful response (streaming if asked)."""
        attempts = self.settings.retries + 1
        reauthed = False
        attempt = 0
        while True:
            attempt += 1
            hdrs = dict(headers() if headers else {})
            if extra:
                hdrs.update(extra)
            self._count()
            try:
                req = self._client.build_request(method, url, headers=hdrs)
                resp = self._client.send(req, stream=stream)
            except httpx.TransportError as exc:
                _refuse_untrusted(exc, url)
                if attempt >= attempts:
                    raise UpstreamError(
                        f"cannot reach upstream: {type(exc).__name__} after {attempt} attempts",
                        url=url,
                        hint="check the network and [ngc] api_url",
                    ) from None
                wait = self._backoff(attempt, None)
                log.warning(
                    "%s %s: %s; retry %d in %.1fs",
                    method,
                    redact_url(url),
                    type(exc).__name__,
                    attempt,
                    wait,
                )
                self._sleep(wait)
                continue
            if resp.status_code < 400:
                return resp
            if stream:
                resp.read()
            resp.close()
            if resp.status_code == 401 and (on_unauthorized or on_challenge) and not reauthed:
                reauthed = True
                if on_challenge is not None:
                    retry = on_challenge(str(resp.url), resp.headers.get_list("www-authenticate"))
                else:
                    retry = on_unauthorized is not None and on_unauthorized()
                if retry:
                    attempt -= 1  # a token refresh is not a failure of upstream
                    continue
            if resp.status_code in RETRY_STATUSES and attempt < attempts:
                wait = self._backoff(attempt, parse_retry_after(resp.headers.get("retry-after")))
                log.warning(
                    "%s %s: HTTP %d; retry %d in %.1fs",
                    method,
                    redact_url(url),
                    resp.status_code,
                    attempt,
                    wait,
                )
                self._sleep(wait)
                continue
            raise HTTPStatusError(resp.status_code, url, detail=_detail(resp), attempts=attempt)

    def get_json(
        self,
        url: str,
        *,
        headers: HeaderProvider | None = None,
        on_unauthorized: Callable[[], bool] | None = None,
    ) -> Any:
        """GET a JSON document; malformed or empty bodies raise ProtocolError naming the URL."""
        resp = self._send("GET", url, headers=headers, on_unauthorized=on_unauthorized)
        try:
            return json.loads(resp.content)
        except ValueError as exc:
            raise ProtocolError(
                f"upstream returned malformed JSON ({exc.msg} at byte {exc.pos})"
                if isinstance(exc, json.JSONDecodeError)
                else "upstream returned malformed JSON",
                url=url,
                hint="upstream is misbehaving; retry later or report it",
            ) from None

    def get_bytes(
        self,
        url: str,
        *,
        headers: HeaderProvider | None = None,
        on_unauthorized: Callable[[], bool] | None = None,
        on_challenge: ChallengeHandler | None = None,
        accept: str | None = None,
        max_bytes: int | None = None,
    ) -> tuple[bytes, dict[str, str], str]:
        """GET a small document as raw bytes: (body, lower-cased headers, final URL).

        For bodies that are hashed as-is (registry manifests) or need their headers (`Link`).
        `max_bytes` bounds what is read so a hostile upstream cannot exhaust memory; a body
        broken mid-read is fetched again like any other transport error.
        """
        extra = {"Accept": accept} if accept else None
        failures = 0
        while True:
            resp = self._send(
                "GET",
                url,
                headers=headers,
                on_unauthorized=on_unauthorized,
                on_challenge=on_challenge,
                extra=extra,
                stream=True,
            )
            try:
                body = bytearray()
                for chunk in resp.iter_bytes():
                    body += chunk
                    if max_bytes is not None and len(body) > max_bytes:
                        raise ProtocolError(
                            f"response body exceeds the {max_bytes}-byte limit",
                            url=url,
                            hint="upstream is misbehaving; retry later or report it",
                        )
            except httpx.TransportError as exc:
                failures += 1
                if failures > self.settings.retries:
                    raise UpstreamError(
                        f"reading the response kept failing ({type(exc).__name__})"
                        f" after {failures} attempts",
                        url=url,
                        hint="check the network; upstream may be overloaded",
                    ) from None
                self._sleep(self._backoff(failures, None))
                continue
            finally:
                resp.close()
            found = {key.lower(): value for key, value in resp.headers.items()}
            return bytes(body), found, str(resp.url)

    def download(
        self,
        url: str,
        writer: BlobWriter,
        *,
        headers: HeaderProvider | None = None,
        on_progress: Callable[[int], None] | None = None,
        on_challenge: ChallengeHandler | None = None,
    ) -> int:
        """Stream `url` into `writer` from `writer.offset`, resuming with Range after errors.

        Returns the number of bytes received over the network. The caller commits the writer.
        `on_challenge` lets a token that expires between two resumed requests be renewed.
        """
        received = 0
        failures = 0
        attempts = self.settings.retries + 1
        expected = writer.expected_size
        while expected is None or writer.offset < expected:
            extra = {"Accept-Encoding": "identity"}
            if writer.offset:
                extra["Range"] = f"bytes={writer.offset}-"
            resp = self._send(
                "GET",
                url,
                headers=headers,
                on_unauthorized=None,
                on_challenge=on_challenge,
                extra=extra,
                stream=True,
            )
            try:
                if writer.offset and resp.status_code == 200:
                    writer.restart()  # server ignored Range: take the whole body again
                elif resp.status_code == 206:
                    self._check_content_range(resp, writer.offset, url)
                for chunk in resp.iter_raw():
                    writer.write(chunk)
                    received += len(chunk)
                    if on_progress:
                        on_progress(len(chunk))
                if expected is None:
                    break
                if writer.offset < expected:
                    raise httpx.RemoteProtocolError("body ended early")
            except httpx.TransportError as exc:
                failures += 1
                if failures >= attempts:
                    raise UpstreamError(
                        f"download kept failing ({type(exc).__name__}) at byte {writer.offset}"
                        f" after {failures} attempts",
                        url=url,
                        hint="run `mirror sync` again: it resumes from the partial download",
                    ) from None
                wait = self._backoff(failures, None)
                log.warning(
                    "download %s broke at byte %d (%s); resuming in %.1fs",
                    redact_url(url),
                    writer.offset,
                    type(exc).__name__,
                    wait,
                )
                self._sleep(wait)
            finally:
                resp.close()
        return received

    @staticmethod
    def _check_content_range(resp: httpx.Response, offset: int, url: str) -> None:
        value = resp.headers.get("content-range", "")
        try:
            unit, rest = value.split(" ", 1)
            start = int(rest.split("-", 1)[0])
        except ValueError:
            raise ProtocolError(f"206 with unreadable Content-Range {value!r}", url=url) from None
        if unit != "bytes" or start != offset:
            raise IntegrityError(
                "server answered a different range than asked",
                expected=f"bytes {offset}-",
                actual=value,
                subject=redact_url(url),
            )
