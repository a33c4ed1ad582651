"""Blobs a site lacks although its source thinks it has them, and how they get sent again.

A receipt confirms bundles, and the exporter takes every blob of a confirmed bundle as held by
the site. A site may drop some later (its own `mirror prune`, `verify --repair`), and then a
new version sharing those bytes arrives as a record whose blob is neither in the bundle nor at
the site. The import does not fail on that (it used to, and every later bundle failed the same
way): the file is recorded as not held, and the digest goes on the site's "lacking" list,
which every receipt carries. The source's next `export --site` un-confirms those blobs and
re-sends the entries that use them, with their bytes; the import after that clears the list.

A site with `[[select]]` tables asks again only for blobs of versions its selection wants (a
version it pruned on purpose is not fetched back whenever its entry changes upstream).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from mirror import catalog
from mirror.blobstore import BlobStore
from mirror.config import Selection
from mirror.errors import DigestError
from mirror.paths import validate_digest
from mirror.plan import select_versions
from mirror.schema import Entry, File, Meta, Site, Version

SITE_KEY = "lacking"  # Meta key at the site


@dataclass(frozen=True)
class _V:
    version: str
    status: str
    size: int | None
    created: str | None


def missing_references(
    records: list[dict[str, Any]], in_bundle: set[str], store: BlobStore
) -> dict[str, list[tuple[str, str, str]]]:
    """digest -> (kind, path, version) of file rows whose blob is neither in the bundle nor
    in this store."""
    out: dict[str, list[tuple[str, str, str]]] = {}
    for rec in records:
        if rec.get("op") != "upsert":
            continue
        for v in rec.get("versions", []):
            for f in v.get("files", []):
                d = f.get("blob_digest")
                if d and d not in in_bundle and not store.has(d):
                    out.setdefault(d, []).append((rec["kind"], rec["path"], v["version"]))
    return out


def wanted_here(
    missing: dict[str, list[tuple[str, str, str]]],
    records: list[dict[str, Any]],
    selections: Sequence[Selection],
) -> set[str]:
    """The missing digests this site wants (all of them without `[[select]]` tables)."""
    if not selections:
        return set(missing)
    chosen: set[tuple[str, str, str]] = set()
    for rec in records:
        if rec.get("op") != "upsert":
            continue
        versions = [
            _V(v["version"], v.get("status") or "", v.get("size"), v.get("created"))
            for v in rec.get("versions", [])
        ]
        for vid in select_versions(rec["kind"], rec["path"], versions, selections):
            chosen.add((rec["kind"], rec["path"], vid))
    return {d for d, users in missing.items() if any(u in chosen for u in users)}


def site_lacking(s: Session) -> list[str]:
    row = s.get(Meta, SITE_KEY)
    return _digests(json.loads(row.value)) if row is not None else []


def update_site_lacking(s: Session, store: BlobStore, new: Iterable[str]) -> list[str]:
    """After an import: what was lacking and still is, plus what this import lacked."""
    now = sorted({d for d in [*site_lacking(s), *new] if not store.has(d)})
    row = s.get(Meta, SITE_KEY)
    if row is None:
        row = Meta(key=SITE_KEY, value="[]")
        s.add(row)
    row.value = json.dumps(now)
    return now


# -- the source's side ----------------------------------------------------------------------
def remember_for_site(s: Session, site: Site, receipt: dict[str, Any]) -> None:
    """Store what the site's newest receipt says it lacks (replacing the previous list)."""
    raw = receipt.get("lacking", [])
    site.lacking = json.dumps(_digests(raw if isinstance(raw, list) else []))


def lacking_at(s: Session, site: str) -> set[str]:
    row = s.get(Site, site)
    if row is None or not row.lacking:
        return set()
    return set(_digests(json.loads(row.lacking)))


def entries_using(s: Session, digests: set[str]) -> set[int]:
    """Ids of live entries with a stored file in `digests` (to send again)."""
    ids: set[int] = set()
    for chunk in catalog.chunked(sorted(digests)):
        ids |= set(
            s.scalars(
                select(Version.entry_id)
                .join(File, File.version_id == Version.id)
                .join(Entry, Entry.id == Version.entry_id)
                .where(File.blob_digest.in_(chunk), Entry.removed_snapshot_id.is_(None))
            )
        )
    return ids


def _digests(raw: Iterable[Any]) -> list[str]:
    out = []
    for d in raw:
        try:
            out.append(validate_digest(str(d)))
        except DigestError:
            continue  # a damaged or hostile receipt line: ignore it, never trust it
    return sorted(set(out))
