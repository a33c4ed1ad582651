"""The sync engine: lock → list → plan → fetch metadata → fetch bytes → catalog → run record.

Threads, not asyncio: hashing and file writes release the GIL, and on two cores threads are
what reaches the disk's speed (reference/performance.md). Only the main thread touches the
database; workers return results. Each entry is committed as soon as its last file is
published, so a killed sync keeps everything finished before the kill and resumes the rest
(partial files continue with Range).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import uuid
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any

from mirror import catalog
from mirror.blobstore import BlobStore, BlobWriter, fetch_into
from mirror.config import RegistrySource, Settings
from mirror.db import Database, open_catalog_db
from mirror.errors import (
    DiskFullError,
    HTTPStatusError,
    IntegrityError,
    MirrorError,
    UpstreamError,
)
from mirror.fsutil import MirrorLock
from mirror.http import HttpClient
from mirror.models import ListedEntry, RemoteEntry, RemoteFile
from mirror.paths import MirrorPaths, names_a_registry
from mirror.plan import SyncPlan, make_plan, select_versions, versions_to_list
from mirror.progress import Progress
from mirror.sources.ngc import NgcSource

log = logging.getLogger(__name__)

# room a sync keeps free beyond the bytes it plans to fetch (catalog, WAL, search index):
# this much, or a twentieth of a smaller filesystem
SPACE_MARGIN = 32 * 1024 * 1024


@dataclass
class FileTask:
    """One blob to fetch; several (entry, version, path) may share it."""

    entry: ListedEntry
    version: str
    file: RemoteFile
    users: list[tuple[str, str]] = field(default_factory=list)  # (entry path, "ver/path")


@dataclass
class SyncReport:
    dry_run: bool
    run_id: int | None = None
    snapshot_id: int | None = None
    outcome: str = "ok"
    listed: int = 0
    new: int = 0
    changed: int = 0
    incomplete: int = 0
    unchanged: int = 0
    removed: int = 0
    refreshed: int = 0
    versions_selected: int = 0
    files_to_fetch: int = 0
    bytes_to_fetch: int = 0
    files_present: int = 0
    bytes_present: int = 0
    files_fetched: int = 0
    bytes_fetched: int = 0
    requests: int = 0
    failures: list[str] = field(default_factory=list)
    index_error: str | None = None
    images_tags: int = 0
    images_changed: int = 0

    def counts(self) -> dict[str, int]:
        keys = (
            "listed",
            "new",
            "changed",
            "incomplete",
            "unchanged",
            "removed",
            "refreshed",
            "versions_selected",
            "files_to_fetch",
            "bytes_to_fetch",
            "files_present",
            "bytes_present",
            "files_fetched",
            "images_tags",
            "images_changed",
            "bytes_fetched",
            "requests",
        )
        return {k: int(getattr(self, k)) for k in keys}

    def as_dict(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "run_id": self.run_id,
            "snapshot_id": self.snapshot_id,
            "outcome": self.outcome,
            **self.counts(),
            "failures": list(self.failures),
            "index_error": self.index_error,
        }


def _guest_token(paths: MirrorPaths) -> str:
    """A stable guest id per mirror, like the CLI's persisted one (ngc-api.md §2.1)."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, str(paths.root.resolve())))


class UrlCache:
    """Presigned URLs per version, fetched once, lazily (they expire), refetchable."""

    def __init__(self, source: NgcSource) -> None:
        self.source = source
        self._urls: dict[tuple[str, str, str], dict[str, str]] = {}
        self._locks: dict[tuple[str, str, str], threading.Lock] = {}
        self._guard = threading.Lock()

    def get(self, entry: ListedEntry, version: str, path: str, *, refresh: bool = False) -> str:
        key = (entry.kind, entry.path, version)
        with self._guard:
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:
            if refresh or key not in self._urls:
                self._urls[key] = self.source.download_urls(entry, version)
            urls = self._urls[key]
        if path not in urls:
            raise UpstreamError(f"{entry.path}:{version} has no download URL for {path!r}")
        return urls[path]


