"""Receipts: what a site has, carried back so the next export sends exactly what it lacks.

A receipt names the importing mirror and every bundle it imported (id, source mirror, target
snapshot). The exporter trusts it: bundles it names become confirmed for that site, and the
site's base moves to the newest confirmed snapshot. A bundle lost on the way is simply never
confirmed, so the next `mirror export --site` sends its content again: one re-export, not a
full re-send.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from mirror import catalog
from mirror.bundle.lacking import remember_for_site, site_lacking
from mirror.errors import UsageError
from mirror.schema import Export, ExportBlob, Import, Site

RECEIPT_VERSION = 1


def build_receipt(s: Session) -> dict[str, Any]:
    imports = list(s.scalars(select(Import).order_by(Import.imported_at)))
    snapshots: dict[str, int] = {}
    for imp in imports:
        snapshots[imp.source_mirror_id] = max(
            snapshots.get(imp.source_mirror_id, 0), imp.target_snapshot
        )
    return {
        "receipt_version": RECEIPT_VERSION,
        "mirror_id": catalog.mirror_id(s),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "snapshots": snapshots,
        "lacking": site_lacking(s),
        "imports": [
            {
                "bundle_id": i.bundle_id,
                "source_mirror_id": i.source_mirror_id,
                "base_snapshot": i.base_snapshot,
                "target_snapshot": i.target_snapshot,
                "catalog_sha256": i.catalog_sha256,
            }
            for i in imports
        ],
    }


def ingest_receipt(s: Session, site: str, path: Path) -> int:
    """Confirm the bundles a site's receipt names; return the site's confirmed snapshot."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UsageError(
            f"cannot read receipt {path}: {exc}",
            hint="use the mirror-receipt.json that `mirror import` wrote",
        ) from None
    if not isinstance(doc, dict) or doc.get("receipt_version") != RECEIPT_VERSION:
        raise UsageError(f"{path} is not a mirror receipt (or of an unknown version)")
    me = catalog.mirror_id(s)
    row = s.get(Site, site)
    if row is None:
        row = Site(name=site, confirmed_snapshot=0)
        s.add(row)
    if row.mirror_id and row.mirror_id != doc.get("mirror_id"):
        raise UsageError(
            f"receipt {path} comes from mirror {doc.get('mirror_id')}, but site "
            f"{site!r} is mirror {row.mirror_id}",
            hint="check --site, or use the receipt that site wrote",
        )
    row.mirror_id = str(doc.get("mirror_id"))
    for imp in doc.get("imports", []):
        if not isinstance(imp, dict) or imp.get("source_mirror_id") != me:
            continue
        exp = s.get(Export, str(imp.get("bundle_id")))
        if exp is None:
            continue
        if exp.site is None:
            exp.site = site  # a bundle exported without --site, carried to this site
        if exp.site != site:
            continue
        if exp.confirmed_at is None:
            exp.confirmed_at = catalog.utcnow()
        row.confirmed_snapshot = max(row.confirmed_snapshot, exp.target_snapshot)
    row.confirmed_at = catalog.utcnow()
    s.flush()
    remember_for_site(s, row, doc, sent_blobs(s, site))
    return row.confirmed_snapshot


def sent_blobs(s: Session, site: str, *, confirmed: bool = False) -> set[str]:
    """Blobs of every bundle exported for the site (with `confirmed`: only of those the site
    confirmed having)."""
    stmt = (
        select(ExportBlob.digest)
        .join(Export, Export.bundle_id == ExportBlob.bundle_id)
        .where(Export.site == site)
    )
    if confirmed:
        stmt = stmt.where(Export.confirmed_at.is_not(None))
    return set(s.scalars(stmt))


def confirmed_blobs(s: Session, site: str) -> set[str]:
    """Blobs of every bundle the site confirmed having."""
    return sent_blobs(s, site, confirmed=True)
