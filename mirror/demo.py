"""`mirror demo`: the whole sync flow offline, against a built-in sample catalog.

Starts the fake NGC server (mirror.fakengc, the same one the tests use) on 127.0.0.1 with a
catalog built from a real 2019 NGC listing, syncs twice (the second run is the nightly no-op),
then verifies the store. Nothing leaves this machine.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from mirror.config import HttpSettings, NgcSettings, Selection, Settings


def run_demo(home: Path, *, out: Callable[[str], object]) -> None:
    from mirror.blobstore import BlobStore
    from mirror.db import Database, open_catalog_db
    from mirror.fakengc import FakeNGC, seed_catalog
    from mirror.paths import MirrorPaths
    from mirror.sync import run_sync
    from mirror.verify import verify_store

    home = home.resolve()
    with FakeNGC(seed_catalog()) as server:
        settings = Settings(
            home=home,
            ngc=NgcSettings(api_url=server.url),
            http=HttpSettings(retries=2, backoff=0.1),
            select=(Selection(pattern="nvidia/*", latest=1),),
        )
        out(f"sample NGC catalog serving on {server.url} (loopback only)\n")
        out(f"mirror root: {home}\n\n")
        first = run_sync(settings)
        out(
            f"first sync:  {first.listed} entries listed, {first.new} new, "
            f"{first.files_fetched} files fetched ({first.bytes_fetched} bytes), "
            f"{first.requests} requests, outcome {first.outcome}\n"
        )
        second = run_sync(settings)
        out(
            f"second sync: {second.unchanged} unchanged, {second.files_fetched} files fetched, "
            f"{second.requests} requests (listing pages only), outcome {second.outcome}\n"
        )
    paths = MirrorPaths(home)
    db = Database(open_catalog_db(paths.db))
    report = verify_store(BlobStore(paths), db)
    db.engine.dispose()
    out(
        f"verify:      {report.checked} blobs re-hashed, "
        f"{'clean' if report.clean else 'DAMAGED'}\n\n"
    )
    from mirror.render import search_text
    from mirror.searching import run_search

    out("$ mirror search bert squad --limit 3\n")
    out(search_text(run_search(home, "bert squad", limit=3), show_all=False) + "\n")
    out(
        "next:\n"
        f"  MIRROR_HOME={home} mirror status\n"
        f"  MIRROR_HOME={home} mirror search resnet 18 --all\n"
        f"  MIRROR_HOME={home} mirror verify\n"
        f"  MIRROR_HOME={home} mirror serve   # then open http://127.0.0.1:5000/\n"
        "  cp config.example.toml mirror.toml  # then point [ngc] api_url at NGC and run\n"
        "  mirror --config mirror.toml sync --dry-run\n"
    )
