"""`mirror gc`: remove blobs nothing references; fail closed when the catalog looks damaged.

Rows go before bytes (STYLE.md habit 8): blob rows are deleted in one transaction, then the
files. If any referenced blob is missing or unreadable, gc deletes nothing: a damaged catalog
or store is a reason to stop and look, not to guess what is garbage.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from typing import Any

from mirror import catalog
from mirror.blobstore import BlobStore
from mirror.db import Database
from mirror.errors import IntegrityError


@dataclass
class GcReport:
    dry_run: bool
    unreferenced: list[str] = field(default_factory=list)
    bytes: int = 0
    removed: int = 0
    partials_removed: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "unreferenced": self.unreferenced,
            "bytes": self.bytes,
            "removed": self.removed,
            "partials_removed": self.partials_removed,
        }


def unreadable_referenced(store: BlobStore, referenced: set[str]) -> list[str]:
    """Referenced blobs that are missing or unreadable, sorted (empty on a healthy store)."""
    return [d for d in sorted(referenced) if not os.access(store.paths.blob(d), os.R_OK)]


def collect_garbage(
    store: BlobStore, db: Database, *, dry_run: bool, clean_tmp: bool = True
) -> GcReport:
    """Delete unreferenced blobs; with `clean_tmp`, also partial downloads and staging
    leftovers (prune keeps them: a killed sync's partials resume on the next run)."""
    report = GcReport(dry_run=dry_run)
    with db.session() as s:
        referenced = catalog.referenced_digests(s)
    unreadable = unreadable_referenced(store, referenced)
    if unreadable:
        raise IntegrityError(
            f"{len(unreadable)} referenced blob(s) are missing or unreadable "
            f"(first: {unreadable[0]}); gc deleted nothing",
            hint="run `mirror verify --repair`, then `mirror sync`, then gc again",
        )
    for digest in sorted(set(store.iter_digests()) - referenced):
        report.unreferenced.append(digest)
        with contextlib.suppress(OSError):
            report.bytes += store.size(digest)
    if dry_run:
        return report
    with db.session() as s:
        catalog.forget_blobs(s, report.unreferenced)
    for digest in report.unreferenced:
        store.delete(digest)
        report.removed += 1
    if clean_tmp:
        report.partials_removed = store.clean_tmp()
    return report
