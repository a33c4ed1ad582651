"""The catalog delta (`catalog.jsonl`): entries changed since a base snapshot, and removals.

Each line is one JSON record, sorted by (kind, path) so the file is deterministic:

    {"op": "upsert", "kind": ..., "path": ..., <entry fields>, "versions": [... "files": [...]]}
    {"op": "remove", "kind": ..., "path": ...}

An upsert carries the entry's whole state at the target snapshot, so applying a delta is
idempotent and order-independent per entry.
"""

from __future__ import annotations

import heapq
import json
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.orm import Session, selectinload

from mirror import catalog
from mirror.errors import IntegrityError
from mirror.models import ListedEntry, RemoteEntry, RemoteFile, RemoteVersion
from mirror.paths import safe_relpath, validate_digest
from mirror.schema import Blob, Entry, File, Version

ENTRY_FIELDS = (
    "org",
    "team",
    "name",
    "display_name",
    "description",
    "short_description",
    "labels",
    "framework",
    "precision",
    "application",
    "latest_version",
    "created",
    "updated",
)
VERSION_FIELDS = (
    "version",
    "status",
    "size",
    "file_count",
    "created",
    "updated",
    "description",
    "manifest_digest",  # image tags: the upstream manifest or index, byte-exact in the store
)


def delta_records(
    s: Session, base: int, also: Iterable[int] = ()
) -> Iterator[dict[str, Any]]:
    """Records for every entry whose rows changed after snapshot `base` (0 = everything),
    plus the live entries with ids in `also` (sent again: a site lacks their bytes)."""
    stmt = (
        select(Entry)
        .options(selectinload(Entry.versions).selectinload(Version.files))
        .order_by(Entry.kind, Entry.path)
    )
    extra = sorted(set(also))
    if base:
        changed = or_(Entry.changed_snapshot_id > base, Entry.removed_snapshot_id > base)
        again = sorted(
            (
                rec
                for chunk in catalog.chunked(extra)
                for rec in _records(s, stmt.where(Entry.id.in_(chunk)))
                if rec["op"] == "upsert"
            ),
            key=_key,
        )
        last = None
        # one stream in (kind, path) order; an entry both changed and sent again goes once
        for rec in heapq.merge(_records(s, stmt.where(changed)), again, key=_key):
            if _key(rec) != last:
                yield rec
            last = _key(rec)
        return
    yield from _records(s, stmt)


def _key(rec: dict[str, Any]) -> tuple[str, str]:
    return (rec["kind"], rec["path"])


def _records(s: Session, stmt: Any) -> Iterator[dict[str, Any]]:
    # a full bundle (base 0) carries removals too: a site that already holds an older state
    # (e.g. `--site` with no receipt ever carried back) must learn what is gone; a fresh
    # mirror ignores removals of entries it never had
    for e in s.scalars(stmt):
        if e.removed_snapshot_id is not None:
            yield {"op": "remove", "kind": e.kind, "path": e.path}
            continue
        rec: dict[str, Any] = {"op": "upsert", "kind": e.kind, "path": e.path}
        rec.update({f: getattr(e, f) for f in ENTRY_FIELDS})
        media = _media_types(s, e) if e.kind == "image" else {}
        rec["versions"] = [
            {
                **{f: getattr(v, f) for f in VERSION_FIELDS},
                "files_listed": v.files_listed,
                "files": [
                    {
                        "path": f.path,
                        "size": f.size,
                        "sha256": f.sha256,
                        "blob_digest": f.blob_digest,
                        **({"media_type": media[f.blob_digest]} if f.blob_digest in media else {}),
                    }
                    for f in sorted(v.files, key=lambda x: x.path)
                ],
            }
            for v in sorted(e.versions, key=lambda x: x.version)
            if v.removed_snapshot_id is None
        ]
        yield rec


def _media_types(s: Session, e: Entry) -> dict[str, str]:
    """Media types of an image's stored pieces (manifests, configs, layers) for index.json."""
    digests = {f.blob_digest for v in e.versions for f in v.files if f.blob_digest}
    if not digests:
        return {}
    out: dict[str, str] = {}
    for chunk in catalog.chunked(sorted(digests)):
        rows = s.execute(select(Blob.digest, Blob.media_type).where(Blob.digest.in_(chunk)))
        out.update({d: m for d, m in rows if m})
    return out


def record_blobs(rec: dict[str, Any]) -> Iterator[tuple[str, int]]:
    for v in rec.get("versions", []):
        for f in v.get("files", []):
            if f.get("blob_digest"):
                yield f["blob_digest"], int(f["size"])


def encode(records: Iterable[dict[str, Any]]) -> Iterator[bytes]:
    for rec in records:
        yield (json.dumps(rec, sort_keys=True, separators=(",", ":")) + "\n").encode()


def parse(lines: Iterable[bytes], where: str) -> list[dict[str, Any]]:
    """Decode and validate every record (paths and digests) before anything is applied."""
    out = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except ValueError:
            raise IntegrityError(f"line {n} is not JSON", subject=where) from None
        _validate(rec, f"{where} line {n}")
        out.append(rec)
    return out


