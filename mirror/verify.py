"""`mirror verify`: re-hash the store and compare it with the catalog; a report, not a raise.

Findings: corrupt (content does not match its name), missing (the catalog names a blob that
is not on disk), orphan (on disk, named by nothing: harmless, `mirror gc` removes it).
"""

from __future__ import annotations

import contextlib
import random
from dataclasses import dataclass, field
from typing import Any

from mirror import catalog
from mirror.blobstore import BlobStore
from mirror.db import Database


@dataclass
class VerifyReport:
    checked: int = 0
    bytes_checked: int = 0
    corrupt: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    orphans: list[str] = field(default_factory=list)
    repaired: int = 0

    @property
    def clean(self) -> bool:
        return not self.corrupt and not self.missing

    def as_dict(self) -> dict[str, Any]:
        return {
            "clean": self.clean,
            "checked": self.checked,
            "bytes_checked": self.bytes_checked,
            "corrupt": self.corrupt,
            "missing": self.missing,
            "orphans": self.orphans,
            "repaired": self.repaired,
        }


def verify_store(
    store: BlobStore,
    db: Database,
    *,
    sample: int | None = None,
    repair: bool = False,
    rng: random.Random | None = None,
) -> VerifyReport:
    """Check every blob (or a random `sample` of them) against its digest.

    With `repair`, corrupt and missing blobs are forgotten by the catalog (rows first) and
    corrupt files deleted, so the next `mirror sync` fetches them again.
    """
    report = VerifyReport()
    with db.session() as s:
        known = catalog.known_blobs(s)
        referenced = catalog.referenced_digests(s)
    on_disk = set(store.iter_digests())
    named = set(known) | referenced
    report.missing = sorted(named - on_disk)
    report.orphans = sorted(on_disk - named)
    candidates = sorted(on_disk)
    if sample is not None and sample < len(candidates):
        candidates = sorted((rng or random.Random()).sample(candidates, sample))
    good = []
    for digest in candidates:
        try:
            ok = store.verify(digest)
        except FileNotFoundError:
            report.missing.append(digest)
            continue
        except OSError:
            ok = False
        report.checked += 1
        with contextlib.suppress(OSError):
            report.bytes_checked += store.size(digest)
        if ok:
            good.append(digest)
        else:
            report.corrupt.append(digest)
    with db.session() as s:
        catalog.mark_verified(s, good)
        if repair and (report.corrupt or report.missing):
            catalog.forget_blobs(s, report.corrupt + report.missing)
    if repair:
        for digest in report.corrupt:
            store.delete(digest)
        report.repaired = len(report.corrupt) + len(report.missing)
    return report
