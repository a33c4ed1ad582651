"""Filesystem primitives: publish by rename, fsync, and the one-writer lock."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

from mirror.errors import DiskFullError, LockHeldError, StoreError


def fsync_dir(path: Path) -> None:
    """fsync a directory so a rename inside it survives a power cut."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def store_error(exc: OSError, path: Path, action: str) -> StoreError:
    """Translate an OSError into our StoreError with a hint that fits the cause."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return DiskFullError(
            f"disk full while {action} {path}", hint="free space or move MIRROR_HOME"
        )
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return StoreError(
            f"permission denied while {action} {path}", hint="check the owner and mode"
        )
    return StoreError(f"{exc.strerror or exc} while {action} {path}")


def atomic_write(path: Path, data: bytes) -> None:
    """Write `data` to `path` so readers see the old file or the new one, never a mix.

    Same-directory temp file, fsync, os.replace, fsync the directory; the temp file is
    removed in `finally` if anything fails (STYLE.md habit 3).
    """
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except OSError as exc:
        raise store_error(exc, path, "writing") from exc
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


class MirrorLock:
    """An exclusive, non-blocking flock on `<root>/lock`, naming its holder.

    flock is released by the kernel when the process dies, so a crashed sync never leaves a
    stale lock. The lock saves work; correctness does not depend on it (blobs are published
    by rename and rows only point at published blobs), so a lost lock on NFS is survivable.
    """

    def __init__(self, path: Path, command: str) -> None:
        self.path = path
        self.command = command
        self._fd: int | None = None

    def acquire(self) -> MirrorLock:
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise store_error(exc, self.path, "opening lock") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = self._describe_holder(fd)
            os.close(fd)
            raise LockHeldError(str(self.path), holder) from None
        info = {
            "pid": os.getpid(),
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "command": self.command,
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        self._fd = fd
        return self

    @staticmethod
    def _describe_holder(fd: int) -> str:
        try:
            raw = os.pread(fd, 4096, 0)
            info = json.loads(raw.decode() or "{}")
            return (
                f"pid {info.get('pid', '?')}, `mirror {info.get('command', '?')}`"
                f" started {info.get('started', '?')}"
            )
        except (OSError, ValueError):
            return "holder unknown"

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> MirrorLock:
        return self.acquire()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


@contextlib.contextmanager
def removing(path: Path) -> Iterator[Path]:
    """Yield `path` and remove it afterwards whatever happens."""
    try:
        yield path
    finally:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
