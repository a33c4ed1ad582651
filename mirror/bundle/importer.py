"""`mirror import SRC`: verify everything, then publish blobs and apply the delta at once.

Order of trust: signature (if required) → manifest → every part → catalog.jsonl → every blob,
each hashed while it is copied into `tmp/` as a *staged* blob. Nothing is published and no row
is written until all of it verified; a failure removes what this import staged, so the store
and the database are exactly as before. After verification the staged blobs are renamed into
`blobs/` and the delta is applied in one transaction. A killed import resumes: verified staged
blobs are kept, partial copies continue, and a bundle already recorded is a no-op.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from mirror import catalog
from mirror.blobstore import CHUNK, BlobStore
from mirror.bundle import delta
from mirror.bundle.lacking import (
    missing_references,
    site_lacking,
    update_site_lacking,
)
from mirror.bundle.manifest import CATALOG, MANIFEST, SIGNATURE, Manifest, verify_signature
from mirror.bundle.receipt import build_receipt
from mirror.bundle.tarparts import PartReader, check_member
from mirror.config import Selection
from mirror.db import Database
from mirror.errors import IntegrityError, MirrorError, UsageError
from mirror.fsutil import atomic_write, fsync_dir
from mirror.progress import Progress
from mirror.schema import Import


@dataclass
class ImportResult:
    bundle_id: str
    source_mirror_id: str
    base_snapshot: int
    target_snapshot: int
    signed: bool
    signature_verified: bool
    already_imported: bool = False
    blobs_copied: int = 0
    blobs_present: int = 0
    bytes_copied: int = 0
    upserts: int = 0
    removals: int = 0
    blobs_lacking: int = 0  # referenced, neither in the bundle nor here: see bundle/lacking.py
    blobs_requested: int = 0  # of those, the ones this site wants: its receipt asks for them
    snapshot_id: int | None = None
    receipt: str | None = None
    changed: list[tuple[str, str]] = field(default_factory=list)
    removed: list[tuple[str, str]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in self.__dict__.items() if k not in ("changed", "removed")}
        return d


def bundle_dir(src: Path) -> Path:
    return src.parent if src.name == MANIFEST else src


def read_manifest(
    src: Path, verify_key: Path | None, require_signature: bool
) -> tuple[Manifest, bool, bool]:
    """Load and check the manifest; return (manifest, signed, signature verified)."""
    root = bundle_dir(src)
    try:
        raw = (root / MANIFEST).read_bytes()
    except FileNotFoundError:
        raise UsageError(
            f"{root} is not a bundle: no {MANIFEST}",
            hint="an export writes the manifest last; re-run the export if it was interrupted",
        ) from None
    sig_path = root / SIGNATURE
    signature = sig_path.read_bytes() if sig_path.exists() else None
    verified = False
    if verify_key is not None:
        verify_signature(raw, signature, verify_key)
        verified = True
    elif require_signature:
        raise UsageError(
            "a signed bundle is required but no verify key was given",
            hint="pass --verify-key KEY.pub",
        )
    return Manifest.from_bytes(raw, str(root / MANIFEST)), signature is not None, verified


def _check_chain(db: Database, m: Manifest) -> int:
    """The newest snapshot of m's source this mirror has; refuse a bundle whose base it lacks."""
    with db.session() as s:
        have = (
            s.scalar(
                select(func.max(Import.target_snapshot)).where(
                    Import.source_mirror_id == m.source_mirror_id
                )
            )
            or 0
        )
    if m.base_snapshot > have:
        what = (
            f"snapshots {have + 1}..{m.base_snapshot}"
            if m.base_snapshot > have + 1
            else f"snapshot {m.base_snapshot}"
        )
        raise UsageError(
            f"bundle {m.bundle_id} continues snapshot {m.base_snapshot} of mirror "
            f"{m.source_mirror_id}, but this mirror has "
            + (f"only up to snapshot {have}" if have else "nothing from it")
            + f": missing {what}",
            hint="import the earlier bundle(s) first, or carry this site's receipt back and "
            "run `mirror export --site NAME --receipt mirror-receipt.json`",
        )
    return int(have)


