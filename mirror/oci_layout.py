"""The mirror root's `index.json`: every mirrored image tag, named by its full reference.

Each live image tag whose files are all stored gets one descriptor with
`org.opencontainers.image.ref.name` set to `<registry name>/<repository>:<tag>` (e.g.
`nvcr.io/nvidia/pytorch:24.01-py3`), so `skopeo copy oci:$MIRROR_HOME:<ref> ...` works with no
help from us. Regenerated from the catalog after every sync and import (atomic write).
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import selectinload

from mirror.blobstore import EMPTY_INDEX
from mirror.db import Database
from mirror.fsutil import atomic_write
from mirror.paths import MirrorPaths, names_a_registry
from mirror.schema import Blob, Entry, Version

REF_NAME = "org.opencontainers.image.ref.name"
DEFAULT_REGISTRY = "nvcr.io"


def set_registry_name(db: Database, name: str) -> None:
    """Remember which registry NGC's repositories came from (a test peer, a chained mirror)."""
    from mirror.schema import Meta

    with db.session() as s:
        row = s.get(Meta, "ngc_registry")
        if row is None:
            s.add(Meta(key="ngc_registry", value=name))
        else:
            row.value = name


def reference(path: str, registry: str) -> str:
    """Docker's rule: a first component with '.' or ':' (or 'localhost') names a registry;
    otherwise the repository is NGC's and lives on `registry`."""
    return path if names_a_registry(path) else f"{registry}/{path}"


def index_document(
    db: Database, *, paths: set[str] | None = None, blobs: set[str] | None = None
) -> dict[str, Any]:
    """The index of every publishable image tag; restricted to entries in `paths` and to
    tags whose every piece is in `blobs` when given (a bundle's own index.json)."""
    from mirror.schema import Meta

    manifests = []
    with db.session() as s:
        meta = s.get(Meta, "ngc_registry")
        registry = meta.value if meta else DEFAULT_REGISTRY
        entries = s.scalars(
            select(Entry)
            .where(Entry.kind == "image", Entry.removed_snapshot_id.is_(None))
            .options(selectinload(Entry.versions).selectinload(Version.files))
            .order_by(Entry.path)
        )
        for e in entries:
            if paths is not None and e.path not in paths:
                continue
            for v in sorted(e.versions, key=lambda x: x.version):
                if v.removed_snapshot_id is not None or not v.manifest_digest:
                    continue
                if not v.files or not all(f.blob_digest for f in v.files):
                    continue  # unpublished: something it references is missing
                if blobs is not None and not all(f.blob_digest in blobs for f in v.files):
                    continue  # a delta bundle without all of this tag's pieces
                # Docker-format tags are named through their OCI view (mirror.oci_convert)
                view = {f.path: f.blob_digest for f in v.files}
                digest = (
                    view.get("oci-index.json") or view.get("oci-manifest.json") or v.manifest_digest
                )
                blob = s.get(Blob, digest)
                if blob is None:
                    continue
                manifests.append(
                    {
                        "mediaType": blob.media_type
                        or "application/vnd.oci.image.manifest.v1+json",
                        "digest": digest,
                        "size": blob.size,
                        "annotations": {REF_NAME: f"{reference(e.path, registry)}:{v.version}"},
                    }
                )
    return {**EMPTY_INDEX, "manifests": manifests}


def write_index(paths: MirrorPaths, db: Database) -> int:
    doc = index_document(db)
    atomic_write(paths.index_json, (json.dumps(doc, indent=2) + "\n").encode())
    return len(doc["manifests"])
