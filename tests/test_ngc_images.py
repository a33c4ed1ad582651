"""Container repositories listed by the NGC API: catalogued with their tags, searchable."""

from __future__ import annotations

import json
import re
from pathlib import Path

from sqlalchemy import select

from mirror.db import Database, open_catalog_db
from mirror.fakengc import FakeNGC, seed_catalog
from mirror.schema import Entry
from mirror.sync import run_sync
from tests.conftest import cli_env, make_settings, run_mirror


def test_ngc_images_are_catalogued_with_tags_and_searchable(home: Path) -> None:
    cat = seed_catalog(limit=3, include_images=True)
    images = cat.of_kind("image")
    assert images
    with FakeNGC(cat, search_page_size=10) as fake:
        s = make_settings(home, fake.url)
        first = run_sync(s)
        assert first.outcome == "ok", first.failures
        assert fake.count(r"^/v2/repos/") >= len(images)
        db = Database(open_catalog_db(home / "mirror.db"))
        with db.session() as sess:
            rows = {e.path: e for e in sess.scalars(select(Entry).where(Entry.kind == "image"))}
            assert set(rows) == {i.resource_id for i in images}
            for img in images:
                tags = {v.version: v for v in rows[img.resource_id].versions}
                assert set(tags) == {v.version_id for v in img.versions}
                assert all(
                    v.manifest_digest and v.manifest_digest.startswith("sha256:")
                    for v in tags.values()
                )
        # a second sync with no change asks only for listing pages
        fake.clear_requests()
        again = run_sync(s)
        assert again.unchanged == first.listed and again.files_fetched == 0
        assert all(re.match(r"^/v2/search/", r.path) for r in fake.requests)
        env = cli_env(home, fake.url)
        target = next(i for i in images if i.name == "pytorch")
        found = json.loads(run_mirror(["search", "pytorch", "--json"], env).stdout)
        kinds = {
            g["kind"]
            for g in found["groups"]
            if any(m["path"] == target.resource_id for m in g["members"])
        }
        assert kinds == {"image"}
        shown = json.loads(run_mirror(["show", target.resource_id, "--json"], env).stdout)
        assert shown["command"].startswith(f"docker pull nvcr.io/{target.resource_id}:")
        assert {v["version"] for v in shown["versions"]} == {v.version_id for v in target.versions}