class _Stager:
    """Copies blobs into tmp/ as staged, verified blobs; forgets them all on failure."""

    def __init__(
        self, store: BlobStore, m: Manifest, result: ImportResult, bar: Progress | None = None
    ) -> None:
        self.bar = bar or Progress()
        self.store = store
        self.sizes = {b["digest"]: int(b["size"]) for b in m.blobs}
        self.result = result
        self.staged: list[str] = []

    def needed(self, digest: str) -> bool:
        if self.store.has(digest):
            self.result.blobs_present += 1
            return False
        if self.store.is_staged(digest):
            self.staged.append(digest)
            return False
        return True

    def copy(self, digest: str, fh: Any, *, seekable: bool) -> None:
        size = self.sizes[digest]
        with self.store.writer(digest, size, stage=True) as w:
            if w.offset:  # a partial copy from a killed import: continue after it
                # (a tar member of a `r|` stream is an io.BufferedReader too, but its
                # seek() fails on the stream: only plain files of a dir bundle may seek)
                if seekable:
                    fh.seek(w.offset)
                else:
                    _skip(fh, w.offset)
            while chunk := fh.read(CHUNK):
                w.write(chunk)
                self.bar.advance(len(chunk))
            w.commit()
        self.bar.file_done()
        self.staged.append(digest)
        self.result.blobs_copied += 1
        self.result.bytes_copied += size

    def discard(self) -> None:
        for digest in self.sizes:
            self.store.discard(digest)


def _skip(fh: Any, n: int) -> None:
    while n:
        chunk = fh.read(min(n, CHUNK))
        if not chunk:
            return
        n -= len(chunk)


def _stage_dir(root: Path, m: Manifest, stager: _Stager) -> bytes:
    catalog_bytes = (root / CATALOG).read_bytes() if (root / CATALOG).exists() else None
    if catalog_bytes is None:
        raise IntegrityError(f"{CATALOG} is missing", subject=str(root))
    _check_catalog(catalog_bytes, m)
    for digest in stager.sizes:
        if not stager.needed(digest):
            continue
        path = root / "blobs" / "sha256" / digest[7:]
        try:
            with open(path, "rb") as fh:
                stager.copy(digest, fh, seekable=True)
        except FileNotFoundError:
            raise IntegrityError(
                "blob listed in the manifest is missing from the bundle", subject=digest
            ) from None
    return catalog_bytes


def _stage_tar(root: Path, m: Manifest, stager: _Stager) -> bytes:
    reader = PartReader(root, m.parts)
    catalog_bytes: bytes | None = None
    seen: set[str] = set()
    with tarfile.open(fileobj=reader, mode="r|", bufsize=1 << 20) as tar:  # type: ignore[call-overload]
        for info in tar:
            what = check_member(info, seen, stager.sizes)
            if what is None:
                continue
            fh = tar.extractfile(info)
            assert fh is not None
            if what == CATALOG:
                catalog_bytes = fh.read()
                _check_catalog(catalog_bytes, m)
            elif what.startswith("sha256:") and stager.needed(what):
                stager.copy(what, fh, seekable=False)
    reader.drain()
    if catalog_bytes is None:
        raise IntegrityError(f"{CATALOG} is missing from the parts")
    absent = [d for d in stager.sizes if f"blobs/sha256/{d[7:]}" not in seen]
    if absent:
        raise IntegrityError(
            f"{len(absent)} blob(s) in the manifest are not in the parts", subject=absent[0]
        )
    return catalog_bytes


def _check_catalog(data: bytes, m: Manifest) -> None:
    actual = hashlib.sha256(data).hexdigest()
    if len(data) != m.catalog_size or actual != m.catalog_sha256:
        raise IntegrityError(
            "catalog digest mismatch", expected=m.catalog_sha256, actual=actual, subject=CATALOG
        )


