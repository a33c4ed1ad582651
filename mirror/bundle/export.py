"""`mirror export DEST`: write what a site lacks as a verifiable, optionally signed bundle.

What goes in: the catalog delta since a base snapshot (0 for a full bundle; `--since N`; or the
newest snapshot a site confirmed with a receipt), and every blob its files reference — minus,
for `--site`, the blobs of bundles that site already confirmed. Re-running an interrupted
export finishes it: blobs already copied into a directory bundle are kept (size-checked), the
manifest is written last, so a bundle without a manifest is visibly unfinished.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tarfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from mirror import catalog
from mirror.blobstore import OCI_LAYOUT, BlobStore
from mirror.bundle import delta
from mirror.bundle.lacking import entries_using, lacking_at
from mirror.bundle.manifest import CATALOG, MANIFEST, SIGNATURE, Manifest, Part, sign
from mirror.bundle.receipt import confirmed_blobs, ingest_receipt
from mirror.bundle.tarparts import PartWriter
from mirror.db import Database
from mirror.errors import IntegrityError, StoreError, UsageError
from mirror.fsutil import atomic_write, fsync_dir, store_error
from mirror.progress import Progress
from mirror.schema import Export, ExportBlob, Site


@dataclass
class ExportPlan:
    base: int
    target: int
    site: str | None
    upserts: int = 0
    removals: int = 0
    blobs: list[tuple[str, int]] = field(default_factory=list)
    bytes_saved: int = 0  # blobs the site already confirmed having
    catalog_bytes: int = 0
    parts: int = 0
    free_bytes: int | None = None
    images: set[str] = field(default_factory=set)  # image entries in the delta

    @property
    def blob_bytes(self) -> int:
        return sum(size for _, size in self.blobs)

    @property
    def total_bytes(self) -> int:
        return self.blob_bytes + self.catalog_bytes

    def as_dict(self) -> dict[str, Any]:
        return {
            "base_snapshot": self.base,
            "target_snapshot": self.target,
            "site": self.site,
            "upserts": self.upserts,
            "removals": self.removals,
            "blobs": len(self.blobs),
            "blob_bytes": self.blob_bytes,
            "catalog_bytes": self.catalog_bytes,
            "total_bytes": self.total_bytes,
            "bytes_saved": self.bytes_saved,
            "parts": self.parts,
            "free_bytes": self.free_bytes,
            "fits": self.free_bytes is None or self.free_bytes >= self.total_bytes,
        }


@dataclass
class ExportResult:
    plan: ExportPlan
    bundle_id: str | None = None
    dest: str | None = None
    format: str = "dir"
    parts: list[Part] = field(default_factory=list)
    copied: int = 0
    reused: int = 0
    signed: bool = False
    nothing_to_do: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {
            **self.plan.as_dict(),
            "bundle_id": self.bundle_id,
            "dest": self.dest,
            "format": self.format,
            "parts_written": [p.name for p in self.parts],
            "blobs_copied": self.copied,
            "blobs_reused": self.reused,
            "signed": self.signed,
            "nothing_to_do": self.nothing_to_do,
        }


def _free_bytes(dest: Path) -> int:
    probe = dest
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    return shutil.disk_usage(probe).free


def _plan(
    s: Session, store: BlobStore, *, since: int | None, site: str | None, split: int | None
) -> tuple[ExportPlan, list[bytes]]:
    target = catalog.latest_complete_snapshot(s)
    if site is not None:
        row = s.get(Site, site)
        base = row.confirmed_snapshot if row else 0
    else:
        base = since or 0
    if base > target:
        raise UsageError(f"snapshot {base} is newer than this mirror's latest ({target})")
    plan = ExportPlan(base=base, target=target, site=site)
    lacking = lacking_at(s, site) if site else set()
    have = (confirmed_blobs(s, site) - lacking) if site else set()
    lines: list[bytes] = []
    wanted: dict[str, int] = {}
    # entries whose bytes the site lacks go again (bundle/lacking.py), even if unchanged
    for rec in delta.delta_records(s, base, also=entries_using(s, lacking)):
        if rec["op"] == "remove":
            plan.removals += 1
        else:
            plan.upserts += 1
            if rec["kind"] == "image":
                plan.images.add(rec["path"])
            for digest, size in delta.record_blobs(rec):
                if digest in have:
                    plan.bytes_saved += size if digest not in wanted else 0
                    continue
                wanted[digest] = size
        lines.extend(delta.encode([rec]))
    missing = [d for d in wanted if not store.has(d)]
    if missing:
        raise IntegrityError(
            f"{len(missing)} blob(s) the catalog references are missing from "
            f"the store (first: {missing[0]})",
            hint="run `mirror verify --repair` and `mirror sync` first",
        )
    plan.blobs = sorted(wanted.items())
    plan.catalog_bytes = sum(len(x) for x in lines)
    if split:
        plan.parts = max(1, -(-(plan.total_bytes + 1024 * (len(plan.blobs) + 4)) // split))
    return plan, lines


def export_bundle(
    db: Database,
    store: BlobStore,
    dest: Path,
    *,
    since: int | None = None,
    site: str | None = None,
    receipt: Path | None = None,
    fmt: str = "dir",
    split: int | None = None,
    sign_key: Path | None = None,
    dry_run: bool = False,
    progress: Progress | None = None,
) -> ExportResult:
    """Plan (and unless dry_run, write) a bundle at `dest`. The caller holds the mirror lock."""
    if fmt not in ("dir", "tar"):
        raise UsageError(f"unknown format {fmt!r}", hint="use --format dir or --format tar")
    if split and fmt != "tar":
        raise UsageError("--split needs --format tar")
    if split is not None and split < 1024 * 1024:
        # checked before DEST is touched: PartWriter would refuse it only after the old
        # manifest in DEST was already removed
        raise UsageError("--split must be at least 1MiB", hint="e.g. --split 4GiB for FAT32")
    if receipt is not None and site is None:
        raise UsageError("--receipt needs --site NAME (whose receipt it is)")
    with db.session() as s:
        if receipt is not None:
            # a dry run plans with the receipt too, then rolls it back (it writes nothing)
            ingest_receipt(s, site or "", receipt)
        source_id = catalog.mirror_id(s) if not dry_run else "dry-run"
        plan, lines = _plan(s, store, since=since, site=site, split=split)
        if dry_run:
            s.rollback()
    plan.free_bytes = _free_bytes(dest)
    result = ExportResult(plan=plan, format=fmt, dest=str(dest))
    if dry_run:
        return result
    if site is not None and not plan.upserts and not plan.removals:
        result.nothing_to_do = True
        return result
    if plan.free_bytes < plan.total_bytes:
        raise StoreError(
            f"{dest} has {plan.free_bytes} bytes free, the bundle needs {plan.total_bytes}",
            hint="use a larger medium or --split with parts",
        )
    dest.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        (dest / MANIFEST).unlink()  # an old manifest must not vouch for new content
    catalog_bytes = b"".join(lines)
    import hashlib

    manifest = Manifest(
        bundle_id=str(uuid.uuid4()),
        source_mirror_id=source_id,
        base_snapshot=plan.base,
        target_snapshot=plan.target,
        created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        format=fmt,
        catalog_sha256=hashlib.sha256(catalog_bytes).hexdigest(),
        catalog_size=len(catalog_bytes),
        catalog_records=plan.upserts + plan.removals,
        blobs=[{"digest": d, "size": n} for d, n in plan.blobs],
        site=site,
        totals={
            "entries": plan.upserts,
            "removals": plan.removals,
            "blobs": len(plan.blobs),
            "bytes": plan.blob_bytes,
        },
    )
    index_bytes = _bundle_index(db, plan)
    bar = progress or Progress()
    bar.start(plan.blob_bytes, len(plan.blobs))
    try:
        if fmt == "dir":
            _write_dir(store, dest, catalog_bytes, index_bytes, plan, result, bar)
        else:
            manifest.parts = _write_tar(store, dest, catalog_bytes, index_bytes, plan, split, bar)
    finally:
        bar.close()
        result.parts = manifest.parts
    raw = manifest.to_bytes()
    if sign_key is not None:
        atomic_write(dest / SIGNATURE, sign(raw, sign_key))
        result.signed = True
    else:
        with contextlib.suppress(FileNotFoundError):
            (dest / SIGNATURE).unlink()
    atomic_write(dest / MANIFEST, raw)  # last: its presence says "complete"
    fsync_dir(dest)
    result.bundle_id = manifest.bundle_id
    with db.session() as s:
        s.add(
            Export(
                bundle_id=manifest.bundle_id,
                site=site,
                base_snapshot=plan.base,
                target_snapshot=plan.target,
                created_at=catalog.utcnow(),
                manifest_sha256=hashlib.sha256(raw).hexdigest(),
                blob_count=len(plan.blobs),
                bytes=plan.blob_bytes,
            )
        )
        s.flush()
        s.add_all(ExportBlob(bundle_id=manifest.bundle_id, digest=d) for d, _ in plan.blobs)
        if site is not None and s.get(Site, site) is None:
            s.add(Site(name=site, confirmed_snapshot=0))
    return result


def _copy_blob(store: BlobStore, digest: str, size: int, target: Path) -> bool:
    """Copy one blob into a bundle directory; False if an earlier run already did."""
    try:
        if target.stat().st_size == size:
            return False
    except FileNotFoundError:
        pass
    tmp = target.with_name(f".{target.name}.partial")
    try:
        shutil.copyfile(store.paths.blob(digest), tmp)  # copy_file_range/sendfile on Linux
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        if tmp.stat().st_size != size:
            raise IntegrityError("store blob has the wrong size", subject=digest)
        os.replace(tmp, target)
    except OSError as exc:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise store_error(exc, target, "writing") from exc
    return True


def _bundle_index(db: Database, plan: ExportPlan) -> bytes:
    """The bundle's own index.json: the image tags it carries completely, by full reference,
    so `skopeo copy oci:BUNDLE:<ref>` reads images straight out of the bundle."""
    from mirror.oci_layout import index_document

    doc = index_document(db, paths=plan.images, blobs={d for d, _ in plan.blobs})
    return (json.dumps(doc, indent=2) + "\n").encode()


def _write_dir(
    store: BlobStore,
    dest: Path,
    catalog_bytes: bytes,
    index_bytes: bytes,
    plan: ExportPlan,
    result: ExportResult,
    bar: Progress,
) -> None:
    blobs = dest / "blobs" / "sha256"
    blobs.mkdir(parents=True, exist_ok=True)
    atomic_write(dest / CATALOG, catalog_bytes)
    atomic_write(dest / "oci-layout", OCI_LAYOUT)
    atomic_write(dest / "index.json", index_bytes)
    for digest, size in plan.blobs:
        if _copy_blob(store, digest, size, blobs / digest[7:]):
            result.copied += 1
        else:
            result.reused += 1
        bar.advance(size)
        bar.file_done()
    fsync_dir(blobs)


def _member(name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = size, 0, 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def _write_tar(
    store: BlobStore,
    dest: Path,
    catalog_bytes: bytes,
    index: bytes,
    plan: ExportPlan,
    split: int | None,
    bar: Progress,
) -> list[Part]:
    import io

    for old in dest.glob("bundle.tar.*"):
        old.unlink()
    writer = PartWriter(dest, split or (1 << 62))
    with tarfile.open(
        fileobj=writer,
        mode="w|",
        format=tarfile.PAX_FORMAT,  # type: ignore[call-overload]
        bufsize=1 << 20,
    ) as tar:
        # catalog first, so `mirror bundle inspect` reads it without scanning blobs
        tar.addfile(_member(CATALOG, len(catalog_bytes)), io.BytesIO(catalog_bytes))
        tar.addfile(_member("oci-layout", len(OCI_LAYOUT)), io.BytesIO(OCI_LAYOUT))
        tar.addfile(_member("index.json", len(index)), io.BytesIO(index))
        for digest, size in plan.blobs:
            with store.open(digest) as fh:
                tar.addfile(_member(f"blobs/sha256/{digest[7:]}", size), fh)
            bar.advance(size)
            bar.file_done()
    return writer.close()


def sites(db: Database) -> list[dict[str, Any]]:
    with db.session() as s:
        return [
            {"name": r.name, "confirmed_snapshot": r.confirmed_snapshot, "mirror_id": r.mirror_id}
            for r in s.scalars(select(Site))
        ]
