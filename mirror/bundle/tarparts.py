"""A tar stream split into parts of at most N bytes, each hashed, and read back verified.

Parts are named `bundle.tar.000`, `.001`, …; each is written to `<name>.partial`, fsynced and
renamed, and its sha256 and size go into the manifest, so each part can be checked on its own
(`sha256sum bundle.tar.003`). The reader joins the parts and verifies each one as its last byte
is consumed; a missing, truncated, reordered or altered part is an IntegrityError naming it.
"""

from __future__ import annotations

import hashlib
import os
import re
import tarfile
from pathlib import Path
from typing import Any

from mirror.bundle.manifest import CATALOG, PART_PREFIX, Part
from mirror.errors import IntegrityError
from mirror.fsutil import fsync_dir, store_error

BLOB_NAME = re.compile(r"blobs/sha256/([0-9a-f]{64})")
ALLOWED = {CATALOG, "oci-layout", "index.json"}


class PartWriter:
    """A write-only file object that spreads its bytes over parts of `max_size` bytes."""

    def __init__(self, dest: Path, max_size: int) -> None:
        if max_size < 1024 * 1024:
            raise ValueError("part size must be at least 1 MiB")
        self.dest = dest
        self.max_size = max_size
        self.parts: list[Part] = []
        self._fh: Any = None
        self._hash: Any = None
        self._size = 0

    def _open(self) -> None:
        name = f"{PART_PREFIX}{len(self.parts):03d}"
        self._path = self.dest / name
        try:
            self._fh = open(self._path.with_name(name + ".partial"), "wb")  # noqa: SIM115
        except OSError as exc:
            raise store_error(exc, self._path, "creating") from exc
        self._hash = hashlib.sha256()
        self._size = 0

    def _close_part(self) -> None:
        if self._fh is None:
            return
        try:
            self._fh.flush()
            os.fsync(self._fh.fileno())
            self._fh.close()
            os.replace(self._path.with_name(self._path.name + ".partial"), self._path)
        except OSError as exc:
            raise store_error(exc, self._path, "writing") from exc
        self.parts.append(
            Part(name=self._path.name, size=self._size, sha256=self._hash.hexdigest())
        )
        self._fh = None

    def write(self, data: bytes) -> int:
        view = memoryview(data)
        while view:
            if self._fh is None:
                self._open()
            room = self.max_size - self._size
            chunk = view[:room]
            try:
                self._fh.write(chunk)
            except OSError as exc:
                raise store_error(exc, self._path, "writing") from exc
            self._hash.update(chunk)
            self._size += len(chunk)
            view = view[len(chunk) :]
            if self._size >= self.max_size:
                self._close_part()
        return len(data)

    def close(self) -> list[Part]:
        self._close_part()
        fsync_dir(self.dest)
        return self.parts


class PartReader:
    """A read-only file object over the manifest's parts, verifying each as it ends."""

    def __init__(self, src: Path, parts: list[Part]) -> None:
        self.src = src
        self.parts = parts
        self._index = -1
        self._fh: Any = None
        self._remaining = 0
        self._next()

    def _next(self) -> None:
        if self._fh is not None:
            self._finish()
        self._index += 1
        if self._index >= len(self.parts):
            self._fh = None
            return
        part = self.parts[self._index]
        path = self.src / part.name
        try:
            size = path.stat().st_size
            self._fh = open(path, "rb")  # noqa: SIM115
        except FileNotFoundError:
            raise IntegrityError(
                f"part {part.name} is missing",
                hint="copy every bundle.tar.NNN part listed in the manifest",
            ) from None
        if size != part.size:
            raise IntegrityError(
                "part has the wrong size",
                expected=f"{part.size} bytes",
                actual=f"{size} bytes",
                subject=part.name,
            )
        self._hash = hashlib.sha256()
        self._remaining = part.size

    def _finish(self) -> None:
        part = self.parts[self._index]
        self._fh.close()
        actual = self._hash.hexdigest()
        if actual != part.sha256:
            raise IntegrityError(
                "part digest mismatch", expected=part.sha256, actual=actual, subject=part.name
            )

    def read(self, n: int = -1) -> bytes:
        out = bytearray()
        want = n if n >= 0 else 1 << 62
        while want and self._fh is not None:
            chunk = self._fh.read(min(want, self._remaining, 1 << 20))
            if not chunk:  # shorter than it claimed; the size check makes this unlikely
                raise IntegrityError("part ended early", subject=self.parts[self._index].name)
            self._hash.update(chunk)
            self._remaining -= len(chunk)
            out += chunk
            want -= len(chunk)
            if self._remaining == 0:
                self._next()
        return bytes(out)

    def drain(self) -> None:
        """Read to the end so every part, including the tail of the last, is verified."""
        while self._fh is not None:
            self.read(1 << 20)


def check_member(info: tarfile.TarInfo, seen: set[str], sizes: dict[str, int]) -> str | None:
    """Return the blob digest (or the file name) a member may be, or raise IntegrityError.

    Only regular files with the expected names are accepted: `..`, absolute paths, links,
    devices, duplicates and sizes other than the manifest's are refused. Directories are
    skipped (None).
    """
    name = info.name
    if info.isdir() and name.rstrip("/") in ("blobs", "blobs/sha256"):
        return None
    if not info.isreg():
        raise IntegrityError(
            f"tar member {name!r} is not a regular file (links and devices are refused)"
        )
    if name in seen:
        raise IntegrityError(f"tar member {name!r} appears twice")
    seen.add(name)
    m = BLOB_NAME.fullmatch(name)
    if m:
        digest = "sha256:" + m.group(1)
        if digest not in sizes:
            raise IntegrityError(f"tar member {name!r} is not listed in the manifest")
        if info.size != sizes[digest]:
            raise IntegrityError(
                "tar member size differs from the manifest",
                expected=str(sizes[digest]),
                actual=str(info.size),
                subject=name,
            )
        return digest
    if name in ALLOWED:
        if info.size > 1 << 34:
            raise IntegrityError(f"tar member {name!r} is implausibly large")
        return name
    raise IntegrityError(f"unexpected tar member {name!r} (absolute, '..' or unknown name)")
