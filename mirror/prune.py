"""`mirror prune`: release the bytes of versions the config no longer selects, then gc.

A nightly `latest = 1` mirror otherwise grows forever: each new version adds its files and the
old ones stay referenced. Prune makes the store follow the config:

- a model, resource or NGC-listed image keeps the versions `[[select]]` picks among those
  upstream still lists (`latest` N complete uploads within `max_size`); an entry upstream
  removed, or that no `[[select]]` matches any more, keeps nothing;
- a `[[registry]]` repository keeps the tags its last sync chose (the `latest` N by creation
  date matching `tags`); tags that left that window, and repositories no longer configured,
  keep nothing.

Safety (what a cron job can run unattended):
- an entry whose selected versions are not all stored keeps everything it has: old bytes go
  only once their replacement is whole (a failed download never leaves an entry with less);
- a config that selects nothing at all is refused (a wrong `--config` would empty the store);
- rows before bytes (STYLE.md habit 8): file rows are unlinked in one transaction, then gc
  deletes what nothing references any more (a blob another version still uses stays);
- `--dry-run` rolls the transaction back and reports exactly what would go.
A released version stays in the catalog (search, `show`, the NGC API list it as not held here);
if it re-enters the window (a newer version withdrawn), the next sync fetches it again.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from mirror import catalog
from mirror.blobstore import BlobStore
from mirror.config import Selection, Settings
from mirror.db import Database
from mirror.errors import ConfigError, IntegrityError
from mirror.gc import collect_garbage, unreadable_referenced
from mirror.paths import MirrorPaths, names_a_registry
from mirror.plan import select_versions
from mirror.schema import Entry, File, Version

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class HeldVersion:
    """One version row and how much of it is stored (the planner's whole view of the DB)."""

    id: int
    version: str
    status: str
    size: int | None
    created: str | None
    removed: bool  # upstream no longer lists it (or, for [[registry]], the sync dropped it)
    listed: bool  # its file list was fetched (an empty list is a whole version too)
    files: int  # file rows
    stored: int  # file rows pointing at a blob


@dataclass(frozen=True)
class HeldEntry:
    kind: str
    path: str
    removed: bool
    versions: tuple[HeldVersion, ...]


@dataclass
class Decision:
    release: list[tuple[HeldEntry, HeldVersion]] = field(default_factory=list)
    held_back: list[str] = field(default_factory=list)  # entries kept whole: see `decide`


def wanted_versions(
    entry: HeldEntry, selections: Sequence[Selection], registry_paths: set[str]
) -> set[str]:
    """The version ids the config wants stored for `entry`."""
    live = [v for v in entry.versions if not v.removed]
    if entry.removed:
        return set()
    if entry.kind == "image" and entry.path in registry_paths:
        return {v.version for v in live}  # the sync already applied tags/latest/max_size
    if names_a_registry(entry.path):
        return set()  # a [[registry]] repository no longer configured
    return set(select_versions(entry.kind, entry.path, live, selections))


def decide(
    entries: Iterable[HeldEntry], selections: Sequence[Selection], registry_paths: set[str]
) -> Decision:
    """Which stored versions to release. Pure: property-tested in tests/test_prune.py."""
    out = Decision()
    for entry in entries:
        wanted = wanted_versions(entry, selections, registry_paths)
        by_id = {v.version: v for v in entry.versions if not v.removed}
        whole = all(
            v is not None and v.listed and v.stored == v.files
            for v in (by_id.get(w) for w in wanted)
        )
        extra = [v for v in entry.versions if v.stored and v.version not in wanted]
        if not extra:
            continue
        if not whole:
            out.held_back.append(f"{entry.kind} {entry.path}")
            continue
        out.release.extend((entry, v) for v in extra)
    return out


def held_entries(s: Session) -> list[HeldEntry]:
    """Every entry with at least one stored file, with all its versions."""
    counts = (
        select(
            File.version_id,
            func.count().label("files"),
            func.count(File.blob_digest).label("stored"),
        )
        .group_by(File.version_id)
        .subquery()
    )
    rows = s.execute(
        select(
            Entry.id,
            Entry.kind,
            Entry.path,
            Entry.removed_snapshot_id,
            Version.id,
            Version.version,
            Version.status,
            Version.size,
            Version.created,
            Version.removed_snapshot_id,
            Version.files_listed,
            func.coalesce(counts.c.files, 0),
            func.coalesce(counts.c.stored, 0),
        )
        .join(Version, Version.entry_id == Entry.id)
        .outerjoin(counts, counts.c.version_id == Version.id)
        .order_by(Entry.id, Version.id)
    )
    acc: dict[int, tuple[str, str, bool, list[HeldVersion]]] = {}
    for eid, kind, path, eremoved, vid, ver, status, size, created, vremoved, listed, n, k in rows:
        slot = acc.setdefault(eid, (kind, path, eremoved is not None, []))
        slot[3].append(
            HeldVersion(
                vid, ver, status or "", size, created, vremoved is not None, bool(listed), n, k
            )
        )
    return [
        HeldEntry(kind, path, removed, tuple(vs))
        for kind, path, removed, vs in acc.values()
        if any(v.stored for v in vs)
    ]


@dataclass
class PruneReport:
    dry_run: bool
    released: list[str] = field(default_factory=list)  # "kind path:version"
    held_back: list[str] = field(default_factory=list)
    files_released: int = 0
    blobs_freed: int = 0
    bytes_freed: int = 0
    touched: list[tuple[str, str]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "released": self.released,
            "held_back": self.held_back,
            "files_released": self.files_released,
            "blobs_freed": self.blobs_freed,
            "bytes_freed": self.bytes_freed,
        }


def registry_paths(settings: Settings) -> set[str]:
    return {f"{r.name}/{repo}" for r in settings.registries for repo in r.repositories}


def release(s: Session, settings: Settings, store: BlobStore, *, dry_run: bool) -> PruneReport:
    """Unlink the released versions' file rows in the caller's transaction (the caller
    commits, or rolls back for a dry run); count exactly what gc will then free.

    Fails closed before anything changes, as gc does, if a referenced blob is missing or
    unreadable: "whole" is judged from rows, so a damaged store must be repaired first (else
    an old version could go while its replacement's bytes are gone)."""
    if not settings.select and not settings.registries:
        raise ConfigError(
            "the config selects nothing ([[select]] and [[registry]] are both absent): "
            "prune would release every stored byte",
            path=settings.source,
            hint="pass the config `mirror sync` uses (--config FILE or MIRROR_CONFIG)",
        )
    unreadable = unreadable_referenced(store, catalog.referenced_digests(s))
    if unreadable:
        raise IntegrityError(
            f"{len(unreadable)} referenced blob(s) are missing or unreadable "
            f"(first: {unreadable[0]}); prune released nothing",
            hint="run `mirror verify --repair`, then `mirror sync`, then prune again",
        )
    report = PruneReport(dry_run=dry_run)
    decision = decide(held_entries(s), settings.select, registry_paths(settings))
    report.held_back = decision.held_back
    ids = [v.id for _, v in decision.release]
    for chunk in catalog.chunked(ids):
        result = s.execute(
            update(File)
            .where(File.version_id.in_(chunk), File.blob_digest.is_not(None))
            .values(blob_digest=None)
        )
        report.files_released += int(getattr(result, "rowcount", 0) or 0)
    s.flush()
    # what gc will delete: everything unreferenced now (blobs already orphaned included)
    freed = set(store.iter_digests()) - catalog.referenced_digests(s)
    report.blobs_freed = len(freed)
    for d in freed:
        with contextlib.suppress(OSError):
            report.bytes_freed += store.size(d)
    for entry, v in decision.release:
        report.released.append(f"{entry.kind} {entry.path}:{v.version}")
    report.touched = sorted({(e.kind, e.path) for e, _ in decision.release})
    return report


class _DryRun(Exception):
    """Raised inside the transaction to roll a dry run back (the report rides along)."""

    def __init__(self, report: PruneReport) -> None:
        super().__init__("dry run")
        self.report = report


def prune(
    paths: MirrorPaths, settings: Settings, store: BlobStore, db: Database, *, dry_run: bool
) -> PruneReport:
    """Release, re-index and re-publish index.json, then delete what nothing references.
    The caller holds the writer lock."""
    try:
        with db.session() as s:
            report = release(s, settings, store, dry_run=dry_run)
            if dry_run:
                raise _DryRun(report)
    except _DryRun as done:
        return done.report
    _republish(paths, db, report.touched)
    # bytes last; fails closed; partials stay for the next sync to resume
    swept = collect_garbage(store, db, dry_run=False, clean_tmp=False)
    report.blobs_freed, report.bytes_freed = swept.removed, swept.bytes
    with db.session() as s:
        catalog.record_run(
            s,
            "prune",
            {
                "versions_released": len(report.released),
                "files_released": report.files_released,
                "held_back": len(report.held_back),
                "blobs_freed": report.blobs_freed,
                "bytes_freed": report.bytes_freed,
            },
        )
    return report


def _republish(paths: MirrorPaths, db: Database, touched: list[tuple[str, str]]) -> None:
    """index.json (always: it must never name a blob gc is about to delete, whatever wrote
    it last) and search ("mirrored" flags) stop naming what is about to go."""
    from mirror.indexing import refresh_index
    from mirror.oci_layout import write_index

    write_index(paths, db)
    if not touched:
        return
    try:
        refresh_index(paths, db, touched, [])
    except Exception as exc:  # the catalog is committed; search can rebuild
        log.error("search index update failed (%s); run `mirror index rebuild`", exc)
