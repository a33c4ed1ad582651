"""`mirror serve` under load: 50 concurrent blob downloads from a real server process.

The root (tests/serve_root.py) holds 4 layers of 32 MiB behind one tag. 50 clients (asyncio +
httpx, one connection each) ask at once, a third of them for a Range; every client waits until
all 50 have their response headers before reading its body, so all 50 responses are in flight
together while the server can only buffer. Every body is checked against the bytes on disk
(sha256 and length; status and Content-Range for ranges), and the server's peak RSS
(VmHWM in /proc/<pid>/status) must stay far below what whole blobs in memory would take.
No timing asserts: the machine is shared.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.serve_root import MiB, ServeRoot, build_root, start_mirror_serve, stop

BLOBS = 4
BLOB_SIZE = 32 * MiB
CLIENTS = 50
# What a stalled download may hold in the server: the chunk being read plus the one the
# transport has not flushed (plus the one held back while a first GET is verified): 1 MiB
# chunks today, so ~3 MiB each. Measured: VmHWM grows ~140-160 MiB for 50 stalled downloads,
# with h11/asyncio and with httptools/uvloop alike. A server that read whole blobs into memory
# holds up to 50 x 32 MiB = 1600 MiB less what the kernel's socket buffers took (measured: a
# whole-blob variant grew by ~1150 MiB). The bound is a quarter of 1600 MiB, 400 MiB above
# the idle server: room for chunks of up to ~2-4 MiB, and still far below whole blobs.
RSS_ALLOWANCE = CLIENTS * BLOB_SIZE // 4


@dataclass(frozen=True)
class Want:
    digest: str
    range: tuple[int, int] | None  # inclusive byte span asked for, None for the whole blob
    header: str | None


@dataclass
class Got:
    status: int
    length: int
    sha256: str
    content_range: str | None


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServeRoot, str, int]]:
    root = build_root(tmp_path_factory.mktemp("serveload") / "root", [BLOB_SIZE] * BLOBS)
    proc, base = start_mirror_serve(root.root)
    try:
        yield root, base, proc.pid
    finally:
        stop(proc)


def _vm_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} for {pid}")


def _plan(root: ServeRoot) -> list[Want]:
    """50 requests over the 4 blobs; every third a Range of one of three forms."""
    rng = random.Random(7)
    wants = []
    for i in range(CLIENTS):
        layer = root.layers[i % BLOBS]
        size = layer.size
        if i % 3 != 2:
            wants.append(Want(layer.digest, None, None))
            continue
        form = (i // 3) % 3
        if form == 0:  # bytes=a-b, unaligned to any chunk
            start = rng.randrange(0, size - 1)
            end = min(size - 1, start + rng.randrange(1, 6 * MiB))
            wants.append(Want(layer.digest, (start, end), f"bytes={start}-{end}"))
        elif form == 1:  # bytes=a- (to the end)
            start = rng.randrange(0, size)
            wants.append(Want(layer.digest, (start, size - 1), f"bytes={start}-"))
        else:  # bytes=-n (the last n bytes)
            n = rng.randrange(1, 3 * MiB)
            wants.append(Want(layer.digest, (size - n, size - 1), f"bytes=-{n}"))
    return wants


def _expected(root: ServeRoot, want: Want) -> tuple[int, str]:
    if want.range is None:
        return next(lay.size for lay in root.layers if lay.digest == want.digest), want.digest
    path = next(lay.path for lay in root.layers if lay.digest == want.digest)
    start, end = want.range
    with open(path, "rb") as fh:
        fh.seek(start)
        data = fh.read(end - start + 1)
    return len(data), "sha256:" + hashlib.sha256(data).hexdigest()


async def _download_all(
    root: ServeRoot, base: str, wants: list[Want], pid: int, rss_while_stalled: list[int]
) -> list[Got]:
    barrier = asyncio.Barrier(len(wants))
    limits = httpx.Limits(max_connections=len(wants), max_keepalive_connections=0)
    timeout = httpx.Timeout(60.0)
    async with httpx.AsyncClient(
        base_url=base, limits=limits, timeout=timeout, trust_env=False
    ) as client:

        async def one(want: Want) -> Got:
            headers = {"Range": want.header} if want.header else {}
            async with client.stream("GET", root.blob_path(want.digest), headers=headers) as resp:
                # every response has its headers before anyone reads a body
                if await barrier.wait() == 0:
                    await asyncio.sleep(0.5)  # let the server fill whatever it buffers
                    rss_while_stalled.append(_vm_kib(pid, "VmRSS"))
                await barrier.wait()
                hasher = hashlib.sha256()
                length = 0
                async for chunk in resp.aiter_raw():
                    hasher.update(chunk)
                    length += len(chunk)
                return Got(
                    resp.status_code,
                    length,
                    "sha256:" + hasher.hexdigest(),
                    resp.headers.get("content-range"),
                )

        return await asyncio.wait_for(asyncio.gather(*(one(w) for w in wants)), timeout=120)


def test_fifty_concurrent_downloads_are_right_and_memory_stays_bounded(
    served: tuple[ServeRoot, str, int],
) -> None:
    root, base, pid = served
    wants = _plan(root)
    assert sum(w.range is not None for w in wants) == CLIENTS // 3
    # the idle server, everything imported and index.json read (startup answered /v2/)
    baseline_kib = _vm_kib(pid, "VmHWM")

    stalled: list[int] = []
    got = asyncio.run(_download_all(root, base, wants, pid, stalled))

    for want, res in zip(wants, got, strict=True):
        length, digest = _expected(root, want)
        assert (res.length, res.sha256) == (length, digest), want
        if want.range is None:
            assert res.status == 200, want
        else:
            start, end = want.range
            assert res.status == 206, want
            assert res.content_range == f"bytes {start}-{end}/{BLOB_SIZE}", want
    peak_kib = _vm_kib(pid, "VmHWM")
    grew = (peak_kib - baseline_kib) * 1024
    assert grew < RSS_ALLOWANCE, (
        f"server peak RSS grew by {grew / MiB:.0f} MiB under {CLIENTS} downloads "
        f"(bound {RSS_ALLOWANCE / MiB:.0f} MiB; whole blobs would be "
        f"{CLIENTS * BLOB_SIZE / MiB:.0f} MiB): baseline {baseline_kib // 1024} MiB, "
        f"peak {peak_kib // 1024} MiB, {stalled[0] // 1024} MiB with every client stalled"
    )


def test_server_still_answers_after_the_load(served: tuple[ServeRoot, str, int]) -> None:
    root, base, _ = served
    with httpx.Client(base_url=base, trust_env=False, timeout=30) as client:
        resp = client.get(root.manifest_path())
        assert resp.status_code == 200
        assert resp.content == root.manifest
        head = client.head(root.blob_path(root.layers[0].digest))
        assert head.status_code == 200
        assert int(head.headers["content-length"]) == BLOB_SIZE