def import_bundle(
    db: Database,
    store: BlobStore,
    src: Path,
    *,
    verify_key: Path | None = None,
    require_signature: bool = False,
    receipt_out: Path | None = None,
    progress: Progress | None = None,
    selections: Sequence[Selection] = (),
    registry_paths: set[str] | None = None,
) -> ImportResult:
    """Verify and import one bundle. The caller holds the mirror lock."""
    root = bundle_dir(src)
    m, signed, verified = read_manifest(src, verify_key, require_signature)
    result = ImportResult(
        bundle_id=m.bundle_id,
        source_mirror_id=m.source_mirror_id,
        base_snapshot=m.base_snapshot,
        target_snapshot=m.target_snapshot,
        signed=signed,
        signature_verified=verified,
    )
    with db.session() as s:
        if s.get(Import, m.bundle_id) is not None:
            result.already_imported = True
            # a run killed after its commit never wrote the receipt: finish the job now
            result.receipt = str(_write_receipt(build_receipt(s), root, store, receipt_out))
            return result
    have = _check_chain(db, m)
    # (a bundle at exactly our snapshot may carry entries sent again for blobs we lack; an
    # older one never gets in: its records would roll the catalog back)
    resend = m.target_snapshot == have and _brings_lacking(db, m)
    stale = m.target_snapshot < have or (m.target_snapshot == have and m.base_snapshot > 0)
    if stale and not resend:
        result.already_imported = True  # an older bundle than what we hold: nothing to add
        return result
    stager = _Stager(store, m, result, progress)
    stager.bar.start(m.blob_bytes, len(m.blobs))
    try:
        data = _stage_dir(root, m, stager) if m.format == "dir" else _stage_tar(root, m, stager)
        records = delta.parse(data.splitlines(keepends=True), CATALOG)
        missing = missing_references(records, set(stager.sizes), store)
        if missing and (m.site is None or m.base_snapshot == 0):
            # only a bundle for a named site leaves out blobs (those the site confirmed): in
            # any other bundle a missing one means it was damaged or tampered with
            digest, users = next(iter(missing.items()))
            raise IntegrityError(
                f"{users[0][1]} references blob {digest}, which is neither in the bundle nor "
                "in this mirror",
                hint="re-export with `mirror export --site NAME --receipt ...`",
            )
    except BaseException as exc:
        if isinstance(exc, MirrorError | OSError | tarfile.TarError | ValueError):
            stager.discard()
        if isinstance(exc, tarfile.TarError):
            raise IntegrityError(f"the tar stream is damaged: {exc}") from None
        raise
    finally:
        stager.bar.close()
    for digest in stager.staged:  # everything verified: publish
        store.publish_staged(digest)
    fsync_dir(store.paths.blobs)
    with db.session() as s:
        snap = catalog.new_snapshot(s, f"bundle:{m.bundle_id} from {m.source_mirror_id}")
        available = {d for d in stager.sizes if store.has(d)}
        available |= {d for r in records for d, _ in delta.record_blobs(r) if store.has(d)}
        result.upserts, result.removals = delta.apply(
            s, records, snap.id, available, stager.sizes, has=store.has
        )
        # files whose bytes are neither in the bundle nor here are recorded as not held; the
        # receipt asks the source for the ones this site wants (mirror/bundle/lacking.py)
        result.blobs_lacking = len(missing)
        asked = update_site_lacking(s, store, missing, selections, registry_paths or set())
        result.blobs_requested = len(set(asked) & set(missing))
        catalog.complete_snapshot(s, snap.id)
        s.add(
            Import(
                bundle_id=m.bundle_id,
                source_mirror_id=m.source_mirror_id,
                base_snapshot=m.base_snapshot,
                target_snapshot=m.target_snapshot,
                catalog_sha256=m.catalog_sha256,
                imported_at=catalog.utcnow(),
                snapshot_id=snap.id,
            )
        )
        result.snapshot_id = snap.id
        receipt = build_receipt(s)
    result.changed = [(r["kind"], r["path"]) for r in records if r["op"] == "upsert"]
    result.removed = [(r["kind"], r["path"]) for r in records if r["op"] == "remove"]
    result.receipt = str(_write_receipt(receipt, root, store, receipt_out))
    return result


