"""`mirror search`: the offline query path. Keeps SQLAlchemy and httpx out of it.

The index answers from its own stored fields; the catalog DB is opened only when the index is
missing or of an older format and must be rebuilt first (then the next search is fast again).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from mirror.errors import MirrorError, UsageError
from mirror.paths import MirrorPaths

log = logging.getLogger(__name__)


def ensure_index(paths: MirrorPaths) -> bool:
    """Rebuild the search index if it is missing or of an older format; True if it did."""
    from index.writer import current_dir

    if current_dir(paths.search) is not None:
        return False
    _rebuild(paths)
    return True


def _rebuild(paths: MirrorPaths) -> None:
    from mirror.db import Database, open_catalog_db
    from mirror.fsutil import MirrorLock
    from mirror.indexing import rebuild_index

    if not paths.db.exists():
        raise MirrorError(
            f"no mirror at {paths.root}", hint="run `mirror sync` first, or set MIRROR_HOME"
        )
    log.warning("search index missing or outdated: rebuilding it from the catalog")
    with MirrorLock(paths.lock, "index rebuild"):
        db = Database(open_catalog_db(paths.db))
        try:
            rebuild_index(paths, db)
        finally:
            db.engine.dispose()


def run_search(
    home: Path,
    query: str,
    *,
    kind: str | None = None,
    framework: str | None = None,
    precision: str | None = None,
    limit: int | None = 20,
) -> dict[str, Any]:
    from index.search import Index, IndexMissing, QuerySyntaxError

    paths = MirrorPaths(home)
    if not query.strip():
        raise UsageError("empty query", hint="try `mirror search bert`")
    try:
        ix = Index(paths.search)
    except IndexMissing:
        _rebuild(paths)
        ix = Index(paths.search)
    try:
        result = ix.search(query, kind=kind, framework=framework, precision=precision, limit=limit)
    except QuerySyntaxError as exc:
        raise UsageError(
            f"query syntax: {exc}",
            hint="quote special characters, e.g. mirror search '\"seqLen=128\"'",
        ) from None
    finally:
        ix.close()
    return result.as_dict()
