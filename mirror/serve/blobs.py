"""Streaming blobs out of the store without ever serving a corrupt one silently.

The re-verify policy (`[serve] reverify`):

- `first` (default): a blob is hashed the first time this process serves it, and again whenever
  its file changes (inode, size or mtime). A full GET hashes while streaming and holds back the
  last chunk until the digest matched, so a bad blob ends in an aborted response (the client
  sees a short body, never a complete wrong one) at no extra latency; a Range request for an
  unverified blob hashes the whole file first.
- `always`: every request re-hashes (as above).
- `never`: trust the store (sizes still come from the file).

A blob that fails is remembered as bad until its file changes (`mirror verify --repair` or the
next sync replaces it) and answered with 500 and a logged error naming the digest.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import re
import threading
from dataclasses import dataclass
from typing import BinaryIO

from mirror.blobstore import BlobStore
from mirror.errors import StoreError
from mirror.serve.asgi import Send, encode_headers

log = logging.getLogger(__name__)

CHUNK = 1024 * 1024
_HASH_CHUNK = 4 * 1024 * 1024


class BlobMissing(Exception):
    """Not in the store."""


class BlobCorrupt(Exception):
    """On disk, but its bytes do not hash to its digest."""


class Unsatisfiable(Exception):
    def __init__(self, size: int) -> None:
        super().__init__(size)
        self.size = size


class ResponseAborted(Exception):
    """Headers went out but the body could not be completed; the connection must close."""


def _key(st: os.stat_result) -> tuple[int, int, int, int]:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


@dataclass
class Opened:
    fh: BinaryIO
    size: int
    digest: str
    key: tuple[int, int, int, int]


class BlobServer:
    """Opens, verifies and streams blobs of one store under one policy."""

    def __init__(self, store: BlobStore, policy: str = "first") -> None:
        if policy not in ("first", "always", "never"):
            raise ValueError(f"unknown reverify policy {policy!r}")
        self.store, self.policy = store, policy
        self._good: dict[str, tuple[int, int, int, int]] = {}
        self._bad: dict[str, tuple[int, int, int, int]] = {}
        self._lock = threading.Lock()

    def open(self, digest: str) -> Opened:
        """Open a blob (blocking). Raises BlobMissing or BlobCorrupt (known bad)."""
        try:
            fh = self.store.open(digest)
        except (StoreError, OSError):
            raise BlobMissing(digest) from None
        key = _key(os.fstat(fh.fileno()))
        with self._lock:
            bad = self._bad.get(digest) == key
        if bad:
            fh.close()
            raise BlobCorrupt(digest)
        return Opened(fh, key[2], digest, key)

    def trusted(self, blob: Opened) -> bool:
        if self.policy == "never":
            return True
        if self.policy == "always":
            return False
        with self._lock:
            return self._good.get(blob.digest) == blob.key

    def _record(self, blob: Opened, ok: bool) -> None:
        with self._lock:
            (self._good if ok else self._bad)[blob.digest] = blob.key
            (self._bad if ok else self._good).pop(blob.digest, None)
        if not ok:
            log.error(
                "blob %s failed verification on disk: not served (run `mirror verify --repair`)",
                blob.digest,
            )

    def verify_file(self, blob: Opened) -> None:
        """Hash the whole file (blocking); raises BlobCorrupt and remembers a bad blob."""
        hasher = hashlib.sha256()
        fd = blob.fh.fileno()
        offset = 0
        while chunk := os.pread(fd, _HASH_CHUNK, offset):
            hasher.update(chunk)
            offset += len(chunk)
        ok = offset == blob.size and f"sha256:{hasher.hexdigest()}" == blob.digest
        self._record(blob, ok)
        if not ok:
            raise BlobCorrupt(blob.digest)

    async def send(
        self,
        send: Send,
        method: str,
        blob: Opened,
        range_header: str | None,
        headers: list[tuple[str, str]],
    ) -> None:
        """Send status, headers and (unless HEAD) the body of `blob`; closes it.

        Raises Unsatisfiable (nothing sent), BlobCorrupt (nothing sent: a Range request
        or a blob known bad) or ResponseAborted (headers sent, body cut short).
        """
        try:
            span = parse_range(range_header, blob.size)
            if span == "unsatisfiable":
                raise Unsatisfiable(blob.size)
            trusted = method == "HEAD" or self.trusted(blob)
            if span is not None and not trusted:
                await asyncio.to_thread(self.verify_file, blob)
                trusted = True
            if span is None:
                status, start, end = 200, 0, blob.size - 1
                extra: list[tuple[str, str]] = []
            else:
                assert not isinstance(span, str)
                status, (start, end) = 206, span
                extra = [("Content-Range", f"bytes {start}-{end}/{blob.size}")]
            length = end - start + 1 if blob.size else 0
            all_headers = [
                ("Content-Length", str(length)),
                ("Accept-Ranges", "bytes"),
                *headers,
                *extra,
            ]
            await send(
                {
                    "type": "http.response.start",
                    "status": status,
                    "headers": encode_headers(all_headers),
                }
            )
            if method == "HEAD" or length == 0:
                await send({"type": "http.response.body", "body": b""})
                return
            if trusted:
                await self._stream(send, blob, start, length)
            else:
                await self._stream_verified(send, blob)
        finally:
            blob.fh.close()

    @staticmethod
    async def _stream(send: Send, blob: Opened, start: int, length: int) -> None:
        fd, offset, left = blob.fh.fileno(), start, length
        while left > 0:
            chunk = await asyncio.to_thread(os.pread, fd, min(CHUNK, left), offset)
            if not chunk:  # the file shrank under us: the client must see a short body
                log.error("blob %s ended %d bytes early", blob.digest, left)
                raise ResponseAborted(blob.digest)
            offset += len(chunk)
            left -= len(chunk)
            await send({"type": "http.response.body", "body": chunk, "more_body": left > 0})

    async def _stream_verified(self, send: Send, blob: Opened) -> None:
        """Hash while streaming; the last chunk goes out only if the digest matched."""
        fd, offset = blob.fh.fileno(), 0
        hasher = hashlib.sha256()

        def read(at: int) -> bytes:
            data = os.pread(fd, min(CHUNK, blob.size - at), at)
            hasher.update(data)
            return data

        held: bytes | None = None
        while offset < blob.size:
            chunk = await asyncio.to_thread(read, offset)
            if not chunk:
                break
            offset += len(chunk)
            if held is not None:
                await send({"type": "http.response.body", "body": held, "more_body": True})
            held = chunk
        ok = offset == blob.size and f"sha256:{hasher.hexdigest()}" == blob.digest
        self._record(blob, ok)
        if not ok or held is None:
            raise ResponseAborted(blob.digest)
        await send({"type": "http.response.body", "body": held, "more_body": False})


_RANGE = re.compile(r"\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*")


def parse_range(header: str | None, size: int) -> tuple[int, int] | str | None:
    """One `bytes=` range -> (start, end) inclusive, clipped; "unsatisfiable"; or None to ignore.

    Malformed or multi-range headers are ignored (RFC 9110 allows serving the whole body);
    that includes NGC's `bytes=0--1` for empty files.
    """
    if not header:
        return None
    match = _RANGE.fullmatch(header)
    if match is None or (not match[1] and not match[2]):
        return None
    if match[1]:
        start = int(match[1])
        end = int(match[2]) if match[2] else size - 1
        if match[2] and end < start:
            return None
        if start >= size:
            return "unsatisfiable"
        return start, min(end, size - 1)
    suffix = int(match[2])
    if suffix == 0 or size == 0:
        return "unsatisfiable"
    return max(0, size - suffix), size - 1
