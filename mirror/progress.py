"""Progress bars for a TTY (rich); silence otherwise. Only the CLI creates these."""

from __future__ import annotations

import threading
from typing import Any


class Progress:
    """Receives byte progress; the CLI renders it on a TTY. The default does nothing."""

    def start(self, total_bytes: int, files: int) -> None: ...
    def advance(self, nbytes: int) -> None: ...
    def file_done(self) -> None: ...
    def close(self) -> None: ...


class RichProgress(Progress):
    """A byte progress bar on stderr, safe to advance from worker threads."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )
        from rich.progress import Progress as Bar

        self._bar: Any = Bar(
            "{task.description}",
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=Console(stderr=True),
            transient=True,
        )
        self._task: Any = None
        self._lock = threading.Lock()
        self._files = 0
        self._done = 0

    def start(self, total_bytes: int, files: int) -> None:
        if files == 0:
            return
        self._files = files
        self._bar.start()
        self._task = self._bar.add_task(f"fetching 0/{files} files", total=total_bytes)

    def advance(self, nbytes: int) -> None:
        if self._task is not None:
            with self._lock:
                self._bar.advance(self._task, nbytes)

    def file_done(self) -> None:
        if self._task is not None:
            with self._lock:
                self._done += 1
                self._bar.update(
                    self._task, description=f"fetching {self._done}/{self._files} files"
                )

    def close(self) -> None:
        if self._task is not None:
            self._bar.stop()
            self._task = None


def make_progress(*, enabled: bool) -> Progress:
    return RichProgress() if enabled else Progress()
