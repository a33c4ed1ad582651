"""`mirror show REF`: one entry with its versions, files and local availability."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import selectinload

from mirror.db import Database
from mirror.errors import UsageError
from mirror.plan import newest_first
from mirror.render import download_command
from mirror.schema import Entry, Version


def parse_ref(ref: str) -> tuple[str, str | None]:
    """'org/[team/]name[:version]' -> (path, version)."""
    # the version follows the last ':' of the last segment: a registry host may carry a port
    # ("127.0.0.1:5000/test/multi:1.0")
    head, _, last = ref.strip("/").rpartition("/")
    name, _, version = last.partition(":")
    path = f"{head}/{name}" if head else name
    parts = path.split("/")
    if len(parts) < 2 or not all(parts):
        raise UsageError(
            f"bad reference {ref!r}: expected org/[team/]name[:version]",
            hint="find it with `mirror search WORDS`",
        )
    return "/".join(parts), version or None


def entry_detail(db: Database, ref: str, *, kind: str | None = None) -> dict[str, Any]:
    path, version = parse_ref(ref)
    with db.session() as s:
        stmt = (
            select(Entry)
            .where(Entry.path == path)
            .options(selectinload(Entry.versions).selectinload(Version.files))
        )
        if kind:
            stmt = stmt.where(Entry.kind == kind)
        entries = list(s.scalars(stmt))
        if not entries:
            raise UsageError(
                f"no entry {path!r} in the mirror",
                hint="`mirror search` finds entries; `mirror sync` fetches them",
            )
        if len(entries) > 1:
            kinds = ", ".join(sorted(e.kind for e in entries))
            raise UsageError(f"{path!r} is ambiguous ({kinds})", hint="add --kind KIND")
        e = entries[0]
        ordered = newest_first(e.versions)
        versions = []
        for v in ordered:
            stored = sum(1 for f in v.files if f.blob_digest)
            versions.append(
                {
                    "version": v.version,
                    "status": v.status,
                    "size": v.size,
                    "file_count": v.file_count,
                    "created": v.created,
                    "removed": v.removed_snapshot_id is not None,
                    "files_listed": v.files_listed,
                    "stored_files": stored,
                    "mirrored": bool(v.files) and stored == len(v.files),
                }
            )
        by_id = {v.version: v for v in ordered}
        if version is not None and version not in by_id:
            raise UsageError(
                f"{path} has no version {version!r}",
                hint=f"versions: {', '.join(list(by_id)[:10])}",
            )
        shown = version or e.latest_version or (ordered[0].version if ordered else None)
        files = []
        if shown in by_id:
            files = [
                {"path": f.path, "size": f.size, "sha256": f.sha256, "blob_digest": f.blob_digest}
                for f in by_id[shown].files
            ]
        entry = {
            "kind": e.kind,
            "path": e.path,
            "display_name": e.display_name,
            "description": e.description,
            "labels": e.labels,
            "framework": e.framework,
            "precision": e.precision,
            "application": e.application,
            "latest_version": e.latest_version,
            "updated": e.updated,
            "removed": e.removed_snapshot_id is not None,
        }
        return {
            "entry": entry,
            "versions": versions,
            "shown_version": shown,
            "files": files,
            "command": download_command(entry, shown),
        }
