"""Optional token auth for reads, and signed download URLs.

A site that wants reads behind a credential lists tokens in `[serve] token_file` (one per line,
`#` comments). Every client then proves one of them the way it already knows how:

- docker/podman/skopeo and `mirror sync` (registry API): HTTP Basic, any user name, the token as
  password (the 401 carries `WWW-Authenticate: Basic`);
- NVIDIA's `ngc` tooling and `mirror sync` (NGC API): the NGC key exchange — `GET /token` with
  Basic `$oauthtoken:<token>` returns a short-lived session token, then `Bearer <session>`;
- a browser: the Basic prompt.

Session tokens are stateless (`<expiry>.<hmac>` under a per-process secret) and so are download
URLs (`?exp=..&sig=..`): NGC clients fetch "presigned" URLs without any Authorization header.
Nothing here logs or echoes a token.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
import secrets
import threading
import time
from collections.abc import Iterable, Mapping
from pathlib import Path

from mirror.errors import ConfigError

log = logging.getLogger(__name__)

SESSION_TTL = 3600
RELOAD_EVERY = 1.0  # seconds between looks at the token file
URL_TTL = 3600
_PREFIX = "mst1."


def read_token_file(path: Path) -> list[str]:
    """The tokens listed in `path`; refuses a file that lists none."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(
            f"cannot read the token file: {exc.strerror}",
            path=str(path),
            hint="[serve] token_file names a file with one read token per line",
        ) from None
    lines = [ln.strip() for ln in text.splitlines()]
    tokens = [ln for ln in lines if ln and not ln.startswith("#")]
    if not tokens:
        raise ConfigError(
            "the token file lists no token",
            path=str(path),
            hint="put one token per line, or unset [serve] token_file for open reads",
        )
    return tokens


class ReadAuth:
    """Checks credentials; `ReadAuth(None)` (no tokens, no token file) lets every read through."""

    def __init__(
        self,
        tokens: Iterable[str] | None,
        secret: bytes | None = None,
        *,
        token_file: Path | None = None,
    ) -> None:
        if tokens is None and token_file is not None:
            tokens = read_token_file(token_file)  # a token file never means open reads
        self._digests = None if tokens is None else _digests(tokens)
        self._secret = secret or secrets.token_bytes(32)
        # with token_file, tokens follow the file: edit it to add or revoke one, no restart
        self._file = token_file
        self._stamp = _stamp(token_file) if token_file else None
        self._checked = time.monotonic()
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self._digests is not None

    def _reload(self) -> None:
        if self._file is None or time.monotonic() - self._checked < RELOAD_EVERY:
            return
        with self._lock:
            self._checked = time.monotonic()
            stamp = _stamp(self._file)
            if stamp == self._stamp:
                return
            try:
                self._digests = _digests(read_token_file(self._file))
                log.warning("read tokens reloaded from %s", self._file)
            except ConfigError as exc:  # keep serving with the tokens we had
                log.error("%s: %s; keeping the previous tokens", self._file, exc.message)
            self._stamp = stamp

    def valid_token(self, token: str) -> bool:
        """Whether `token` is a listed token (constant time per candidate)."""
        self._reload()
        if self._digests is None:
            return True
        probe = hashlib.sha256(token.encode()).digest()
        return any(hmac.compare_digest(probe, d) for d in self._digests)

    def allowed(self, headers: Mapping[str, str]) -> bool:
        """Whether a request with these (lower-cased) headers may read."""
        if self._digests is None:
            return True
        scheme, _, cred = headers.get("authorization", "").partition(" ")
        scheme, cred = scheme.lower(), cred.strip()
        if scheme == "basic":
            password = basic_password(cred)
            return password is not None and self.valid_token(password)
        if scheme == "bearer":
            return self._valid_session(cred) or self.valid_token(cred)
        return False

    # -- session tokens (NGC's /token exchange) --------------------------------------------
    def issue(self, now: float | None = None) -> tuple[str, int]:
        expiry = int((now or time.time()) + SESSION_TTL)
        return f"{_PREFIX}{expiry}.{self._mac(f'session:{expiry}')}", SESSION_TTL

    def _valid_session(self, token: str, now: float | None = None) -> bool:
        if not token.startswith(_PREFIX):
            return False
        expiry, _, mac = token[len(_PREFIX) :].partition(".")
        if not expiry.isdigit() or int(expiry) < (now or time.time()):
            return False
        return hmac.compare_digest(mac, self._mac(f"session:{expiry}"))

    # -- signed download URLs --------------------------------------------------------------
    def sign(self, path: str, now: float | None = None) -> str:
        """The query string (`exp=..&sig=..`) that authorises GETs of `path` for a while."""
        expiry = int((now or time.time()) + URL_TTL)
        return f"exp={expiry}&sig={self._mac(f'url:{expiry}:{path}')}"

    def signed(self, path: str, query: Mapping[str, list[str]], now: float | None = None) -> bool:
        expiry = query.get("exp", [""])[0]
        sig = query.get("sig", [""])[0]
        if not expiry.isdigit() or int(expiry) < (now or time.time()):
            return False
        return hmac.compare_digest(sig, self._mac(f"url:{expiry}:{path}"))

    def _mac(self, message: str) -> str:
        digest = hmac.new(self._secret, message.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest[:24]).decode().rstrip("=")


def _digests(tokens: Iterable[str]) -> frozenset[bytes]:
    return frozenset(hashlib.sha256(t.encode()).digest() for t in tokens)


def _stamp(path: Path) -> tuple[int, int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)


def basic_password(cred: str) -> str | None:
    """The password of a Basic credential, or None when it does not decode."""
    try:
        decoded = base64.b64decode(cred, validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, sep, password = decoded.partition(":")
    return password if sep else None
