"""Incremental sync against the fake NGC server: no-op runs, single changes, removals."""

from __future__ import annotations

import re
from pathlib import Path

from sqlalchemy import select

from mirror.config import Selection
from mirror.db import Database, open_catalog_db
from mirror.fakengc import FakeFile, FakeNGC, FakeVersion, seed_catalog
from mirror.schema import Entry, File, Version
from mirror.sync import run_sync
from tests.conftest import make_settings

DL = r"^/_dl/"
LISTING = r"^/v2/search/"


def db_of(home: Path) -> Database:
    return Database(open_catalog_db(home / "mirror.db"))


def test_second_sync_requests_only_listing_pages_and_downloads_nothing(home: Path) -> None:
    cat = seed_catalog(limit=10)
    with FakeNGC(cat, search_page_size=4) as fake:
        s = make_settings(home, fake.url, search_page_size=4)
        first = run_sync(s)
        assert first.outcome == "ok" and first.files_fetched > 0
        latest_files = [f for e in cat.entries for f in e.versions[0].files]
        assert first.files_fetched == len(latest_files)
        # empty files need no request: their digest is known
        assert fake.count(DL) == len([f for f in latest_files if f.size])
        fake.clear_requests()
        second = run_sync(s)
        paths = [r.path for r in fake.requests]
        assert second.outcome == "ok"
        assert second.files_fetched == 0 and second.bytes_fetched == 0
        assert second.unchanged == first.listed
        # 10 models + resources, page size 4: only search pages, nothing else
        assert paths and all(re.match(LISTING, p) for p in paths), paths
        assert len(paths) == second.requests


def test_one_changed_entry_is_refetched_alone(home: Path) -> None:
    cat = seed_catalog(limit=8)
    with FakeNGC(cat) as fake:
        s = make_settings(home, fake.url)
        run_sync(s)
        target = cat.of_kind("model")[3]
        new = FakeVersion(
            "9.0",
            created="2030-01-01T00:00:00.000Z",
            updated="2030-01-01T00:00:00.000Z",
            files=[FakeFile("weights.bin", content=b"new weights " * 100)],
        )
        cat.add_version(target, new)
        fake.clear_requests()
        report = run_sync(s)
        assert report.changed == 1 and report.new == 0
        assert report.files_fetched == 1
        non_listing = {r.path for r in fake.requests if not re.match(LISTING, r.path)}
        assert non_listing and all(target.name in p for p in non_listing), non_listing
        db = db_of(home)
        with db.session() as sess:
            e = sess.scalar(select(Entry).where(Entry.path == target.resource_id))
            assert e is not None and e.latest_version == "9.0"
            f = sess.scalar(
                select(File).join(Version).where(Version.entry_id == e.id, Version.version == "9.0")
            )
            assert f is not None and f.blob_digest == "sha256:" + new.files[0].sha256_hex


def test_removed_entries_and_versions_are_marked_not_deleted(home: Path) -> None:
    cat = seed_catalog(limit=6, include_resources=False)
    with FakeNGC(cat) as fake:
        s = make_settings(home, fake.url)
        run_sync(s)
        gone = cat.of_kind("model")[0]
        cat.remove(gone)
        report = run_sync(s)
        assert report.removed == 1
        with db_of(home).session() as sess:
            e = sess.scalar(select(Entry).where(Entry.path == gone.resource_id))
            assert e is not None and e.removed_snapshot_id == report.snapshot_id


def test_selection_latest_and_kinds(home: Path) -> None:
    cat = seed_catalog(limit=4, versions_per_entry=3, include_resources=True)
    with FakeNGC(cat) as fake:
        s = make_settings(
            home, fake.url, select=(Selection(pattern="nvidia/*", kinds=("model",), latest=2),)
        )
        report = run_sync(s)
        models = [e for e in cat.of_kind("model") if e.team is None]
        assert report.versions_selected == len(models) * 2
        with db_of(home).session() as sess:
            stored = sess.scalars(
                select(Entry.path).join(Version).join(File).where(File.blob_digest.is_not(None))
            ).all()
            assert set(stored) == {e.resource_id for e in models}


def test_no_selection_means_metadata_only(home: Path) -> None:
    with FakeNGC(seed_catalog(limit=5)) as fake:
        report = run_sync(make_settings(home, fake.url, select=()))
        assert report.listed > 0 and report.files_fetched == 0
        assert fake.count(DL) == 0


def test_dry_run_plans_bytes_and_changes_nothing(home: Path) -> None:
    cat = seed_catalog(limit=5, include_resources=False)
    with FakeNGC(cat) as fake:
        s = make_settings(home, fake.url)
        plan = run_sync(s, dry_run=True)
        expected = sum(f.size for e in cat.of_kind("model") for f in e.versions[0].files)
        assert plan.bytes_to_fetch == expected and plan.new == 5
        assert fake.count(DL) == 0
        assert list((home / "blobs" / "sha256").iterdir()) == []
        real = run_sync(s)
        assert real.new == 5 and real.bytes_fetched == expected
        again = run_sync(s, dry_run=True)
        assert again.bytes_to_fetch == 0 and again.unchanged == 5


def test_paged_download_listing_and_tag_lists_are_walked_to_the_end(home: Path) -> None:
    cat = seed_catalog(limit=4, include_images=True)
    with FakeNGC(cat, url_page_size=1) as fake:  # one URL (and one tag) per page
        report = run_sync(make_settings(home, fake.url))
        assert report.outcome == "ok", report.failures
        entries = cat.of_kind("model") + cat.of_kind("resource")
        files = [f for e in entries for f in e.versions[0].files]
        assert report.files_fetched == len(files) and len(files) > len(entries)
        with db_of(home).session() as sess:
            for img in cat.of_kind("image"):
                e = sess.scalar(select(Entry).where(Entry.path == img.resource_id))
                assert e is not None and len(e.versions) == len(img.versions)
