"""Mirroring container images from `[[registry]]` sources into the one blob store.

Per repository: list tags, keep those matching the tag globs, GET each tag's manifest (small;
that is how a changed tag is noticed), keep the `latest` N by creation date, and for each kept
tag store the manifest byte-exact, the selected platforms' manifests, configs and layers.
Shared layers are stored once. A tag whose manifest and blobs are all stored already costs no
blob request.

Catalog shape: an image repository is an Entry of kind "image" whose path is
`<registry name>/<repository>`; a tag is a Version with `manifest_digest`; every stored piece
(manifests, configs, layers) is a File row pointing at its blob, so verify, gc, bundles and
search treat images like models. An index whose unselected platforms were not mirrored is still
stored byte-exact (its digest must not change); the missing platforms are simply absent, and
serving them answers 404 (MANIFEST_UNKNOWN), as a registry does for a deleted manifest.
"""

from __future__ import annotations

import fnmatch
import json
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select

from mirror import catalog
from mirror.blobstore import BlobStore
from mirror.config import RegistrySource
from mirror.db import Database
from mirror.errors import DiskFullError, MirrorError
from mirror.http import HttpClient
from mirror.models import ListedEntry, RemoteEntry, RemoteFile, RemoteVersion
from mirror.schema import Entry, ImageDate, Version
from mirror.sources.registry import Descriptor, Manifest, RegistryClient, image_blobs, platforms

log = logging.getLogger(__name__)


@dataclass
class TagPlan:
    tag: str
    manifest: Manifest
    created: str | None = None
    children: list[Manifest] = field(default_factory=list)
    blobs: list[tuple[str, Descriptor]] = field(default_factory=list)  # (file path, descriptor)

    extra: dict[str, bytes] = field(default_factory=dict)  # generated manifests, by digest

    @property
    def size(self) -> int:
        return sum(d.size for _, d in self.blobs)


@dataclass
class ImageReport:
    repositories: int = 0
    tags_listed: int = 0
    tags_selected: int = 0
    tags_changed: int = 0
    blobs_fetched: int = 0
    bytes_fetched: int = 0
    blobs_present: int = 0
    bytes_to_fetch: int = 0
    failures: list[str] = field(default_factory=list)
    errors: list[MirrorError] = field(default_factory=list)


def _instant(created: str | None) -> datetime:
    """A config's `created` as an aware datetime, so offsets and fractions compare right
    (as strings, `...T01:00:00+02:00` sorts after `...T23:30:00Z` of the day before);
    missing or unreadable dates are oldest."""
    if created:
        try:
            when = datetime.fromisoformat(created)
        except ValueError:
            pass
        else:
            return when if when.tzinfo else when.replace(tzinfo=UTC)
    return datetime.min.replace(tzinfo=UTC)


def _same(known: dict[str, Version], whole: set[str], versions: list[RemoteVersion]) -> bool:
    """Whether a run would write what the catalog already holds: the same live tags, digests
    and dates, every piece stored (`whole`)."""
    return set(known) == {v.version for v in versions} and all(
        v.version in whole
        and known[v.version].manifest_digest == v.manifest_digest
        and known[v.version].created == v.created
        for v in versions
    )


def _entry_parts(name: str, repo: str) -> tuple[str, str | None, str]:
    parts = repo.split("/")
    team = "/".join(parts[:-1]) or None
    return name, team, parts[-1]


