"""What the read-only registry serves: repositories, tags and the digests each one may hand out.

Built from the mirror root's `index.json` (oci_layout.py). Every entry's
`org.opencontainers.image.ref.name` is `<registry name>/<repository>:<tag>`; the served
repository is that reference without its tag and without its first component when that names a
registry host (contains "." or ":" or is "localhost", Docker's rule). So
`127.0.0.1:5000/test/multi:1.0` is served as `test/multi:1.0` and
`nvcr.io/nvidia/pytorch:24.01-py3` as `nvidia/pytorch:24.01-py3`. The full form with the host
as first path component is not served. When two hosts give the same repository and tag, the
reference that sorts first wins (logged).

A digest belongs to a repository when it is reachable from one of its tags: the tagged manifest
or index, the children of an index that are in the store (nested indexes too), and the config
and layers of every such manifest. Manifests are read with a size cap and checked against their
digest before they are served; a manifest that fails the check is left out (logged), so a
corrupted manifest is a 404 rather than wrong bytes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from dataclasses import dataclass, field
from typing import Any

from mirror.blobstore import BlobStore
from mirror.errors import DigestError, StoreError
from mirror.oci_layout import REF_NAME
from mirror.paths import MirrorPaths, validate_digest

log = logging.getLogger(__name__)

MAX_MANIFEST = 4 * 1024 * 1024  # containers/image refuses bigger bodies (oci.md §1.6)
MAX_DEPTH = 8  # nested indexes deeper than this are not followed

INDEX_TYPES = frozenset(
    {
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
    }
)

NAME_RE = re.compile(
    r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*)*"
)
TAG_RE = re.compile(r"[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}")


def split_reference(ref_name: str) -> tuple[str, str] | None:
    """`host/repo/path:tag` -> (`repo/path`, `tag`); None when it is not a servable reference."""
    slash = ref_name.rfind("/")
    colon = ref_name.rfind(":")
    if colon <= slash:
        return None
    path, tag = ref_name[:colon], ref_name[colon + 1 :]
    first, sep, rest = path.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        path = rest
    if not NAME_RE.fullmatch(path) or not TAG_RE.fullmatch(tag):
        return None
    return path, tag


@dataclass(frozen=True)
class Manifest:
    digest: str
    media_type: str
    body: bytes


@dataclass
class Repository:
    name: str
    tags: dict[str, str] = field(default_factory=dict)  # tag -> manifest digest
    manifests: dict[str, str] = field(default_factory=dict)  # digest -> media type
    blobs: set[str] = field(default_factory=set)


@dataclass
class Snapshot:
    """One reading of index.json; immutable once built."""

    stamp: tuple[int, int, int] | None
    repositories: dict[str, Repository] = field(default_factory=dict)


class RepoIndex:
    """Reads index.json and manifests; caches parsed manifests by digest (they never change)."""

    def __init__(self, root: os.PathLike[str] | str) -> None:
        from pathlib import Path

        self.paths = MirrorPaths(Path(root))
        self.store = BlobStore(self.paths)
        self._manifests: dict[str, Manifest] = {}
        self.snapshot = Snapshot(stamp=None)

    def stamp(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.paths.index_json)
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def stale(self) -> bool:
        return self.stamp() != self.snapshot.stamp

    def refresh(self) -> Snapshot:
        """Re-read index.json when its mtime/size/inode changed; keep the last good on error."""
        stamp = self.stamp()
        if stamp == self.snapshot.stamp:
            return self.snapshot
        if stamp is None:
            self.snapshot = Snapshot(stamp=None)
            return self.snapshot
        try:
            doc = json.loads(self.paths.index_json.read_bytes())
            entries = doc["manifests"]
            if not isinstance(entries, list):
                raise ValueError("manifests is not a list")
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning(
                "cannot read %s (%s); still serving the previous one", self.paths.index_json, exc
            )
            return self.snapshot
        self.snapshot = self._build(stamp, entries)
        return self.snapshot

    def manifest(self, digest: str, media_type: str) -> Manifest | None:
        """The stored, digest-checked manifest `digest`, or None (missing, too big, corrupt)."""
        if digest in self._manifests:
            return self._manifests[digest]
        found = self._read_manifest(digest, media_type)
        if found is not None:  # only good ones: a missing one may arrive with the next sync
            self._manifests[digest] = found
        return found

    def _read_manifest(self, digest: str, media_type: str) -> Manifest | None:
        try:
            validate_digest(digest)
            if not self.store.has(digest):
                return None
            with self.store.open(digest) as fh:
                body = fh.read(MAX_MANIFEST + 1)
        except (DigestError, OSError, StoreError) as exc:  # StoreError: a race with gc
            log.warning("manifest %s unreadable: %s", digest, exc)
            return None
        if len(body) > MAX_MANIFEST:
            log.warning("manifest %s is larger than %d bytes; not served", digest, MAX_MANIFEST)
            return None
        if "sha256:" + hashlib.sha256(body).hexdigest() != digest:
            log.error("manifest %s does not match its digest (corrupt store?); not served", digest)
            return None
        try:
            doc = json.loads(body)
        except ValueError:
            doc = None
        if isinstance(doc, dict) and isinstance(doc.get("mediaType"), str) and doc["mediaType"]:
            media_type = doc["mediaType"]
        return Manifest(digest, media_type or "application/octet-stream", body)

    def _build(self, stamp: tuple[int, int, int], entries: list[Any]) -> Snapshot:
        snap = Snapshot(stamp=stamp)
        refs: list[tuple[str, dict[str, Any]]] = []
        for entry in entries:
            if not isinstance(entry, dict):
                continue
            annotations = entry.get("annotations")
            ref = annotations.get(REF_NAME) if isinstance(annotations, dict) else None
            if isinstance(ref, str):
                refs.append((ref, entry))
        refs.sort(key=lambda item: item[0])
        for ref, entry in refs:
            split = split_reference(ref)
            digest = entry.get("digest")
            media_type = entry.get("mediaType")
            if split is None or not isinstance(digest, str):
                log.warning("index.json entry %r is not servable; skipped", ref)
                continue
            name, tag = split
            repo = snap.repositories.setdefault(name, Repository(name))
            if tag in repo.tags:
                log.warning("%s: tag %s also named by %r; keeping the first", name, tag, ref)
                continue
            try:
                validate_digest(digest)
            except DigestError:
                log.warning("index.json entry %r has an invalid digest; skipped", ref)
                continue
            repo.tags[tag] = digest
            self._walk(repo, digest, media_type if isinstance(media_type, str) else "", 0)
        return snap

    def _walk(self, repo: Repository, digest: str, media_type: str, depth: int) -> None:
        if digest in repo.manifests or depth > MAX_DEPTH:
            return
        found = self.manifest(digest, media_type)
        if found is None:
            return  # an unselected platform, or not stored: 404
        repo.manifests[digest] = found.media_type
        repo.blobs.add(digest)  # distribution serves manifests on the blobs endpoint too
        try:
            doc = json.loads(found.body)
        except ValueError:
            return
        if not isinstance(doc, dict):
            return
        children = doc.get("manifests")
        if isinstance(children, list):
            for child in children:
                if isinstance(child, dict) and isinstance(child.get("digest"), str):
                    child_type = child.get("mediaType")
                    self._walk(
                        repo,
                        child["digest"],
                        child_type if isinstance(child_type, str) else "",
                        depth + 1,
                    )
        descriptors: list[Any] = []
        if isinstance(doc.get("config"), dict):
            descriptors.append(doc["config"])
        if isinstance(doc.get("layers"), list):
            descriptors.extend(doc["layers"])
        for desc in descriptors:
            if isinstance(desc, dict) and isinstance(desc.get("digest"), str):
                repo.blobs.add(desc["digest"])
