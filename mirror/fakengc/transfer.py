"""Byte ranges and body transmission for the fake server's downloads.

The fast path hands disk files to ``socket.sendfile`` (zero-copy ``os.sendfile`` on Linux)
so a benchmark can pull several hundred MB/s from a separate server process. Faults that
must alter the byte stream (corrupt, throttle) fall back to Python-level chunked copying.
"""

from __future__ import annotations

import io
import re
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

_CHUNK = 1 << 20
_RANGE_RX = re.compile(r"(\d*)-(\d*)")


class RangeNotSatisfiable(Exception):
    """The Range header is valid but selects no byte of the file (HTTP 416)."""


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """Interpret a ``Range`` request header for a body of ``size`` bytes.

    Malformed headers are ignored as RFC 9110 requires, which is also what makes the
    CLI's ``bytes=0--1`` for empty files work: the whole (empty) body is sent with 200.
    Multi-range requests are likewise answered with the whole body.

    Args:
        header: The header value, or None.
        size: Size of the full body.

    Returns:
        ``(start, stop)`` (stop exclusive) for a 206 response, or None for a 200 with the
        whole body.

    Raises:
        RangeNotSatisfiable: The range starts at or after the end of the body.
    """
    if header is None:
        return None
    unit, _, spec = header.partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    match = _RANGE_RX.fullmatch(spec.strip())
    if match is None or match.group(0) == "-":
        return None
    first, last = match.groups()
    if not first:  # suffix range: the last N bytes
        count = int(last)
        if count == 0 or size == 0:
            raise RangeNotSatisfiable
        return max(0, size - count), size
    start = int(first)
    if last and int(last) < start:
        return None  # syntactically invalid: ignore the header
    if start >= size:
        raise RangeNotSatisfiable
    stop = size if not last else min(int(last) + 1, size)
    return start, stop


@dataclass(frozen=True)
class Shaping:
    """How a fault alters a body in flight.

    Attributes:
        truncate_at: Stop after this many body bytes (the caller then drops the connection).
        corrupt: Flip the bits of the byte in the middle of the body.
        throttle_bps: Pace the body at about this many bytes per second.
    """

    truncate_at: int | None = None
    corrupt: bool = False
    throttle_bps: int | None = None

    @property
    def active(self) -> bool:
        """Whether the body must be altered at all."""
        return self.truncate_at is not None or self.corrupt or bool(self.throttle_bps)


def _chunks(source: bytes | Path, start: int, stop: int) -> Iterator[bytes]:
    if isinstance(source, Path):
        with open(source, "rb") as fh:
            fh.seek(start)
            left = stop - start
            while left > 0 and (data := fh.read(min(_CHUNK, left))):
                left -= len(data)
                yield data
    else:
        view = memoryview(source)
        for i in range(start, stop, _CHUNK):
            yield bytes(view[i : min(i + _CHUNK, stop)])


def send_body(
    sock: socket.socket,
    wfile: io.BufferedIOBase,
    source: bytes | Path,
    start: int,
    stop: int,
    shaping: Shaping | None = None,
) -> int:
    """Send bytes ``[start, stop)`` of an in-memory body or a disk file.

    Headers must already be flushed: the disk fast path writes to the socket directly.

    Args:
        sock: The connection's socket (for ``sendfile``).
        wfile: The handler's unbuffered write file.
        source: The body bytes, or the path of a file to serve.
        start: First byte offset.
        stop: End offset (exclusive).
        shaping: Fault-driven alterations, or None.

    Returns:
        The number of bytes sent.
    """
    length = max(0, stop - start)
    limit = length
    if shaping is not None and shaping.truncate_at is not None:
        limit = min(length, max(0, shaping.truncate_at))
    if limit == 0:
        return 0
    if shaping is None or not (shaping.corrupt or shaping.throttle_bps):
        if isinstance(source, Path):
            with open(source, "rb") as fh:
                sock.sendfile(fh, start, limit)
        else:
            wfile.write(memoryview(source)[start : start + limit])
        return limit
    flip = length // 2 if shaping.corrupt else -1
    rate = shaping.throttle_bps or 0
    # Small pieces keep a throttled transfer smooth (about 20 writes per second).
    piece = max(1, rate // 20) if rate else _CHUNK
    began, sent = time.monotonic(), 0
    for chunk in _chunks(source, start, start + limit):
        if sent <= flip < sent + len(chunk):
            mutable = bytearray(chunk)
            mutable[flip - sent] ^= 0xFF
            chunk = bytes(mutable)
        for i in range(0, len(chunk), piece):
            part = chunk[i : i + piece]
            wfile.write(part)
            sent += len(part)
            if rate:
                delay = began + sent / rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
    return sent
