"""The content-addressed blob store: `blobs/sha256/<hex>` under the mirror root.

Bytes are hashed while they are written into `tmp/`, checked against the expected size and
digest, fsynced and published by one rename, so nothing partial is ever visible under
`blobs/`. A download that dies leaves `tmp/sha256-<hex>.partial`; the next writer for the same
digest re-hashes that prefix and continues from its end (HTTP Range), which is how a killed
sync resumes.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

from mirror.errors import IntegrityError, MirrorError, StoreError
from mirror.fsutil import atomic_write, fsync_dir, store_error
from mirror.paths import MirrorPaths, is_hex64, validate_digest

log = logging.getLogger(__name__)

CHUNK = 1 << 20
OCI_LAYOUT = b'{"imageLayoutVersion": "1.0.0"}'
EMPTY_INDEX = {
    "schemaVersion": 2,
    "mediaType": "application/vnd.oci.image.index.v1+json",
    "manifests": [],
}


def sha256_file(path: Path, limit: int | None = None) -> tuple[str, int]:
    """Hash a file (or its first `limit` bytes); return (digest, bytes read)."""
    h = hashlib.sha256()
    n = 0
    with open(path, "rb", buffering=0) as fh:
        while limit is None or n < limit:
            want = CHUNK if limit is None else min(CHUNK, limit - n)
            chunk = fh.read(want)
            if not chunk:
                break
            h.update(chunk)
            n += len(chunk)
    return "sha256:" + h.hexdigest(), n


class BlobWriter:
    """Streams one blob into `tmp/`, then publishes it with `commit()`.

    Use as a context manager: leaving the block without `commit()` keeps the partial file for
    resume when `expected_digest` is known (`keep_partial=True`), else removes it.
    """

    def __init__(
        self,
        store: BlobStore,
        expected_digest: str | None,
        expected_size: int | None,
        *,
        resume: bool = True,
        stage: bool = False,
    ) -> None:
        self.store = store
        self.stage = stage
        self.expected_digest = validate_digest(expected_digest) if expected_digest else None
        self.expected_size = expected_size
        self.keep_partial = self.expected_digest is not None
        self._hash = hashlib.sha256()
        self.digest: str | None = None
        if self.expected_digest:
            self.tmp_path = store.paths.partial(self.expected_digest)
        else:
            self.tmp_path = store.paths.tmp / f"anon-{uuid.uuid4().hex}.partial"
        self.offset = 0
        try:
            if resume and self.expected_digest and self.tmp_path.exists():
                self.offset = self._rehash_prefix()
            mode = "ab" if self.offset else "wb"
            self._fh: BinaryIO | None = open(self.tmp_path, mode, buffering=0)  # type: ignore[assignment]  # noqa: SIM115
        except OSError as exc:
            raise store_error(exc, self.tmp_path, "opening") from exc

    def _rehash_prefix(self) -> int:
        size = self.tmp_path.stat().st_size
        if self.expected_size is not None and size > self.expected_size:
            self.tmp_path.unlink()
            return 0
        n = 0
        with open(self.tmp_path, "rb", buffering=0) as fh:
            while chunk := fh.read(CHUNK):
                self._hash.update(chunk)
                n += len(chunk)
        log.info("resuming %s at byte %d", self.expected_digest, n)
        return n

    def write(self, chunk: bytes | memoryview) -> None:
        assert self._fh is not None, "write after close"
        size = len(chunk)
        if self.expected_size is not None and self.offset + size > self.expected_size:
            self.keep_partial = False
            raise IntegrityError(
                "more bytes than expected",
                expected=f"{self.expected_size} bytes",
                actual=f"at least {self.offset + size} bytes",
                subject=self.expected_digest or "blob",
            )
        self._hash.update(chunk)
        try:
            view = memoryview(chunk)
            while view:  # an unbuffered write may be short (a filling disk): finish or raise
                n = self._fh.write(view)
                if not n:
                    raise OSError(errno.ENOSPC, "no progress writing")
                view = view[n:]
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                # give the space back: the catalog needs room to record what happened more
                # than this download needs resuming
                self.keep_partial = False
            raise store_error(exc, self.tmp_path, "writing") from exc
        self.offset += size

    def restart(self) -> None:
        """Discard what was written so far (the server ignored our Range request)."""
        assert self._fh is not None, "restart after close"
        self._fh.seek(0)
        self._fh.truncate()
        self._hash = hashlib.sha256()
        self.offset = 0

    def commit(self) -> str:
        """Check size and digest, fsync, publish by rename; return the digest."""
        assert self._fh is not None, "commit after close"
        actual = "sha256:" + self._hash.hexdigest()
        if self.expected_size is not None and self.offset != self.expected_size:
            self.keep_partial = False
            raise IntegrityError(
                "size mismatch",
                expected=f"{self.expected_size} bytes",
                actual=f"{self.offset} bytes",
                subject=self.expected_digest or actual,
            )
        if self.expected_digest and actual != self.expected_digest:
            self.keep_partial = False
            raise IntegrityError("digest mismatch", expected=self.expected_digest, actual=actual)
        try:
            os.fsync(self._fh.fileno())
            self._fh.close()
            self._fh = None
            # staged blobs wait in tmp/ until a whole bundle verified (mirror.bundle.importer)
            final = self.store.paths.staged(actual) if self.stage else self.store.paths.blob(actual)
            os.replace(self.tmp_path, final)
            fsync_dir(final.parent)
        except OSError as exc:
            self.keep_partial = False
            raise store_error(exc, self.tmp_path, "publishing") from exc
        self.digest = actual
        return actual

    def close(self) -> None:
        if self._fh is not None:
            with contextlib.suppress(OSError):
                self._fh.close()
            self._fh = None
        # an empty partial has nothing to resume (e.g. the upstream answered 404)
        if self.digest is None and (not self.keep_partial or self.offset == 0):
            with contextlib.suppress(FileNotFoundError):
                self.tmp_path.unlink()

    def __enter__(self) -> BlobWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def fetch_into(
    store: BlobStore,
    digest: str | None,
    size: int | None,
    fetch: Callable[[BlobWriter], int],
    *,
    what: str,
    on_resumed: Callable[[int], None] | None = None,
    retry_once: Callable[[MirrorError], bool] | None = None,
) -> tuple[str, int]:
    """Stream one blob into the store with `fetch(writer) -> bytes received`; return (digest,
    bytes received). A partial left by an earlier run is resumed (`on_resumed(offset)` is told);
    if the resumed blob then fails verification, it is fetched once more whole. Any other
    MirrorError gets one more try when `retry_once(error)` says so (e.g. after refreshing an
    expired URL). `what` names the blob in log messages.
    """
    received = 0
    for attempt in (1, 2):
        writer = store.writer(digest, size)
        resumed = writer.offset > 0
        if resumed and on_resumed is not None:
            on_resumed(writer.offset)
        try:
            with writer:
                received += fetch(writer)
                return writer.commit(), received
        except IntegrityError:
            if resumed and attempt == 1:
                log.warning("resumed download of %s failed verification; starting over", what)
                continue  # the writer removed the stale partial: fetch it whole
            raise
        except MirrorError as exc:
            if attempt == 1 and retry_once is not None and retry_once(exc):
                continue
            raise
    raise AssertionError("unreachable")


class BlobStore:
    """Content-addressed storage under a mirror root, which is also an OCI image layout."""

    def __init__(self, paths: MirrorPaths) -> None:
        self.paths = paths

    def init_layout(self) -> None:
        """Create the directories and OCI layout files if missing (idempotent)."""
        try:
            self.paths.blobs.mkdir(parents=True, exist_ok=True)
            self.paths.tmp.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise store_error(exc, self.paths.root, "creating") from exc
        if not self.paths.oci_layout.exists():
            atomic_write(self.paths.oci_layout, OCI_LAYOUT)
        if not self.paths.index_json.exists():
            atomic_write(self.paths.index_json, json.dumps(EMPTY_INDEX, indent=2).encode())

    def has(self, digest: str) -> bool:
        return self.paths.blob(digest).is_file()

    def size(self, digest: str) -> int:
        return self.paths.blob(digest).stat().st_size

    def open(self, digest: str) -> BinaryIO:
        try:
            return open(self.paths.blob(digest), "rb")  # noqa: SIM115
        except FileNotFoundError:
            raise StoreError(
                f"blob {digest} is missing from the store",
                hint="run `mirror verify` then `mirror sync`",
            ) from None

    def writer(
        self,
        expected_digest: str | None,
        expected_size: int | None,
        *,
        resume: bool = True,
        stage: bool = False,
    ) -> BlobWriter:
        return BlobWriter(self, expected_digest, expected_size, resume=resume, stage=stage)

    def is_staged(self, digest: str) -> bool:
        return self.paths.staged(digest).is_file()

    def publish_staged(self, digest: str) -> None:
        """Move a verified staged blob into blobs/ (one rename)."""
        try:
            os.replace(self.paths.staged(digest), self.paths.blob(digest))
        except OSError as exc:
            raise store_error(exc, self.paths.blob(digest), "publishing") from exc

    def discard(self, digest: str) -> None:
        """Remove any partial or staged copy of `digest` (after a failed verification)."""
        for path in (self.paths.partial(digest), self.paths.staged(digest)):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    def put_bytes(self, data: bytes, expected_digest: str | None = None) -> str:
        with self.writer(expected_digest, len(data), resume=False) as w:
            w.write(data)
            return w.commit()

    def partial_size(self, digest: str) -> int:
        try:
            return self.paths.partial(digest).stat().st_size
        except FileNotFoundError:
            return 0

    def verify(self, digest: str) -> bool:
        """Re-hash a stored blob; True if its content matches its name."""
        actual, _ = sha256_file(self.paths.blob(digest))
        return actual == digest

    def delete(self, digest: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.paths.blob(digest).unlink()

    def iter_digests(self) -> Iterator[str]:
        """Every well-named blob on disk (stray names are ignored, not trusted)."""
        if not self.paths.blobs.is_dir():
            return
        for entry in os.scandir(self.paths.blobs):
            if entry.is_file() and is_hex64(entry.name):
                yield "sha256:" + entry.name

    def clean_tmp(self, keep: set[str] | None = None) -> int:
        """Remove partial files except resumable ones named in `keep`; return count removed."""
        removed = 0
        if not self.paths.tmp.is_dir():
            return 0
        for entry in os.scandir(self.paths.tmp):
            if keep and entry.name in keep:
                continue
            with contextlib.suppress(OSError):
                os.unlink(entry.path)
                removed += 1
        return removed