def _validate(rec: Any, where: str) -> None:
    try:
        if not isinstance(rec, dict) or rec.get("op") not in ("upsert", "remove"):
            raise ValueError("unknown record")
        if rec.get("kind") not in ("model", "resource", "image", "chart"):
            raise ValueError("unknown kind")
        path = rec["path"]
        parts = str(safe_relpath(path)).split("/")
        # models and resources are org/[team/]name; image repositories may nest deeper
        if len(parts) < 2 or (len(parts) > 3 and rec["kind"] != "image"):
            raise ValueError("bad entry path")
        for v in rec.get("versions", []) if rec["op"] == "upsert" else []:
            if not isinstance(v.get("version"), str) or not v["version"]:
                raise ValueError("bad version")
            if v.get("manifest_digest"):
                validate_digest(v["manifest_digest"])
            for f in v.get("files", []):
                safe_relpath(f["path"])
                if not isinstance(f["size"], int) or f["size"] < 0:
                    raise ValueError("bad file size")
                if f.get("blob_digest"):
                    validate_digest(f["blob_digest"])
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise IntegrityError(f"invalid catalog record: {exc}", subject=where) from None
    except Exception as exc:  # UsageError/DigestError from the path and digest checks
        raise IntegrityError(f"invalid catalog record: {exc}", subject=where) from None


def _held_here(s: Session, kind: str, path: str) -> dict[str, str]:
    """"version/path" -> blob digest of this site's stored files of one entry (the caller
    keeps one only if the incoming record lists the same content)."""
    rows = s.execute(
        select(Version.version, File.path, File.blob_digest)
        .join(File, File.version_id == Version.id)
        .join(Entry, Entry.id == Version.entry_id)
        .where(Entry.kind == kind, Entry.path == path, File.blob_digest.is_not(None))
    )
    return {f"{v}/{p}": d for v, p, d in rows if d}


def apply(
    s: Session,
    records: list[dict[str, Any]],
    snapshot_id: int,
    available: set[str],
    sizes: dict[str, int],
    has: Callable[[str], bool] = lambda digest: True,
) -> tuple[int, int]:
    """Apply validated records in the caller's transaction; return (upserts, removals).

    A file row gets its blob only if that blob is in `available` (published in the store).
    A file the source no longer holds (it pruned that version) keeps the blob this site
    already has for it: what a site keeps is the site's own `mirror prune`'s business.
    """
    ups = rems = 0
    removals = []
    for rec in records:
        if rec["op"] == "remove":
            removals.append((rec["kind"], rec["path"]))
            continue
        listed = ListedEntry(
            kind=rec["kind"],
            org=rec["org"],
            team=rec.get("team"),
            name=rec["name"],
            display_name=rec.get("display_name") or "",
            description=rec.get("description") or "",
            created=rec.get("created"),
            updated=rec.get("updated"),
            latest_version=rec.get("latest_version"),
            framework=rec.get("framework"),
            precision=rec.get("precision"),
            application=rec.get("application"),
            labels=tuple(rec.get("labels") or ()),
        )
        versions, stored = [], {}
        held = _held_here(s, rec["kind"], rec["path"])
        for v in rec.get("versions", []):
            files = None
            if v.get("files_listed"):
                files = [
                    RemoteFile(path=f["path"], size=f["size"], sha256=f.get("sha256"))
                    for f in v.get("files", [])
                ]
            versions.append(
                RemoteVersion(
                    version=v["version"],
                    status=v.get("status") or "",
                    size=v.get("size"),
                    file_count=v.get("file_count"),
                    created=v.get("created"),
                    updated=v.get("updated"),
                    description=v.get("description") or "",
                    files=files,
                    manifest_digest=v.get("manifest_digest"),
                )
            )
            for f in v.get("files", []):
                d, key = f.get("blob_digest"), f"{v['version']}/{f['path']}"
                if d and d in available:
                    media = f.get("media_type")
                    catalog.record_blob(
                        s, d, sizes.get(d, f["size"]), media if isinstance(media, str) else None
                    )
                    stored[key] = d
                elif (
                    f.get("sha256")
                    and held.get(key) == f"sha256:{f['sha256']}"
                    and has(held[key])  # a damaged site does not keep a dangling pointer
                ):
                    stored[key] = held[key]  # the source pruned it; this site keeps it
        remote = RemoteEntry(
            listed=listed,
            description=rec.get("description") or "",
            short_description=rec.get("short_description") or "",
            versions=versions,
        )
        entry = catalog.upsert_entry(s, remote, snapshot_id, stored, stamp=None)
        # upsert_entry falls back to the listing's description for empty fields; the record
        # already carries the source's final values, so keep them exactly (an empty
        # short_description must not become the long description)
        entry.description = rec.get("description") or ""
        entry.short_description = rec.get("short_description") or ""
        ups += 1
    rems = catalog.mark_removed(s, removals, snapshot_id)
    return ups, rems
