"""Authentication for OCI registries: challenge parsing, token fetch, per-scope token cache.

Registries answer 401 with `WWW-Authenticate` (oci.md §2.1). We never guess the realm: every
401 from the registry's own origin is parsed and obeyed, because nvcr.io changes realm and
service between the first challenge and the one after a token expires (oci.md §2.3), and its
first challenge carries no `service` at all. Tokens live ~10 minutes there, shorter than a
large layer download, so a 401 mid-sync simply renews the token for that scope and the
download resumes.

Where credentials may go (oci.md §2.4):
- `Basic` credentials (username + password/NGC API key) go only to the registry origin (Basic
  auth registries) or to the token realm named in a challenge that came from the registry
  origin. A plain-http realm behind an https registry never gets credentials.
- Bearer tokens go only to the registry origin; redirects to other origins are followed by
  httpx without `Authorization`.
Nothing here logs a credential or a token.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from urllib.parse import urlencode, urlsplit

from mirror.config import Secret
from mirror.errors import HTTPStatusError, ProtocolError, UpstreamError, redact_url
from mirror.http import HttpClient

log = logging.getLogger(__name__)

MAX_TOKEN_BYTES = 1 << 20  # containers/image iolimits: token responses above 1 MiB are hostile
MIN_TOKEN_SECONDS = 60  # token.md: servers should never issue shorter; default when absent
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_QUOTED = re.compile(r'"((?:[^"\\]|\\.)*)"')
_BARE_VALUE = re.compile(r"[^,\s]+")
_UNESCAPE = re.compile(r"\\(.)")


@dataclass(frozen=True)
class Challenge:
    """One `WWW-Authenticate` challenge: a lower-cased scheme and its parameters."""

    scheme: str
    params: Mapping[str, str] = field(default_factory=dict)

    @property
    def realm(self) -> str | None:
        return self.params.get("realm")

    @property
    def service(self) -> str | None:
        return self.params.get("service") or None

    @property
    def scopes(self) -> list[str]:
        """Space-separated scopes (a cross-repo challenge can carry several, oci.md §2.1)."""
        return self.params.get("scope", "").split()

    @property
    def error(self) -> str | None:
        return self.params.get("error")


def parse_challenges(values: Iterable[str]) -> list[Challenge]:
    """Parse `WWW-Authenticate` header values (RFC 9110 §11.6.1) into challenges.

    Liberal on purpose: unknown schemes, extra parameters, unquoted values and several
    challenges in one header are all accepted; a token68 after the scheme is skipped.
    """
    found: list[Challenge] = []
    for value in values:
        scheme: str | None = None
        params: dict[str, str] = {}
        i, n = 0, len(value)
        while i < n:
            if value[i] in " \t,":
                i += 1
                continue
            m = _TOKEN.match(value, i)
            if not m:
                i += 1  # stray character: skip rather than fail on a quirky server
                continue
            name, j = m.group(0), m.end()
            k = j
            while k < n and value[k] in " \t":
                k += 1
            if scheme is not None and k < n and value[k] == "=" and value[k + 1 : k + 2] != "=":
                k += 1
                while k < n and value[k] in " \t":
                    k += 1
                q = _QUOTED.match(value, k)
                if q:
                    params[name.lower()] = _UNESCAPE.sub(r"\1", q.group(1))
                    i = q.end()
                else:
                    b = _BARE_VALUE.match(value, k)
                    params[name.lower()] = b.group(0) if b else ""
                    i = b.end() if b else k
                continue
            if scheme is not None and not params and k < n and value[k] == "=":
                i = k  # token68 padding (`abc==`): not a parameter, skip it
                while i < n and value[i] == "=":
                    i += 1
                continue
            if scheme is not None:
                found.append(Challenge(scheme, params))
            scheme, params, i = name.lower(), {}, j
        if scheme is not None:
            found.append(Challenge(scheme, params))
    return found


def origin(url: str) -> tuple[str, str, int]:
    """(scheme, host, port) with default ports filled in: what "same origin" compares."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    port = parts.port or (443 if scheme == "https" else 80)
    return scheme, (parts.hostname or "").lower(), port


@dataclass(frozen=True)
class _Token:
    value: str
    expires_at: float


