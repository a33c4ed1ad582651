"""Run the fake NGC server as a process.

Example::

    python -m mirror.fakengc --seed --big-files 8x256MiB --data-dir /tmp/fakengc \\
        --ready-file /tmp/fakengc.url

prints the base URL on stdout once listening (and writes it to the ready file), then serves
until SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import signal
import sys
import tempfile
import threading
from pathlib import Path
from types import FrameType

from .catalog import FakeCatalog, FakeEntry, FakeFile, FakeVersion, seed_catalog
from .seed import det_bytes
from .server import FakeNGC, Fault

_BLOCK = 1 << 20
_UNITS = {
    "": 1,
    "b": 1,
    "k": 1 << 10,
    "kib": 1 << 10,
    "kb": 10**3,
    "m": 1 << 20,
    "mib": 1 << 20,
    "mb": 10**6,
    "g": 1 << 30,
    "gib": 1 << 30,
    "gb": 10**9,
    "t": 1 << 40,
    "tib": 1 << 40,
    "tb": 10**12,
}


def parse_size(text: str) -> int:
    """Parse ``1048576``, ``256MiB``, ``2GiB``, ``10MB`` (bare K/M/G/T are binary).

    Args:
        text: The size.

    Returns:
        Bytes.

    Raises:
        ValueError: Unrecognised size.
    """
    match = re.fullmatch(r"\s*(\d+)\s*([a-zA-Z]*)\s*", text)
    if match is None or match.group(2).lower() not in _UNITS:
        raise ValueError(f"bad size: {text!r}")
    return int(match.group(1)) * _UNITS[match.group(2).lower()]


def parse_big_files(spec: str) -> tuple[int, int]:
    """Parse ``COUNTxSIZE`` such as ``8x256MiB``.

    Returns:
        (count, size in bytes).
    """
    count, sep, size = spec.partition("x")
    if not sep or not count.strip().isdigit():
        raise ValueError(f"expected COUNTxSIZE, e.g. 8x256MiB, not {spec!r}")
    return int(count), parse_size(size)


def write_big_files(data_dir: Path, count: int, size: int) -> list[FakeFile]:
    """Create (or reuse) ``count`` deterministic files of ``size`` bytes under data_dir.

    Each file repeats a 1 MiB pseudo-random block seeded by its index, so writing is as
    fast as the disk; the SHA-256 is computed while writing and kept in a ``.sha256``
    sidecar, so a restarted server neither rewrites nor rehashes.

    Args:
        data_dir: Directory to hold the files (created if needed).
        count: Number of files.
        size: Size of each file in bytes.

    Returns:
        Disk-backed FakeFiles named ``file_000.bin``, ``file_001.bin``, ...
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    files = []
    for i in range(count):
        name = f"file_{i:03d}.bin"
        path, sidecar = data_dir / name, data_dir / f"{name}.sha256"
        digest = _reuse(path, sidecar, size)
        if digest is None:
            digest = _write(path, det_bytes(f"bigfiles/{i}", _BLOCK), size)
            sidecar.write_text(f"{digest.hex()} {size}\n")
        file = FakeFile(path=name, disk_path=path)
        file.set_known_digest(digest)
        files.append(file)
    return files


def _reuse(path: Path, sidecar: Path, size: int) -> bytes | None:
    try:
        if path.stat().st_size != size:
            return None
        hex_digest, recorded = sidecar.read_text().split()
        return bytes.fromhex(hex_digest) if int(recorded) == size else None
    except (OSError, ValueError):
        return None


def _write(path: Path, block: bytes, size: int) -> bytes:
    hasher = hashlib.sha256()
    tmp = path.with_name(path.name + ".part")
    with open(tmp, "wb") as fh:  # written under a temporary name: never reuse a partial file
        left = size
        while left > 0:
            piece = block if left >= len(block) else block[:left]
            fh.write(piece)
            hasher.update(piece)
            left -= len(piece)
    os.replace(tmp, path)
    return hasher.digest()


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m mirror.fakengc",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--host", default="127.0.0.1", help="loopback address to bind")
    p.add_argument("--port", type=int, default=0, help="TCP port (0: any free port)")
    p.add_argument("--seed", action="store_true", help="serve the 2019 seed catalog")
    p.add_argument(
        "--big-files",
        metavar="COUNTxSIZE",
        help="add model nvidia/bench/bigfiles:1 with COUNT disk files of SIZE",
    )
    p.add_argument(
        "--data-dir",
        type=Path,
        default=Path(tempfile.gettempdir()) / "mirror-fakengc",
        help="where --big-files are written and reused (default: %(default)s)",
    )
    p.add_argument("--throttle-bps", type=int, help="pace matching bodies at N bytes/s")
    p.add_argument(
        "--throttle-path",
        default=r"^/_dl/",
        help="regex of paths to throttle (default: %(default)s)",
    )
    p.add_argument(
        "--api-key-env", metavar="VAR", help="require the API key held in environment variable VAR"
    )
    p.add_argument("--ready-file", type=Path, help="write the base URL here once listening")
    p.add_argument("--search-page-size", type=int, default=100)
    p.add_argument("--list-page-size", type=int, default=1000)
    p.add_argument("--url-page-size", type=int, default=25)
    return p


def _build_catalog(args: argparse.Namespace, parser: argparse.ArgumentParser) -> FakeCatalog:
    catalog = seed_catalog() if args.seed else FakeCatalog()
    if args.big_files:
        try:
            count, size = parse_big_files(args.big_files)
        except ValueError as exc:
            parser.error(str(exc))
        files = write_big_files(args.data_dir / "bigfiles", count, size)
        catalog.add(
            FakeEntry(
                kind="model",
                org="nvidia",
                team="bench",
                name="bigfiles",
                display_name="Benchmark big files",
                description=f"{count} files of {size} bytes served from disk for benchmarks.",
                versions=[FakeVersion(version_id="1", files=files)],
            )
        )
    return catalog


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m mirror.fakengc``.

    Args:
        argv: Arguments (default: ``sys.argv[1:]``).

    Returns:
        Process exit status.
    """
    parser = _parser()
    args = parser.parse_args(argv)
    if args.ready_file is not None:
        args.ready_file.unlink(missing_ok=True)  # a stale file must not look "ready"
    api_key = None
    if args.api_key_env:
        api_key = os.environ.get(args.api_key_env)
        if not api_key:
            parser.error(f"environment variable {args.api_key_env} is empty or not set")
    catalog = _build_catalog(args, parser)
    try:
        fake = FakeNGC(
            catalog,
            api_key=api_key,
            host=args.host,
            port=args.port,
            search_page_size=args.search_page_size,
            list_page_size=args.list_page_size,
            url_page_size=args.url_page_size,
        )
    except ValueError as exc:
        parser.error(str(exc))
    if args.throttle_bps:
        fake.add_fault(
            Fault(path_regex=args.throttle_path, throttle_bps=args.throttle_bps, times=None)
        )

    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    fake.start()
    try:
        print(fake.url, flush=True)
        if args.ready_file is not None:
            tmp = args.ready_file.with_name(args.ready_file.name + ".tmp")
            tmp.write_text(fake.url + "\n")
            os.replace(tmp, args.ready_file)  # atomic: a poller never reads half a URL
        while not stop.wait(0.5):
            pass
    finally:
        fake.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