class ImageSync:
    def __init__(
        self,
        source: RegistrySource,
        http: HttpClient,
        store: BlobStore,
        db: Database,
        *,
        ngc: RemoteEntry | None = None,
        dry_run: bool = False,
        on_progress: Callable[[int], None] | None = None,
    ) -> None:
        self.source = source
        # an NGC-listed repository: the entry keeps NGC's path and description and all of
        # NGC's tags; this job adds the bytes of the selected tags (source.tags, exact names)
        self.ngc = ngc
        self.client = RegistryClient(
            source.url, http, username=source.username, password=source.password
        )
        self.store = store
        self.db = db
        self.dry_run = dry_run
        self.on_progress = on_progress
        self.concurrency = http.settings.concurrency
        self.report = ImageReport()
        self.touched: list[tuple[str, str]] = []
        self._counted: set[str] = set()  # blobs planned in this run (shared layers count once)

    def run(self, snapshot_id: int | None) -> ImageReport:
        for repo in self.source.repositories:
            self.report.repositories += 1
            try:
                self._repo(repo, snapshot_id)
            except DiskFullError:
                raise  # every other write would fail too: the sync stops
            except MirrorError as exc:
                self.report.errors.append(exc)
                self.report.failures.append(f"image {self.source.name}/{repo}: {exc}")
        return self.report

    def _known(self, path: str) -> tuple[dict[str, Version], set[str]]:
        """Live tags of the entry, and those of them whose pieces are all stored."""
        with self.db.session() as s:
            e = s.scalar(select(Entry).where(Entry.kind == "image", Entry.path == path))
            if e is None:
                return {}, set()
            live = {v.version: v for v in e.versions if v.removed_snapshot_id is None}
            whole = {t for t, v in live.items() if v.files and all(f.blob_digest for f in v.files)}
            return live, whole

    def _repo(self, repo: str, snapshot_id: int | None) -> None:
        org, team, name = _entry_parts(self.source.name, repo)
        path = f"{self.source.name}/{repo}"
        if self.ngc is not None:
            path = self.ngc.listed.path
            tags = list(self.source.tags)  # NGC already chose them: no tag listing needed
        else:
            tags = [
                t
                for t in self.client.tags(repo)
                if any(fnmatch.fnmatchcase(t, g) for g in self.source.tags)
            ]
        self.report.tags_listed += len(tags)
        known, whole = self._known(path)
        plans = []
        for tag in tags:
            m = self.client.manifest(repo, tag)
            old = known.get(tag)
            plan = TagPlan(tag=tag, manifest=m)
            if old is not None and old.manifest_digest == m.digest:
                plan.created = old.created  # unchanged tag: no config fetch needed
            plans.append(plan)
        self._dates_known(plans)
        for plan in plans:
            if plan.created is None:
                self._expand(repo, plan)
        self._dates_learned(plans)
        plans.sort(key=lambda p: (_instant(p.created), p.tag), reverse=True)
        chosen = plans[: self.source.latest] if self.source.latest else plans
        self.report.tags_selected += len(chosen)
        versions = []
        stored: dict[str, str] = {}
        failed = False
        too_big: dict[str, int] = {}
        for plan in chosen:
            old = known.get(plan.tag)
            if old is None or old.manifest_digest != plan.manifest.digest:
                self.report.tags_changed += 1
            if not plan.blobs:
                self._expand(repo, plan)
            if self.source.max_size is not None and plan.size > self.source.max_size:
                log.info("skipping %s:%s (%d bytes > max_size)", path, plan.tag, plan.size)
                too_big[plan.tag] = plan.size
                continue
            ok = self._fetch(repo, plan, path)
            files = [RemoteFile(path=p, size=d.size, sha256=d.digest[7:]) for p, d in plan.blobs]
            if ok:
                stored.update({f"{plan.tag}/{p}": d.digest for p, d in plan.blobs})
            failed = failed or not ok
            versions.append(
                RemoteVersion(
                    version=plan.tag,
                    status="UPLOAD_COMPLETE",
                    size=plan.size,
                    file_count=len(files),
                    created=plan.created or None,
                    files=files,
                    manifest_digest=plan.manifest.digest,
                )
            )
        if self.dry_run or snapshot_id is None:
            return
        if self.ngc is None and not failed and _same(known, whole, versions):
            # nothing new: no catalog write, so no bundle sends this repository again (it
            # still counts as refreshed: it was checked and is whole)
            self.touched.append(("image", path))
            return
        if failed and self.ngc is None:
            # a new tag did not arrive whole: the tags it was to replace stay listed (and
            # pullable) until it does, as an older model version stays beside a failed new one
            versions += self._carried(known, {p.tag for p in chosen}, tags)
        listed = ListedEntry(
            kind="image",
            org=org,
            team=team,
            name=name,
            display_name=repo,
            latest_version=versions[0].version if versions else None,
        )
        remote = RemoteEntry(listed=listed, versions=versions)
        stamp = None
        if self.ngc is not None:  # NGC's metadata and every NGC tag; ours carry the bytes
            mine = {v.version: v for v in versions}
            # NGC's tag dates stay (they chose the tags and rank them in `mirror prune`);
            # ours add the bytes, the digest and the size
            merged = [
                replace(
                    mine[v.version],
                    created=v.created or mine[v.version].created,
                    updated=v.updated or mine[v.version].updated,
                )
                if v.version in mine
                # a tag skipped for max_size keeps its measured size, so selection (and
                # prune) see that it does not fit instead of waiting for it forever
                else replace(v, size=too_big[v.version])
                if v.version in too_big
                # a tag held here keeps the digest and size of what is held (NGC may list
                # another digest: the tag was pushed again), until prune releases it
                else replace(
                    v,
                    manifest_digest=known[v.version].manifest_digest,
                    size=known[v.version].size,
                )
                if v.version in whole
                else v
                for v in self.ngc.versions
            ]
            remote = RemoteEntry(
                listed=self.ngc.listed,
                description=self.ngc.description,
                short_description=self.ngc.short_description,
                versions=merged,
            )
            ok = len(stored) == sum(len(v.files or []) for v in versions)
            stamp = self.ngc.listed.stamp if ok else None
        with self.db.session() as s:
            for plan in chosen:
                for p, d in plan.blobs:
                    if f"{plan.tag}/{p}" in stored:
                        catalog.record_blob(s, d.digest, d.size, d.media_type)
            catalog.upsert_entry(s, remote, snapshot_id, stored, stamp=stamp)
        self.touched.append(("image", path))

    @staticmethod
    def _carried(
        known: dict[str, Version], chosen: set[str], upstream: list[str]
    ) -> list[RemoteVersion]:
        """Live tags outside this run's window that upstream still has, unchanged (files
        None: upsert_entry keeps their file rows as they are)."""
        return [
            RemoteVersion(
                version=v.version,
                status=v.status,
                size=v.size,
                file_count=v.file_count,
                created=v.created,
                updated=v.updated,
                manifest_digest=v.manifest_digest,
            )
            for tag, v in sorted(known.items())
            if tag not in chosen and tag in upstream
        ]

    def _dates_known(self, plans: list[TagPlan]) -> None:
        """Creation dates remembered by manifest digest ("" = the config had none): ranking
        a tag that is not mirrored then needs neither its config nor its child manifests."""
        wanted = {p.manifest.digest for p in plans if p.created is None}
        if not wanted:
            return
        with self.db.session() as s:
            known = {
                d: c
                for d, c in s.execute(
                    select(ImageDate.manifest_digest, ImageDate.created).where(
                        ImageDate.manifest_digest.in_(wanted)
                    )
                )
            }
        for plan in plans:
            if plan.created is None and plan.manifest.digest in known:
                plan.created = known[plan.manifest.digest] or ""

    def _dates_learned(self, plans: list[TagPlan]) -> None:
        if self.dry_run:
            return
        with self.db.session() as s:
            for plan in plans:
                if plan.blobs:  # expanded in this run (None: its config has no date)
                    s.merge(ImageDate(manifest_digest=plan.manifest.digest, created=plan.created))

    def _expand(self, repo: str, plan: TagPlan) -> None:
        """Walk the tag's manifest: children for the selected platforms, configs, layers."""
        top = plan.manifest
        pieces: list[tuple[str, Descriptor]] = [
            ("manifest.json", Descriptor(top.digest, len(top.data), top.media_type))
        ]
        images: list[tuple[str, Manifest]] = []
        if top.is_index:
            wanted = set(self.source.platforms)
            for desc in platforms(top.data):
                if desc.platform is None or str(desc.platform) not in wanted:
                    continue
                child = self.client.manifest(repo, desc.digest)
                plan.children.append(child)
                prefix = str(desc.platform)
                pieces.append(
                    (
                        f"{prefix}/manifest.json",
                        Descriptor(child.digest, len(child.data), child.media_type),
                    )
                )
                images.append((prefix, child))
        else:
            images.append(("", top))
        self._oci_view(plan, images, pieces)
        for prefix, m in images:
            blobs = image_blobs(m.data)
            base = f"{prefix}/" if prefix else ""
            pieces.append((f"{base}config.json", blobs.config))
            seen = set()
            for n, layer in enumerate(blobs.layers):
                if layer.digest in seen:
                    continue
                seen.add(layer.digest)
                pieces.append((f"{base}layers/{n:03d}", layer))
            if plan.created is None:
                plan.created = self._created(repo, blobs.config)
        plan.blobs = pieces

    def _oci_view(
        self,
        plan: TagPlan,
        images: list[tuple[str, Manifest]],
        pieces: list[tuple[str, Descriptor]],
    ) -> None:
        """For Docker-format tags, add the OCI manifest/index the layout's index.json names
        (see mirror.oci_convert); stored like any other piece of the tag."""
        from mirror.oci_convert import docker_to_oci_manifest, needs_view, oci_index
        from mirror.sources.registry import OCI_INDEX, OCI_MANIFEST, sha256_digest

        if not needs_view(plan.manifest.media_type):
            return
        children = []
        for prefix, m in images:
            data = m.data if m.media_type == OCI_MANIFEST else docker_to_oci_manifest(m.data)
            digest = sha256_digest(data)
            plan.extra[digest] = data
            name = f"{prefix}/oci-manifest.json" if prefix else "oci-manifest.json"
            pieces.append((name, Descriptor(digest, len(data), OCI_MANIFEST)))
            if prefix:
                os_, _, arch = prefix.partition("/")
                arch, _, variant = arch.partition("/")
                platform = {
                    "os": os_,
                    "architecture": arch,
                    **({"variant": variant} if variant else {}),
                }
                children.append(
                    {
                        "mediaType": OCI_MANIFEST,
                        "digest": digest,
                        "size": len(data),
                        "platform": platform,
                    }
                )
        if plan.manifest.is_index:
            data = oci_index(children)
            digest = sha256_digest(data)
            plan.extra[digest] = data
            pieces.append(("oci-index.json", Descriptor(digest, len(data), OCI_INDEX)))

    def _created(self, repo: str, config: Descriptor) -> str | None:
        """The image's creation date from its config (fetched into the store: it is kept)."""
        if not self.store.has(config.digest):
            if self.dry_run:
                return None
            self.client.fetch_blob(repo, config.digest, config.size, self.store)
            # a blob GET like the layers' in _fetch: count it the same way
            self.report.blobs_fetched += 1
            self.report.bytes_fetched += config.size
            if config.digest not in self._counted:
                self._counted.add(config.digest)
                self.report.bytes_to_fetch += config.size
        try:
            with self.store.open(config.digest) as fh:
                doc: Any = json.loads(fh.read(1 << 20))
        except (ValueError, MirrorError):
            return None
        created = doc.get("created") if isinstance(doc, dict) else None
        return created if isinstance(created, str) else None

    def _fetch(self, repo: str, plan: TagPlan, path: str) -> bool:
        """Store every piece of one tag; False (and a failure listed) if any is missing.

        Layers download in parallel threads (hashing and writes release the GIL; one blob at
        a time left the sync at 1.5x the curl floor); the report is updated here, in the
        calling thread, from the results.
        """
        manifests = {plan.manifest.digest: plan.manifest.data}
        manifests.update({c.digest: c.data for c in plan.children})
        manifests.update(plan.extra)
        ok = True
        wanted: dict[str, Descriptor] = {}
        for _, d in plan.blobs:
            if self.store.has(d.digest):
                self.report.blobs_present += 1
                continue
            if d.digest not in self._counted:
                self._counted.add(d.digest)
                self.report.bytes_to_fetch += d.size
            wanted.setdefault(d.digest, d)
        if self.dry_run:
            return True

        def one(d: Descriptor) -> Descriptor:
            if d.digest in manifests:
                self.store.put_bytes(manifests[d.digest], d.digest)
            else:
                self.client.fetch_blob(
                    repo, d.digest, d.size, self.store, on_progress=self.on_progress
                )
            return d

        with ThreadPoolExecutor(self.concurrency, thread_name_prefix="layers") as pool:
            futures = {pool.submit(one, d): d for d in wanted.values()}
            for fut, d in futures.items():
                try:
                    fut.result()
                except DiskFullError:
                    for other in futures:
                        other.cancel()
                    raise
                except MirrorError as exc:
                    ok = False
                    self.report.errors.append(exc)
                    self.report.failures.append(f"image {path}:{plan.tag} {d.digest}: {exc}")
                    continue
                if d.digest not in manifests:
                    self.report.blobs_fetched += 1
                    self.report.bytes_fetched += d.size
        return ok