class RegistryAuth:
    """Answers a registry's challenges and supplies `Authorization` headers per scope.

    A scope key is what the caller will do (`repository:<name>:pull`, or "" for the `/v2/`
    probe); tokens are cached under it until shortly before they expire.
    """

    def __init__(
        self,
        registry_url: str,
        http: HttpClient,
        *,
        username: str | None = None,
        password: Secret | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.registry_url = registry_url
        self.http = http
        self.username = username
        self._password = password
        self._clock = clock
        self._origin = origin(registry_url)
        self._tokens: dict[str, _Token] = {}
        self._basic = False  # the registry asked for Basic auth (htpasswd-style)
        self._lock = threading.Lock()
        self.tokens_fetched = 0

    @property
    def has_credentials(self) -> bool:
        return self.username is not None and self._password is not None

    def _basic_value(self) -> str:
        assert self.username is not None and self._password is not None
        raw = f"{self.username}:{self._password.reveal()}".encode()
        return "Basic " + base64.b64encode(raw).decode()

    def headers(self, scope: str) -> dict[str, str]:
        """Authorization for a request to the registry origin under `scope` (maybe none)."""
        with self._lock:
            if self._basic and self.has_credentials:
                return {"Authorization": self._basic_value()}
            token = self._tokens.get(scope)
            if token is None:
                return {}
            if token.expires_at <= self._clock():
                del self._tokens[scope]  # expired: the 401 it would get brings a fresh challenge
                return {}
            return {"Authorization": f"Bearer {token.value}"}

    def handler(self, scope: str) -> Callable[[str, list[str]], bool]:
        """An `on_challenge` callback for HttpClient bound to `scope`."""
        return lambda url, values: self.answer(scope, url, values)

    def answer(self, scope: str, url: str, values: list[str]) -> bool:
        """React to a 401 from `url`; True when a retry can succeed with new credentials."""
        if origin(url) != self._origin:
            # A redirect target (CDN, storage) asking for auth must never get our credentials.
            log.warning("ignoring an auth challenge from %s (not the registry)", redact_url(url))
            return False
        challenges = parse_challenges(values)
        bearer = next((c for c in challenges if c.scheme == "bearer"), None)
        if bearer is not None:
            return self._bearer(scope, bearer, url)
        if any(c.scheme == "basic" for c in challenges):
            if not self.has_credentials:
                return False
            with self._lock:
                already, self._basic = self._basic, True
            return not already  # Basic was already sent and refused: the credentials are wrong
        raise ProtocolError(
            "registry answered 401 without a Bearer or Basic challenge",
            url=url,
            hint="the registry's auth scheme is not supported by mirror",
        )

    def _bearer(self, scope: str, challenge: Challenge, url: str) -> bool:
        realm = challenge.realm
        if not realm:
            raise ProtocolError("Bearer challenge without a realm", url=url)
        self._check_realm(realm, url)
        scopes = challenge.scopes or ([scope] if scope else [])
        query: list[tuple[str, str]] = []
        if challenge.service:  # nvcr.io omits it and its token endpoint wants it omitted
            query.append(("service", challenge.service))
        query.extend(("scope", s) for s in scopes)
        if self.username:
            query.append(("account", self.username))
        token_url = realm + ("&" if "?" in realm else "?") + urlencode(query) if query else realm
        token = self._fetch_token(token_url, challenge.error)
        with self._lock:
            self._tokens[scope] = token
            self.tokens_fetched += 1
        return True

    def _check_realm(self, realm: str, url: str) -> None:
        parts = urlsplit(realm)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ProtocolError(f"token realm {redact_url(realm)!r} is not an http(s) URL", url=url)
        if parts.username or parts.password:
            raise ProtocolError("token realm carries userinfo; refusing it", url=url)
        if self._origin[0] == "https" and parts.scheme != "https" and self.has_credentials:
            raise ProtocolError(
                f"token realm {redact_url(realm)} is plain http while the registry is https;"
                " refusing to send credentials over it",
                url=url,
                hint="check the registry URL; a proxy may be rewriting the challenge",
            )

    def _fetch_token(self, token_url: str, error: str | None) -> _Token:
        basic = self._basic_value() if self.has_credentials else None
        who = f"user {self.username!r}" if basic else "anonymous access"
        try:
            body, _, _ = self.http.get_bytes(
                token_url,
                headers=lambda: {"Authorization": basic} if basic else {},
                accept="application/json",
                max_bytes=MAX_TOKEN_BYTES,
            )
        except HTTPStatusError as exc:
            if exc.status in (401, 403):
                raise UpstreamError(
                    f"the registry token service refused {who} (HTTP {exc.status})",
                    url=token_url,
                    hint="check the NGC API key (NGC_API_KEY) or the registry username/password"
                    if basic
                    else "this repository needs credentials: set the NGC API key (NGC_API_KEY)",
                ) from None
            raise
        if error:
            log.info("renewing registry token (%s)", error)
        return self._parse_token(body, token_url)

    def _parse_token(self, body: bytes, token_url: str) -> _Token:
        # Liberal about Content-Type: nvcr.io has answered JSON as text/plain (oci.md §2.3).
        try:
            doc = json.loads(body)
        except ValueError:
            raise ProtocolError("token response is not JSON", url=token_url) from None
        if not isinstance(doc, dict):
            raise ProtocolError("token response is not a JSON object", url=token_url)
        value = doc.get("token") or doc.get("access_token")
        if not isinstance(value, str) or not value:
            raise ProtocolError("token response has neither token nor access_token", url=token_url)
        expires_in = doc.get("expires_in")
        seconds = (
            expires_in if isinstance(expires_in, int) and not isinstance(expires_in, bool) else 0
        )
        seconds = max(seconds, MIN_TOKEN_SECONDS)
        # Local clock, not issued_at: a skewed server clock must not make tokens look expired.
        # Renew a little early so a request does not start with a token about to die.
        return _Token(value, self._clock() + seconds - min(30.0, seconds / 10))