def _brings_lacking(db: Database, m: Manifest) -> bool:
    """Whether a bundle no newer than this site carries blobs the site said it lacks (the
    source sent entries again for them: bundle/lacking.py)."""
    with db.session() as s:
        lacking = set(site_lacking(s))
    return any(b.get("digest") in lacking for b in m.blobs)


def _write_receipt(
    receipt: dict[str, Any], root: Path, store: BlobStore, receipt_out: Path | None
) -> Path:
    raw = (json.dumps(receipt, indent=1, sort_keys=True) + "\n").encode()
    receipts = store.paths.root / "receipts"
    receipts.mkdir(exist_ok=True)
    atomic_write(receipts / "latest.json", raw)
    target = receipt_out or root / "mirror-receipt.json"
    try:
        atomic_write(target, raw)
    except MirrorError:
        return receipts / "latest.json"  # read-only medium: the copy in the mirror root stays
    return target


def _tar_catalog(root: Path, m: Manifest) -> bytes | None:
    """catalog.jsonl from the first part(s) of a tar bundle (it is the first member)."""
    try:
        reader = PartReader(root, m.parts)
        with tarfile.open(fileobj=reader, mode="r|") as tar:  # type: ignore[call-overload]
            for info in tar:
                if info.name == CATALOG and info.isreg():
                    fh = tar.extractfile(info)
                    return fh.read() if fh else None
    except (MirrorError, tarfile.TarError):
        return None
    return None


def inspect_bundle(src: Path, verify_key: Path | None = None) -> dict[str, Any]:
    """Describe a bundle without importing it (reads the manifest and catalog.jsonl)."""
    root = bundle_dir(src)
    status = "unsigned"
    try:
        m, signed, verified = read_manifest(src, verify_key, False)
        status = "verified" if verified else ("signed (not verified)" if signed else "unsigned")
    except IntegrityError as exc:
        if verify_key is None:
            raise
        m, _, _ = read_manifest(src, None, False)
        status = f"INVALID: {exc.message}"
    data: bytes | None = None
    if m.format == "dir":
        with contextlib.suppress(FileNotFoundError):
            data = (root / CATALOG).read_bytes()
    else:
        data = _tar_catalog(root, m)
    entries: list[dict[str, Any]] = []
    catalog_ok = False
    if data is not None:
        catalog_ok = hashlib.sha256(data).hexdigest() == m.catalog_sha256
        for rec in delta.parse(data.splitlines(keepends=True), CATALOG):
            versions = [v["version"] for v in rec.get("versions", [])]
            entries.append(
                {
                    "op": rec["op"],
                    "kind": rec["kind"],
                    "path": rec["path"],
                    "display_name": rec.get("display_name"),
                    "versions": versions,
                }
            )
    return {
        "bundle_id": m.bundle_id,
        "format": m.format,
        "format_version": m.format_version,
        "source_mirror_id": m.source_mirror_id,
        "site": m.site,
        "created": m.created,
        "base_snapshot": m.base_snapshot,
        "target_snapshot": m.target_snapshot,
        "signature": status,
        "catalog_ok": catalog_ok,
        "entries": entries,
        "images": [e for e in entries if e["kind"] == "image"],
        "blobs": len(m.blobs),
        "blob_bytes": m.blob_bytes,
        "parts": [{"name": p.name, "size": p.size, "sha256": p.sha256} for p in m.parts],
    }