class SyncEngine:
    def __init__(
        self,
        settings: Settings,
        *,
        progress: Progress | None = None,
        http: HttpClient | None = None,
    ) -> None:
        self.settings = settings
        self.paths = MirrorPaths(settings.home)
        self.store = BlobStore(self.paths)
        self.progress = progress or Progress()
        self.http = http or HttpClient(settings.http)
        self.source = NgcSource(settings.ngc, self.http, guest_token=_guest_token(self.paths))
        self.urls = UrlCache(self.source)
        self.errors: list[MirrorError] = []
        self._remotes: list[RemoteEntry] = []

    # -- phases ----------------------------------------------------------------------------
    def sync_images(
        self, db: Database, report: SyncReport, snapshot_id: int | None
    ) -> list[tuple[str, str]]:
        """Mirror the `[[registry]]` sources; return the (kind, path) entries touched."""
        from mirror.image_sync import ImageSync

        touched: list[tuple[str, str]] = []
        jobs: list[tuple[RegistrySource, RemoteEntry | None]] = [
            (source, None) for source in self.settings.registries
        ]
        jobs += self._ngc_image_jobs(db, dry_run=report.dry_run)
        for source, ngc in jobs:
            job = ImageSync(
                source,
                self.http,
                self.store,
                db,
                ngc=ngc,
                dry_run=report.dry_run,
                on_progress=self.progress.advance,
            )
            try:
                r = job.run(snapshot_id)
            except DiskFullError:
                raise
            except MirrorError as exc:
                self.errors.append(exc)
                report.failures.append(f"registry {source.name}: {exc}")
                continue
            touched.extend(job.touched)
            self.errors.extend(r.errors)
            report.failures.extend(r.failures)
            report.images_tags += r.tags_selected
            report.images_changed += r.tags_changed
            report.files_fetched += r.blobs_fetched
            report.bytes_fetched += r.bytes_fetched
            report.files_present += r.blobs_present
            report.bytes_to_fetch += r.bytes_to_fetch
            # every repository written to the catalog counts: a failed tag elsewhere must not
            # turn a source with good tags into "nothing refreshed" (exit 3, no index.json)
            report.refreshed += len(job.touched)
        return touched

    def _ngc_image_jobs(
        self, db: Database, *, dry_run: bool
    ) -> list[tuple[RegistrySource, RemoteEntry | None]]:
        """One registry job per NGC-listed repository with selected tags (nvcr.io, with the
        API key as `$oauthtoken`'s password, or anonymous)."""
        from urllib.parse import urlsplit

        ngc = self.settings.ngc
        name = urlsplit(ngc.registry_url).netloc
        jobs: list[tuple[RegistrySource, RemoteEntry | None]] = []
        for remote in self._remotes:
            li = remote.listed
            if li.kind != "image":
                continue
            tags = select_versions("image", li.path, remote.versions, self.settings.select)
            if not tags:
                continue
            caps = [s.max_size for s in self.settings.select if s.matches("image", li.path)]
            source = RegistrySource(
                url=ngc.registry_url,
                name=name,
                repositories=(li.path,),
                tags=tuple(tags),
                platforms=ngc.platforms,
                max_size=None if None in caps or not caps else max(c for c in caps if c),
                username="$oauthtoken" if ngc.api_key else None,
                password=ngc.api_key,
            )
            jobs.append((source, remote))
        if jobs and not dry_run and not self.settings.ngc.registry_url.endswith("nvcr.io"):
            from mirror.oci_layout import set_registry_name

            set_registry_name(db, name)
        return jobs

    def list_upstream(self) -> list[ListedEntry]:
        items: list[ListedEntry] = []
        for kind in self.settings.ngc.kinds:
            items.extend(self.source.list_entries(kind))
        return items

    def fetch_metadata(self, item: ListedEntry) -> RemoteEntry:
        if item.kind == "image":
            return self._image_metadata(item)
        info = self.source.info(item)
        versions = self.source.versions(item)
        remote = RemoteEntry(
            listed=item,
            description=str(info.get("description") or ""),
            short_description=str(info.get("shortDescription") or ""),
            versions=versions,
        )
        latest = str(info.get("latestVersionIdStr") or item.latest_version or "") or None
        wanted = versions_to_list(item.kind, item.path, versions, latest, self.settings.select)
        by_id = {v.version: v for v in versions}
        for vid in wanted:
            by_id[vid].files = self.source.files(item, vid)
        return remote

    def _image_metadata(self, item: ListedEntry) -> RemoteEntry:
        """A container repository listed by NGC: its description and tags (metadata only;
        image bytes come through `[[registry]]` sources, see mirror.image_sync)."""
        info = self.source.info(item)
        return RemoteEntry(
            listed=item,
            description=str(info.get("description") or ""),
            short_description=str(info.get("shortDescription") or ""),
            versions=self.source.image_tags(item),
        )

    def _download(self, task: FileTask) -> tuple[str, int, int]:
        """Fetch one blob; return (digest, size, bytes received)."""
        f = task.file
        digest = f.digest
        if digest and self.store.has(digest):
            return digest, f.size, 0
        if f.size == 0 and digest:
            return self.store.put_bytes(b"", digest), 0, 0
        url = self.urls.get(task.entry, task.version, f.path)

        def fetch(writer: BlobWriter) -> int:
            return self.http.download(
                url, writer, headers=self.source.download_headers, on_progress=self.progress.advance
            )

        def refresh(exc: MirrorError) -> bool:
            nonlocal url
            if not (isinstance(exc, HTTPStatusError) and exc.status in (401, 403, 404)):
                return False
            # presigned URLs expire: ask for fresh ones once
            url = self.urls.get(task.entry, task.version, f.path, refresh=True)
            return True

        got, received = fetch_into(
            self.store,
            digest,
            f.size,
            fetch,
            what=f.path,
            on_resumed=self.progress.advance,
            retry_once=refresh,
        )
        return got, f.size, received

    # -- the run ---------------------------------------------------------------------------
    def run(self, *, dry_run: bool = False) -> SyncReport:
        self.paths.root.mkdir(parents=True, exist_ok=True)
        if dry_run:
            return self._run(dry_run=True)
        with MirrorLock(self.paths.lock, "sync"):
            return self._run(dry_run=False)

    def _run(self, *, dry_run: bool) -> SyncReport:
        report = SyncReport(dry_run=dry_run)
        self.store.init_layout()
        db = Database(open_catalog_db(self.paths.db))
        try:
            return self._run_db(db, report)
        finally:
            self.http.close()
            db.engine.dispose()

    def _run_db(self, db: Database, report: SyncReport) -> SyncReport:
        dry = report.dry_run
        run_id = None
        if not dry:
            with db.session() as s:
                run_id = catalog.start_run(s, "sync").id
            report.run_id = run_id
        try:
            listing = self.list_upstream()
        except MirrorError as exc:
            report.outcome = "failed"
            if run_id is not None:
                with db.session() as s:
                    catalog.finish_run(
                        s,
                        run_id,
                        outcome="failed",
                        counts=report.counts(),
                        bytes_fetched=0,
                        failures=[],
                        snapshot_id=None,
                        error=str(exc),
                    )
            raise
        with db.session() as s:
            # [[registry]] repositories are not NGC's: its listing must not mark them removed
            local = {
                k: v
                for k, v in catalog.local_state(s, self.settings.ngc.kinds).items()
                if not names_a_registry(k[1])
            }
        plan = make_plan(listing, local, self.settings.select)
        self._fill_plan_counts(report, plan)
        snapshot_id = None
        if not dry:
            with db.session() as s:
                snapshot_id = catalog.new_snapshot(s, self.settings.ngc.api_url).id
            report.snapshot_id = snapshot_id
        touched: list[tuple[str, str]] = []
        try:
            self._execute(db, plan, report, snapshot_id)
            touched = self.sync_images(db, report, snapshot_id)
        except BaseException as exc:
            if run_id is not None and not isinstance(exc, KeyboardInterrupt):
                with db.session() as s:
                    catalog.finish_run(
                        s,
                        run_id,
                        outcome="failed",
                        counts=report.counts(),
                        bytes_fetched=report.bytes_fetched,
                        failures=report.failures,
                        snapshot_id=None,
                        error=str(exc),
                    )
            raise
        report.requests = self.http.requests_made
        if dry:
            return report
        assert snapshot_id is not None and run_id is not None
        # nothing refreshed and every failure was upstream refusing: that is "unreachable"
        # (exit 3), not a partial run
        total_fail = (
            report.refreshed == 0
            and bool(self.errors)
            and all(
                type(e) is not IntegrityError and isinstance(e, UpstreamError) for e in self.errors
            )
        )
        report.outcome = "failed" if total_fail else ("partial" if report.failures else "ok")
        with db.session() as s:
            if report.outcome != "failed":
                report.removed = catalog.mark_removed(s, plan.removed, snapshot_id)
                catalog.complete_snapshot(s, snapshot_id)
            else:
                catalog.drop_snapshot_if_unused(s, snapshot_id)
                report.snapshot_id = None
            catalog.finish_run(
                s,
                run_id,
                outcome=report.outcome,
                counts=report.counts(),
                bytes_fetched=report.bytes_fetched,
                failures=report.failures,
                snapshot_id=report.snapshot_id,
            )
        if total_fail:
            raise self.errors[0]
        self._update_index(db, plan, report, touched)
        if self.settings.registries or "image" in self.settings.ngc.kinds:
            from mirror.oci_layout import write_index

            write_index(self.paths, db)
        return report

    def _update_index(
        self, db: Database, plan: SyncPlan, report: SyncReport, touched: list[tuple[str, str]]
    ) -> None:
        """Re-index what this run touched; a broken index never fails the sync itself."""
        from mirror.indexing import refresh_index

        try:
            changed = [(e.kind, e.path) for e in plan.refresh] + touched
            refresh_index(self.paths, db, changed, plan.removed)
        except Exception as exc:  # the catalog is already committed; search can rebuild
            log.error("search index update failed (%s); run `mirror index rebuild`", exc)
            report.index_error = str(exc)

    @staticmethod
    def _fill_plan_counts(report: SyncReport, plan: SyncPlan) -> None:
        report.listed, report.unchanged = plan.listed, plan.unchanged
        report.new, report.changed = len(plan.new), len(plan.changed)
        report.incomplete, report.removed = len(plan.incomplete), len(plan.removed)

    def _execute(
        self, db: Database, plan: SyncPlan, report: SyncReport, snapshot_id: int | None
    ) -> None:
        workers = self.settings.http.concurrency
        with ThreadPoolExecutor(workers, thread_name_prefix="meta") as pool:
            futures = {pool.submit(self.fetch_metadata, item): item for item in plan.refresh}
            remotes: list[RemoteEntry] = []
            for fut, item in futures.items():
                try:
                    remotes.append(fut.result())
                except MirrorError as exc:
                    self.errors.append(exc)
                    report.failures.append(f"{item.kind} {item.path}: {exc}")
        self._remotes = remotes
        tasks, per_entry = self._file_tasks(remotes, report)
        if report.dry_run:
            return
        assert snapshot_id is not None
        try:
            self._check_space(tasks, report)
        except DiskFullError:
            # the catalog still moves on (new entries searchable, versions listed); the next
            # sync fetches the bytes, as for any entry whose selected files are missing
            idle: dict[str, set[str]] = {path: set() for path in per_entry}
            self._download_and_commit(db, remotes, {}, idle, report, snapshot_id)
            raise
        self._download_and_commit(db, remotes, tasks, per_entry, report, snapshot_id)

    def _check_space(self, tasks: dict[str, FileTask], report: SyncReport) -> None:
        """Refuse to start downloads that cannot fit (what partials already hold counts)."""
        import shutil

        from mirror.render import human_bytes

        need = report.bytes_to_fetch
        for t in tasks.values():
            if t.file.digest:
                with contextlib.suppress(OSError):
                    need -= self.paths.partial(t.file.digest).stat().st_size
        if need <= 0:
            return
        disk = shutil.disk_usage(self.paths.root)
        margin = min(SPACE_MARGIN, disk.total // 20)
        if need + margin > disk.free:
            raise DiskFullError(
                f"this sync needs {human_bytes(need)} more for {len(tasks)} files, but "
                f"{self.paths.root} has {human_bytes(disk.free)} free (and keeps "
                f"{human_bytes(margin)} for the catalog); nothing was downloaded",
                hint="free space or move MIRROR_HOME; select less ([[select]] latest, "
                "max_size); `mirror prune` releases versions the config no longer selects; "
                "the catalog was updated",
            )

    def _file_tasks(
        self, remotes: list[RemoteEntry], report: SyncReport
    ) -> tuple[dict[str, FileTask], dict[str, set[str]]]:
        """Deduplicate selected files by digest; count what is present and what to fetch."""
        tasks: dict[str, FileTask] = {}
        per_entry: dict[str, set[str]] = {}
        for remote in remotes:
            li = remote.listed
            pending = per_entry.setdefault(li.path, set())
            for vid in select_versions(li.kind, li.path, remote.versions, self.settings.select):
                report.versions_selected += 1
                version = next(v for v in remote.versions if v.version == vid)
                for f in version.files or []:
                    key = f.digest or f"nohash:{li.path}:{vid}/{f.path}"
                    if f.digest and self.store.has(f.digest):
                        report.files_present += 1
                        report.bytes_present += f.size
                    elif key not in tasks:
                        tasks[key] = FileTask(li, vid, f)
                        report.files_to_fetch += 1
                        report.bytes_to_fetch += f.size
                    if key in tasks:
                        tasks[key].users.append((li.path, f"{vid}/{f.path}"))
                        pending.add(key)
        return tasks, per_entry

    def _download_and_commit(
        self,
        db: Database,
        remotes: list[RemoteEntry],
        tasks: dict[str, FileTask],
        per_entry: dict[str, set[str]],
        report: SyncReport,
        snapshot_id: int,
    ) -> None:
        by_path = {r.listed.path: r for r in remotes}
        stored: dict[str, dict[str, str]] = {p: {} for p in by_path}
        failed: set[str] = set()

        def commit(path: str) -> None:
            remote = by_path[path]
            self._fill_present(remote, stored[path])
            ok = path not in failed
            with db.session() as s:
                for digest in set(stored[path].values()):
                    catalog.record_blob(s, digest, self.store.size(digest))
                catalog.upsert_entry(
                    s, remote, snapshot_id, stored[path], stamp=remote.listed.stamp if ok else None
                )
            if ok:
                report.refreshed += 1

        for path, pending in per_entry.items():
            if not pending:
                commit(path)
        self.progress.start(report.bytes_to_fetch, report.files_to_fetch)
        try:
            with ThreadPoolExecutor(
                self.settings.http.concurrency, thread_name_prefix="fetch"
            ) as pool:
                running: dict[Future[tuple[str, int, int]], str] = {
                    pool.submit(self._download, t): k for k, t in tasks.items()
                }
                try:
                    while running:
                        done, _ = wait(running, return_when=FIRST_COMPLETED)
                        for fut in done:
                            key = running.pop(fut)
                            self._finish_task(
                                db, tasks[key], key, fut, stored, failed, per_entry, report, commit
                            )
                except BaseException:
                    for fut in running:  # a full disk, ^C: start nothing more
                        fut.cancel()
                    raise
        finally:
            self.progress.close()

    def _finish_task(
        self,
        db: Database,
        task: FileTask,
        key: str,
        fut: Future[tuple[str, int, int]],
        stored: dict[str, dict[str, str]],
        failed: set[str],
        per_entry: dict[str, set[str]],
        report: SyncReport,
        commit: Callable[[str], None],
    ) -> None:
        try:
            digest, size, received = fut.result()
        except DiskFullError:
            raise  # every other write would fail too: stop the run
        except MirrorError as exc:
            self.errors.append(exc)
            for path, _ in task.users:
                failed.add(path)
            report.failures.append(
                f"{task.entry.kind} {task.entry.path}:{task.version}/{task.file.path}: {exc}"
            )
        else:
            report.files_fetched += 1
            report.bytes_fetched += received
            self.progress.file_done()
            with db.session() as s:
                catalog.record_blob(s, digest, size)
            for path, vpath in task.users:
                stored[path][vpath] = digest
        for path, _ in task.users:
            pending = per_entry[path]
            pending.discard(key)
            if not pending:
                commit(path)
                pending.add("__committed__")  # never commit twice

    def _fill_present(self, remote: RemoteEntry, stored: dict[str, str]) -> None:
        """Files whose blob was already in the store count as stored for this entry."""
        for v in remote.versions:
            for f in v.files or []:
                vpath = f"{v.version}/{f.path}"
                if vpath not in stored and f.digest and self.store.has(f.digest):
                    stored[vpath] = f.digest


def run_sync(
    settings: Settings, *, dry_run: bool = False, progress: Progress | None = None
) -> SyncReport:
    """Run one sync (or plan it with dry_run) and return the report.

    Raises PartialRunError-worthy information in the report (failures) rather than raising;
    fatal problems (listing unreachable, lock held) raise MirrorError subclasses.
    """
    return SyncEngine(settings, progress=progress).run(dry_run=dry_run)
