"""Every exception `mirror` raises on purpose, in one tree.

```
MirrorError                    exit 1   base; `hint` names the command or change that fixes it
├── UsageError                 exit 2   bad flags or arguments
├── ConfigError                exit 2   config file missing, unparsable, unknown key, bad value
├── UpstreamError              exit 3   upstream unreachable or refusing after retries
│   ├── HTTPStatusError                 an HTTP status we gave up on (url, status)
│   └── ProtocolError                   upstream answered what we cannot read (bad JSON...)
├── IntegrityError             exit 4   bytes are not what they claim (digest or size mismatch)
├── LockHeldError              exit 5   another writer holds the mirror lock (pid, started)
├── PartialRunError            exit 6   the run finished and recorded a snapshot, but items failed
├── StoreError                 exit 1   filesystem problem in the mirror root (disk full...)
└── DatabaseError              exit 1   catalog DB problem (locked too long, schema too new)
```

Messages are built in `__init__` from fields; callers never format them. URLs are shown without
their query string: presigned download URLs carry signatures that do not belong in logs.
"""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit


def redact_url(url: str) -> str:
    """Drop the query and any userinfo from a URL so it is safe to log or show."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparsable url>"
    netloc = parts.hostname or ""
    if parts.port:
        netloc = f"{netloc}:{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


class MirrorError(Exception):
    """Base of every error `mirror` raises on purpose."""

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class UsageError(MirrorError):
    exit_code = 2


class ConfigError(MirrorError):
    exit_code = 2

    def __init__(self, message: str, *, path: str | None = None, hint: str | None = None) -> None:
        where = f"{path}: " if path else ""
        super().__init__(f"{where}{message}", hint=hint)
        self.path = path


class UpstreamError(MirrorError):
    exit_code = 3

    def __init__(self, message: str, *, url: str | None = None, hint: str | None = None) -> None:
        self.url = redact_url(url) if url else None
        suffix = f" ({self.url})" if self.url else ""
        super().__init__(f"{message}{suffix}", hint=hint)


class HTTPStatusError(UpstreamError):
    def __init__(self, status: int, url: str, *, detail: str = "", attempts: int = 1) -> None:
        self.status = status
        self.attempts = attempts
        what = f"HTTP {status}"
        if detail:
            what += f" {detail}"
        if attempts > 1:
            what += f" after {attempts} attempts"
        hint = None
        if status in (401, 403):
            hint = "check the NGC API key (NGC_API_KEY or [ngc] api_key) and [ngc] org"
        elif status == 412:
            hint = "accept the license terms for this artifact in the NGC web catalog, then retry"
        elif status == 429 or status >= 500:
            hint = "upstream is overloaded or down; cron will retry on the next run"
        super().__init__(what, url=url, hint=hint)


class ProtocolError(UpstreamError):
    """Upstream answered, but not in a shape we can use (malformed JSON, missing fields)."""


class IntegrityError(MirrorError):
    exit_code = 4

    def __init__(
        self,
        message: str,
        *,
        expected: str | None = None,
        actual: str | None = None,
        subject: str | None = None,
        hint: str | None = None,
    ) -> None:
        self.expected = expected
        self.actual = actual
        self.subject = subject
        text = message
        if subject:
            text = f"{subject}: {text}"
        if expected is not None or actual is not None:
            text += f" (expected {expected}, got {actual})"
        super().__init__(text, hint=hint)


class LockHeldError(MirrorError):
    exit_code = 5

    def __init__(self, path: str, holder: str) -> None:
        self.path = path
        self.holder = holder
        super().__init__(
            f"another mirror process holds the lock {path} ({holder})",
            hint="wait for it to finish; if that process is gone the lock frees itself",
        )


class PartialRunError(MirrorError):
    exit_code = 6

    def __init__(self, failures: list[str]) -> None:
        self.failures = failures
        shown = "; ".join(failures[:5])
        more = f" (+{len(failures) - 5} more)" if len(failures) > 5 else ""
        super().__init__(
            f"{len(failures)} item(s) failed: {shown}{more}",
            hint="see `mirror status` for the full list; the next sync retries them",
        )


class StoreError(MirrorError):
    exit_code = 1


class DiskFullError(StoreError):
    """The store's filesystem is full: a run stops at once (every further write would fail
    too) and names what it needed."""


class DatabaseError(MirrorError):
    exit_code = 1


class DigestError(UsageError):
    """A digest string that is not `sha256:` + 64 lowercase hex (never reaches the filesystem)."""

    def __init__(self, digest: str) -> None:
        shown = digest if len(digest) <= 80 else digest[:77] + "..."
        super().__init__(f"invalid digest {shown!r}: expected 'sha256:' followed by 64 hex digits")
