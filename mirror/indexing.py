"""Keeping the search index in step with the catalog (the only place that feeds index/).

After a sync or import, the entries it touched are re-indexed incrementally; a missing index,
or one of an older format, is rebuilt from the catalog. The index lives in `<root>/search/`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from mirror.catalog import chunked
from mirror.db import Database
from mirror.paths import MirrorPaths
from mirror.schema import Entry, Version

log = logging.getLogger(__name__)


@dataclass
class IndexReport:
    rebuilt: bool
    written: int
    removed: int


def _docs(s: Session, keys: Iterable[tuple[str, str]] | None = None) -> Iterator[object]:
    from index.schema import IndexDoc
    from mirror.plan import newest_first

    stmt = (
        select(Entry)
        .where(Entry.removed_snapshot_id.is_(None))
        .options(selectinload(Entry.versions).selectinload(Version.files))
    )
    if keys is None:
        entries: Iterable[Entry] = s.scalars(stmt)
    else:
        wanted_set = set(keys)
        paths = sorted({p for _, p in wanted_set})
        entries = (
            e
            for chunk in chunked(paths)
            for e in s.scalars(stmt.where(Entry.path.in_(chunk)))
            if (e.kind, e.path) in wanted_set
        )
    for e in entries:
        live = [v for v in e.versions if v.removed_snapshot_id is None]
        ordered = newest_first(live)
        mirrored = any(v.files and all(f.blob_digest for f in v.files) for v in live)
        yield IndexDoc(
            kind=e.kind,
            path=e.path,
            display_name=e.display_name or e.name,
            name=e.name,
            description=e.description or e.short_description,
            labels=list(e.labels or []),
            framework=e.framework,
            precision=e.precision,
            application=e.application,
            latest_version=e.latest_version or (ordered[0].version if ordered else None),
            versions=[v.version for v in ordered],
            updated=e.updated,
            mirrored=mirrored,
        )


def rebuild_index(paths: MirrorPaths, db: Database) -> IndexReport:
    from index.writer import rebuild

    with db.session() as s:
        n = rebuild(paths.search, _docs(s))  # type: ignore[arg-type]
    log.info("search index rebuilt: %d entries", n)
    return IndexReport(rebuilt=True, written=n, removed=0)


def refresh_index(
    paths: MirrorPaths,
    db: Database,
    changed: Iterable[tuple[str, str]],
    removed: Iterable[tuple[str, str]],
) -> IndexReport:
    """Re-index `changed` entries and drop `removed` ones; rebuild if there is no index."""
    from index.writer import current_dir, update

    if current_dir(paths.search) is None:
        return rebuild_index(paths, db)
    gone = [f"{k}:{p}" for k, p in removed]
    with db.session() as s:
        n = update(paths.search, _docs(s, changed), gone)  # type: ignore[arg-type]
    return IndexReport(rebuilt=False, written=n, removed=len(gone))
