"""All catalog SQL: local state for the planner, upserts after a refresh, runs and snapshots.

Callers pass a Session from `Database.session()` (one transaction); nothing here commits.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from mirror.models import RemoteEntry
from mirror.plan import LocalEntry, LocalVersion
from mirror.schema import Blob, Entry, File, Run, Snapshot, Version

T = TypeVar("T")


def utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


# -- runs and snapshots -----------------------------------------------------------------------
def start_run(s: Session, command: str) -> Run:
    """Record a run; any run still 'running' is a leftover of a killed process (we hold the
    lock, so nobody else is running)."""
    s.execute(update(Run).where(Run.outcome == "running").values(outcome="interrupted"))
    run = Run(
        command=command,
        started_at=utcnow(),
        pid=os.getpid(),
        outcome="running",
        counts={},
        failures=[],
        bytes_fetched=0,
    )
    s.add(run)
    s.flush()
    return run


def finish_run(
    s: Session,
    run_id: int,
    *,
    outcome: str,
    counts: dict[str, Any],
    bytes_fetched: int,
    failures: Sequence[str],
    snapshot_id: int | None,
    error: str | None = None,
) -> None:
    run = s.get(Run, run_id)
    assert run is not None
    run.outcome = outcome
    run.finished_at = utcnow()
    run.counts = dict(counts)
    run.bytes_fetched = bytes_fetched
    run.failures = list(failures)
    run.snapshot_id = snapshot_id
    run.error = error


def record_run(
    s: Session,
    command: str,
    counts: dict[str, Any],
    bytes_fetched: int = 0,
    snapshot_id: int | None = None,
) -> None:
    """Ledger row for a finished, successful one-shot command (import, export, gc)."""
    run = start_run(s, command)
    finish_run(
        s,
        run.id,
        outcome="ok",
        counts=counts,
        bytes_fetched=bytes_fetched,
        failures=[],
        snapshot_id=snapshot_id,
    )


def last_runs(s: Session, limit: int = 10) -> list[Run]:
    return list(s.scalars(select(Run).order_by(Run.id.desc()).limit(limit)))


def new_snapshot(s: Session, source: str) -> Snapshot:
    snap = Snapshot(created_at=utcnow(), complete=False, source=source)
    s.add(snap)
    s.flush()
    return snap


def complete_snapshot(s: Session, snapshot_id: int) -> None:
    snap = s.get(Snapshot, snapshot_id)
    assert snap is not None
    snap.complete = True


def drop_snapshot_if_unused(s: Session, snapshot_id: int) -> None:
    for col in (
        Entry.first_snapshot_id,
        Entry.removed_snapshot_id,
        Version.first_snapshot_id,
        Version.removed_snapshot_id,
    ):
        if s.scalar(select(func.count()).where(col == snapshot_id)):
            return
    snap = s.get(Snapshot, snapshot_id)
    if snap is not None:
        s.delete(snap)


# -- planner input ------------------------------------------------------------------------------
def local_state(s: Session, kinds: Iterable[str]) -> dict[tuple[str, str], LocalEntry]:
    """Every entry of `kinds` with its live versions and how many files lack a blob."""
    kinds = tuple(kinds)
    missing = (
        select(File.version_id, func.count().label("n"))
        .where(File.blob_digest.is_(None))
        .group_by(File.version_id)
        .subquery()
    )
    rows = s.execute(
        select(
            Entry.kind,
            Entry.path,
            Entry.sync_stamp,
            Entry.removed_snapshot_id,
            Version.version,
            Version.status,
            Version.size,
            Version.created,
            Version.files_listed,
            func.coalesce(missing.c.n, 0),
        )
        .outerjoin(Version, (Version.entry_id == Entry.id) & Version.removed_snapshot_id.is_(None))
        .outerjoin(missing, missing.c.version_id == Version.id)
        .where(Entry.kind.in_(kinds))
    )
    acc: dict[tuple[str, str], tuple[str | None, bool, list[LocalVersion]]] = {}
    for kind, path, stamp, removed, ver, status, size, created, listed, nmiss in rows:
        slot = acc.setdefault((kind, path), (stamp, removed is not None, []))
        if ver is not None:
            slot[2].append(LocalVersion(ver, status, size, created, bool(listed), int(nmiss)))
    return {k: LocalEntry(k[0], k[1], st, rm, tuple(vs)) for k, (st, rm, vs) in acc.items()}


# -- writes after a refresh ---------------------------------------------------------------------
def record_blob(s: Session, digest: str, size: int, media_type: str | None = None) -> None:
    if s.get(Blob, digest) is None:
        s.add(Blob(digest=digest, size=size, media_type=media_type, stored_at=utcnow()))


def upsert_entry(
    s: Session,
    remote: RemoteEntry,
    snapshot_id: int,
    stored: dict[str, str],
    *,
    stamp: str | None,
) -> Entry:
    """Write one refreshed entry, its versions and listed files.

    Args:
        stored: "version/path" -> blob digest for files whose bytes are published and recorded
            in `blobs` (the blob before the row).
        stamp: the listing stamp to record, or None if the refresh was incomplete (failed
            downloads) so the next sync retries it.
    """
    li = remote.listed
    entry = s.scalar(select(Entry).where(Entry.kind == li.kind, Entry.path == li.path))
    if entry is None:
        entry = Entry(kind=li.kind, path=li.path, first_snapshot_id=snapshot_id)
        s.add(entry)
    entry.org, entry.team, entry.name = li.org, li.team, li.name
    entry.display_name = li.display_name
    entry.description = remote.description or li.description
    entry.short_description = remote.short_description or li.description
    entry.labels = list(li.labels)
    entry.framework, entry.precision, entry.application = li.framework, li.precision, li.application
    entry.latest_version = li.latest_version
    entry.created, entry.updated = li.created, li.updated
    entry.removed_snapshot_id = None
    entry.changed_snapshot_id = snapshot_id
    entry.sync_stamp = stamp
    s.flush()

    existing = {
        v.version: v for v in s.scalars(select(Version).where(Version.entry_id == entry.id))
    }
    upstream = {rv.version for rv in remote.versions}
    for old_id, old in existing.items():
        if old_id not in upstream and old.removed_snapshot_id is None:
            old.removed_snapshot_id = snapshot_id
    for rv in remote.versions:
        ver = existing.get(rv.version)
        if ver is None:
            ver = Version(entry_id=entry.id, version=rv.version, first_snapshot_id=snapshot_id)
            s.add(ver)
        ver.status, ver.size, ver.file_count = rv.status, rv.size, rv.file_count
        ver.created, ver.updated, ver.description = rv.created, rv.updated, rv.description
        if rv.files is not None or not ver.files_listed:
            # a tag whose pieces are listed here keeps the digest they belong to until they
            # are listed again (NGC may name another digest: the tag was pushed again)
            ver.manifest_digest = rv.manifest_digest
        ver.removed_snapshot_id = None
        s.flush()
        if rv.files is None:
            continue
        ver.files_listed = True
        have = {f.path: f for f in s.scalars(select(File).where(File.version_id == ver.id))}
        names = {rf.path for rf in rv.files}
        for path, row in have.items():
            if path not in names:
                s.delete(row)
        for rf in rv.files:
            frow = have.get(rf.path)
            if frow is None:
                frow = File(version_id=ver.id, path=rf.path)
                s.add(frow)
            frow.size, frow.sha256 = rf.size, rf.sha256
            frow.blob_digest = stored.get(f"{rv.version}/{rf.path}")
    s.flush()
    return entry


def mark_removed(s: Session, keys: Iterable[tuple[str, str]], snapshot_id: int) -> int:
    n = 0
    for kind, path in keys:
        entry = s.scalar(select(Entry).where(Entry.kind == kind, Entry.path == path))
        if entry is not None and entry.removed_snapshot_id is None:
            entry.removed_snapshot_id = snapshot_id
            entry.changed_snapshot_id = snapshot_id
            n += 1
    return n


# -- store bookkeeping (verify, gc) -------------------------------------------------------------
def referenced_digests(s: Session) -> set[str]:
    """Every blob digest a file row points at. An image's manifests, configs and layers are
    file rows too; `Version.manifest_digest` is upstream's name for a tag, not a claim that
    this store holds it (NGC lists digests of tags nobody selected), so it is not counted."""
    rows = s.scalars(select(File.blob_digest).where(File.blob_digest.is_not(None)))
    return {d for d in rows if d}


def known_blobs(s: Session) -> dict[str, int]:
    return {d: n for d, n in s.execute(select(Blob.digest, Blob.size))}


def chunked(items: list[T], n: int = 500) -> Iterator[list[T]]:
    """Slices of at most `n`: SQL `IN (...)` lists stay under SQLite's bound-variable cap
    (32766; 999 in builds before 3.32)."""
    for i in range(0, len(items), n):
        yield items[i : i + n]


def forget_blobs(s: Session, digests: Iterable[str]) -> None:
    """Drop blob rows (and unlink file rows from them) before the bytes are deleted."""
    ds = list(digests)
    for chunk in chunked(ds):
        s.execute(update(File).where(File.blob_digest.in_(chunk)).values(blob_digest=None))
    for d in ds:
        row = s.get(Blob, d)
        if row is not None:
            s.delete(row)


def mark_verified(s: Session, digests: Iterable[str]) -> None:
    now = utcnow()
    for d in digests:
        row = s.get(Blob, d)
        if row is not None:
            row.verified_at = now


def counts(s: Session) -> dict[str, int]:
    live = Entry.removed_snapshot_id.is_(None)
    return {
        "entries": s.scalar(select(func.count()).select_from(Entry).where(live)) or 0,
        "versions": s.scalar(
            select(func.count()).select_from(Version).where(Version.removed_snapshot_id.is_(None))
        )
        or 0,
        "files": s.scalar(select(func.count()).select_from(File)) or 0,
        "files_stored": s.scalar(
            select(func.count()).select_from(File).where(File.blob_digest.is_not(None))
        )
        or 0,
        "blobs": s.scalar(select(func.count()).select_from(Blob)) or 0,
        "blob_bytes": s.scalar(select(func.coalesce(func.sum(Blob.size), 0))) or 0,
        "snapshots": s.scalar(
            select(func.count()).select_from(Snapshot).where(Snapshot.complete.is_(True))
        )
        or 0,
    }


# -- bundles: identity, deltas --------------------------------------------------------------------
def mirror_id(s: Session) -> str:
    """This mirror's stable id (created on first use)."""
    import uuid

    from mirror.schema import Meta

    row = s.get(Meta, "mirror_id")
    if row is None:
        row = Meta(key="mirror_id", value=str(uuid.uuid4()))
        s.add(row)
        s.flush()
    return row.value


def latest_complete_snapshot(s: Session) -> int:
    return s.scalar(select(func.max(Snapshot.id)).where(Snapshot.complete.is_(True))) or 0
