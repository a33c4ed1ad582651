"""Upstream misbehaviour: wrong hashes, 429, 5xx storms, malformed JSON, broken bodies."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

from sqlalchemy import select

from mirror.db import Database, open_catalog_db
from mirror.fakengc import FakeNGC, Fault, seed_catalog
from mirror.schema import File
from mirror.sync import run_sync
from tests.conftest import cli_env, make_settings, run_mirror, write_config


def test_wrong_sha256_rejects_that_file_and_the_rest_completes(home: Path, tmp_path: Path) -> None:
    cat = seed_catalog(limit=6, include_resources=False)
    bad_entry = cat.of_kind("model")[2]
    bad_file = next(f for f in bad_entry.versions[0].files if f.size)
    bad_file.listed_sha256_b64 = "q" * 43 + "="  # a valid base64 sha256 of other bytes
    with FakeNGC(cat) as fake:
        cfg = write_config(tmp_path / "m.toml")
        proc = run_mirror(["--config", str(cfg), "sync", "--json"], cli_env(home, fake.url))
    assert proc.returncode == 6, proc.stderr
    report = json.loads(proc.stdout)
    assert report["outcome"] == "partial" and len(report["failures"]) == 1
    assert bad_entry.name in report["failures"][0] and "digest mismatch" in report["failures"][0]
    assert "failed" in proc.stderr
    blobs = {p.name for p in (home / "blobs" / "sha256").iterdir()}
    assert bad_file.sha256_hex not in blobs  # nothing stored for it under any name
    assert list((home / "tmp").iterdir()) == []  # and no partial kept
    others = [f for e in cat.of_kind("model") if e is not bad_entry for f in e.versions[0].files]
    assert {f.sha256_hex for f in others} <= blobs
    db = Database(open_catalog_db(home / "mirror.db"))
    with db.session() as s:
        listed_hex = base64.b64decode(bad_file.listed_sha256_b64).hex()
        rows = s.scalars(select(File).where(File.sha256 == listed_hex)).all()
        assert len(rows) == 1 and rows[0].blob_digest is None
    # the failed entry is retried by the next run (and fails again, still exit 6)
    with FakeNGC(cat) as fake:
        again = run_mirror(["--config", str(cfg), "sync", "--json"], cli_env(home, fake.url))
        assert again.returncode == 6
        assert json.loads(again.stdout)["incomplete"] == 1


def test_429_with_retry_after_then_success(home: Path) -> None:
    with FakeNGC(seed_catalog(limit=3)) as fake:
        fake.add_fault(Fault(r"^/v2/search/", status=429, retry_after="0", times=2))
        fake.add_fault(Fault(r"^/_dl/", status=429, retry_after="0", times=1))
        report = run_sync(make_settings(home, fake.url))
        assert report.outcome == "ok" and not report.failures
        assert fake.count(r"^/v2/search/catalog/resources/MODEL") == 3  # 2 refused + 1 answered


def test_500_storm_beyond_retry_budget_exits_3_naming_the_url(home: Path, tmp_path: Path) -> None:
    with FakeNGC(seed_catalog(limit=3)) as fake:
        fake.add_fault(Fault(r"^/v2/search/", status=500, times=None))
        proc = run_mirror(["sync"], cli_env(home, fake.url))
        assert proc.returncode == 3, proc.stderr
        assert "HTTP 500" in proc.stderr and "3 attempts" in proc.stderr
        assert f"{fake.url}/v2/search/catalog/resources/MODEL" in proc.stderr
        assert "Traceback" not in proc.stderr
        status = json.loads(run_mirror(["status", "--json"], cli_env(home, fake.url)).stdout)
        assert status["runs"][0]["outcome"] == "failed"


def test_500_storm_on_every_entry_exits_3(home: Path, tmp_path: Path) -> None:
    with FakeNGC(seed_catalog(limit=2, include_resources=False)) as fake:
        fake.add_fault(Fault(r"^/v2/models/", status=503, times=None))
        proc = run_mirror(["sync"], cli_env(home, fake.url))
        assert proc.returncode == 3, proc.stderr
        assert "HTTP 503" in proc.stderr


def test_malformed_json_is_a_clear_error(home: Path) -> None:
    with FakeNGC(seed_catalog(limit=2)) as fake:
        fake.add_fault(Fault(r"^/v2/search/", body=b'{"resultTotal": 3, "results": [', times=None))
        proc = run_mirror(["sync"], cli_env(home, fake.url))
        assert proc.returncode == 3
        assert "malformed JSON" in proc.stderr and "/v2/search/catalog/resources" in proc.stderr
        assert "Traceback" not in proc.stderr


def test_malformed_entry_fails_alone(home: Path) -> None:
    cat = seed_catalog(limit=4, include_resources=False)
    victim = cat.of_kind("model")[1]
    with FakeNGC(cat) as fake:
        fake.add_fault(
            Fault(rf"/versions.*{victim.name}|{victim.name}/versions", body=b"[1,2", times=None)
        )
        report = run_sync(make_settings(home, fake.url))
        assert report.outcome == "partial"
        assert len(report.failures) == 1 and victim.name in report.failures[0]
        assert "malformed JSON" in report.failures[0]
        assert report.refreshed == 3


def test_truncated_and_corrupt_bodies_are_retried_and_verified(home: Path) -> None:
    cat = seed_catalog(limit=3, include_resources=False, file_size=200_000)
    with FakeNGC(cat) as fake:
        fake.add_fault(Fault(r"^/_dl/", truncate_at=50_000, times=2))
        fake.add_fault(Fault(r"^/_dl/", corrupt=True, times=1))
        report = run_sync(make_settings(home, fake.url))
        # the corrupt body fails its digest (one entry partial); truncations resume with Range
        assert len(report.failures) == 1 and "digest mismatch" in report.failures[0]
        ranged = [r for r in fake.requests if r.path.startswith("/_dl/") and "range" in r.headers]
        assert any(r.headers["range"] == "bytes=50000-" for r in ranged)
        again = run_sync(make_settings(home, fake.url))
        assert again.outcome == "ok" and again.files_fetched == 1


def test_an_expired_download_url_is_refreshed_once(home: Path) -> None:
    cat = seed_catalog(limit=1, include_resources=False)
    with FakeNGC(cat) as fake:
        fake.add_fault(Fault(r"^/_dl/", status=403, times=1))  # S3: "Request has expired"
        report = run_sync(make_settings(home, fake.url, retries=0))
        assert report.outcome == "ok", report.failures
        listings = [r for r in fake.requests if re.match(r"^/v2/models/org/.*/files$", r.path)]
        assert len(listings) == 2  # the listing again, for fresh URLs


def test_an_url_that_stays_refused_fails_that_entry_only(home: Path) -> None:
    cat = seed_catalog(limit=2, include_resources=False)
    refused = cat.of_kind("model")[0]
    with FakeNGC(cat) as fake:
        fake.add_fault(Fault(rf"^/_dl/model/nvidia/_/{refused.name}/", status=403, times=None))
        report = run_sync(make_settings(home, fake.url, retries=0))
        assert report.outcome == "partial"
        assert report.failures  # one line per file of that entry; the other entry is whole
        assert all(refused.name in f and "HTTP 403" in f for f in report.failures)
