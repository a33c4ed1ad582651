"""`mirror verify` finds damage (exit 4); `mirror gc` removes only garbage and fails closed."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from mirror.fakengc import FakeNGC, seed_catalog
from mirror.sync import run_sync
from tests.conftest import cli_env, make_settings, run_mirror


@pytest.fixture
def synced(home: Path) -> dict[str, str]:
    with FakeNGC(seed_catalog(limit=4, include_resources=False)) as fake:
        report = run_sync(make_settings(home, fake.url))
        assert report.outcome == "ok"
        return cli_env(home, fake.url)


def _blobs(home: Path) -> list[Path]:
    return sorted((home / "blobs" / "sha256").iterdir())


def test_verify_clean_store(home: Path, synced: dict[str, str]) -> None:
    proc = run_mirror(["verify", "--json"], synced)
    doc = json.loads(proc.stdout)
    assert proc.returncode == 0 and doc["clean"] and doc["checked"] == len(_blobs(home))


def test_verify_sample_checks_only_n(home: Path, synced: dict[str, str]) -> None:
    doc = json.loads(run_mirror(["verify", "--sample", "2", "--json"], synced).stdout)
    assert doc["checked"] == 2


def test_verify_reports_corrupt_missing_and_orphan(home: Path, synced: dict[str, str]) -> None:
    blobs = [b for b in _blobs(home) if b.stat().st_size > 0]
    corrupt, missing = blobs[0], blobs[1]
    data = bytearray(corrupt.read_bytes())
    data[len(data) // 2] ^= 0xFF
    corrupt.write_bytes(bytes(data))
    missing.unlink()
    orphan = home / "blobs" / "sha256" / hashlib.sha256(b"stray").hexdigest()
    orphan.write_bytes(b"stray")
    proc = run_mirror(["verify", "--json"], synced)
    assert proc.returncode == 4, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["corrupt"] == ["sha256:" + corrupt.name]
    assert doc["missing"] == ["sha256:" + missing.name]
    assert doc["orphans"] == ["sha256:" + orphan.name]
    assert "mirror verify --repair" in proc.stderr
    # gc refuses to run on a damaged store, deleting nothing
    before = {p.name for p in _blobs(home)}
    gc = run_mirror(["gc"], synced)
    assert gc.returncode == 4 and "deleted nothing" in gc.stderr
    assert {p.name for p in _blobs(home)} == before
    # repair forgets the damage; the next sync fetches it again
    assert run_mirror(["verify", "--repair"], synced).returncode == 0


def test_repair_then_sync_restores_the_store(home: Path) -> None:
    with FakeNGC(seed_catalog(limit=3, include_resources=False)) as fake:
        s = make_settings(home, fake.url)
        run_sync(s)
        victim = next(b for b in _blobs(home) if b.stat().st_size > 0)
        victim.write_bytes(b"rot")
        env = cli_env(home, fake.url)
        assert run_mirror(["verify", "--repair"], env).returncode == 0
        again = run_sync(s)
        assert again.files_fetched == 1 and again.outcome == "ok"
        assert run_mirror(["verify"], env).returncode == 0


def test_gc_removes_only_unreferenced(home: Path, synced: dict[str, str]) -> None:
    stray = home / "blobs" / "sha256" / ("ab" * 32)
    stray.write_bytes(b"unreferenced")
    partial = home / "tmp" / "anon-x.partial"
    partial.write_bytes(b"half")
    referenced = {p.name for p in _blobs(home)} - {stray.name}
    dry = json.loads(run_mirror(["gc", "--dry-run", "--json"], synced).stdout)
    assert dry["unreferenced"] == ["sha256:" + stray.name] and stray.exists()
    real = json.loads(run_mirror(["gc", "--json"], synced).stdout)
    assert real["removed"] == 1 and not stray.exists() and not partial.exists()
    assert {p.name for p in _blobs(home)} == referenced
    assert run_mirror(["verify"], synced).returncode == 0
