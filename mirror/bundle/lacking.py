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
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from mirror import catalog
from mirror.blobstore import BlobStore
from mirror.config import Selection
from mirror.errors import DigestError
from mirror.paths import validate_digest
from mirror.schema import Entry, File, Meta, Site, Version

SITE_KEY = "lacking"  # Meta key at the site


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


def site_lacking(s: Session) -> list[str]:
    row = s.get(Meta, SITE_KEY)
    return _digests(json.loads(row.value)) if row is not None else []


def update_site_lacking(
    s: Session,
    store: BlobStore,
    new: Iterable[str],
    selections: Sequence[Selection],
    registry_paths: set[str],
) -> list[str]:
    """After an import: the blobs this site lacks and wants, from its catalog as it is now.

    A digest stays listed only while a live version this site wants (its `[[select]]` and
    `[[registry]]` rules, as `mirror prune` applies them; everything without either) has a
    file with that content and no blob. So a version pruned on purpose, removed upstream, or
    whose bytes arrived drops off the list."""
    candidates = sorted({d for d in [*site_lacking(s), *new] if not store.has(d)})
    users: dict[str, set[tuple[int, str]]] = {}
    for chunk in catalog.chunked([d[7:] for d in candidates]):
        rows = s.execute(
            select(File.sha256, Version.entry_id, Version.version)
            .join(Version, Version.id == File.version_id)
            .join(Entry, Entry.id == Version.entry_id)
            .where(
                File.sha256.in_(chunk),
                File.blob_digest.is_(None),
                Version.removed_snapshot_id.is_(None),
                Entry.removed_snapshot_id.is_(None),
            )
        )
        for sha, entry_id, version in rows:
            users.setdefault(f"sha256:{sha}", set()).add((entry_id, version))
    wanted = _wanted(s, {eid for us in users.values() for eid, _ in us}, selections, registry_paths)
    now = sorted(d for d, us in users.items() if any(u in wanted for u in us))
    row = s.get(Meta, SITE_KEY)
    if row is None:
        row = Meta(key=SITE_KEY, value="[]")
        s.add(row)
    row.value = json.dumps(now)
    return now


def _wanted(
    s: Session, entry_ids: set[int], selections: Sequence[Selection], registry_paths: set[str]
) -> set[tuple[int, str]]:
    from mirror.prune import HeldEntry, HeldVersion, wanted_versions

    out: set[tuple[int, str]] = set()
    for chunk in catalog.chunked(sorted(entry_ids)):
        for e in s.scalars(select(Entry).where(Entry.id.in_(chunk))):
            live = [v for v in e.versions if v.removed_snapshot_id is None]
            if not selections and not registry_paths:
                out |= {(e.id, v.version) for v in live}  # a site without rules wants it all
                continue
            held = HeldEntry(
                e.kind,
                e.path,
                False,
                tuple(
                    HeldVersion(
                        v.id,
                        v.version,
                        v.status or "",
                        v.size,
                        v.created,
                        False,
                        v.files_listed,
                        0,
                        0,
                    )
                    for v in live
                ),
            )
            out |= {(e.id, vid) for vid in wanted_versions(held, selections, registry_paths)}
    return out


# -- the source's side ----------------------------------------------------------------------
def remember_for_site(s: Session, site: Site, receipt: dict[str, Any], sent: set[str]) -> None:
    """Store what the site's newest receipt says it lacks. Only blobs this mirror sent that
    site can be lacking there (`sent`: a bogus or another site's list is cut down to
    nothing), and an older receipt than the one stored changes nothing."""
    created = str(receipt.get("created") or "")
    if site.lacking:
        stored = json.loads(site.lacking)
        if isinstance(stored, dict) and created < str(stored.get("created") or ""):
            return
    raw = receipt.get("lacking", [])
    digests = [d for d in _digests(raw if isinstance(raw, list) else []) if d in sent]
    site.lacking = json.dumps({"created": created, "digests": digests})


def lacking_at(s: Session, site: str) -> set[str]:
    row = s.get(Site, site)
    if row is None or not row.lacking:
        return set()
    stored = json.loads(row.lacking)
    return set(_digests(stored.get("digests", []) if isinstance(stored, dict) else []))


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
