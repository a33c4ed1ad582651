"""Pure planning: what a sync must do, from (upstream listing, local state, selection).

Nothing here does I/O, so the planner is property-tested (tests/test_plan_properties.py): a
plan made right after applying the same listing asks for nothing.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

from mirror.config import Selection
from mirror.models import ListedEntry, RemoteVersion

COMPLETE = "UPLOAD_COMPLETE"


class VersionLike(Protocol):
    @property
    def version(self) -> str: ...
    @property
    def status(self) -> str: ...
    @property
    def size(self) -> int | None: ...
    @property
    def created(self) -> str | None: ...


@dataclass(frozen=True)
class LocalVersion:
    version: str
    status: str
    size: int | None
    created: str | None
    files_listed: bool
    missing_blobs: int  # file rows of this version without a published blob


@dataclass(frozen=True)
class LocalEntry:
    kind: str
    path: str
    stamp: str | None
    removed: bool
    versions: tuple[LocalVersion, ...] = ()


@dataclass
class SyncPlan:
    """The metadata part of a sync plan (bytes are planned once file lists are known)."""

    listed: int = 0
    new: list[ListedEntry] = field(default_factory=list)
    changed: list[ListedEntry] = field(default_factory=list)
    incomplete: list[ListedEntry] = field(default_factory=list)
    unchanged: int = 0
    removed: list[tuple[str, str]] = field(default_factory=list)

    @property
    def refresh(self) -> list[ListedEntry]:
        return [*self.new, *self.changed, *self.incomplete]


def _natural(version: str) -> tuple[object, ...]:
    return tuple(int(p) if p.isdigit() else p for p in re.split(r"(\d+)", version))


V = TypeVar("V", bound=VersionLike)


def newest_first(versions: Iterable[V]) -> list[V]:
    """Order by creation date, then by natural version order, newest first."""
    return sorted(versions, key=lambda v: (v.created or "", _natural(v.version)), reverse=True)


def matching(selections: Sequence[Selection], kind: str, path: str) -> list[Selection]:
    return [s for s in selections if s.matches(kind, path)]


def select_versions(
    kind: str, path: str, versions: Iterable[VersionLike], selections: Sequence[Selection]
) -> list[str]:
    """Version ids whose bytes the config wants: per matching `[[select]]`, the `latest` N
    complete uploads within `max_size`; the union over selections, newest first."""
    chosen: dict[str, None] = {}
    ordered = newest_first(v for v in versions if v.status == COMPLETE)
    for sel in matching(selections, kind, path):
        fits = [
            v for v in ordered if sel.max_size is None or v.size is None or v.size <= sel.max_size
        ]
        for v in fits if sel.latest is None else fits[: sel.latest]:
            chosen[v.version] = None
    return [v.version for v in ordered if v.version in chosen]


def is_complete(local: LocalEntry, selections: Sequence[Selection]) -> bool:
    """True if every selected version of a local entry is listed and fully stored."""
    by_id = {v.version: v for v in local.versions}
    for vid in select_versions(local.kind, local.path, local.versions, selections):
        v = by_id[vid]
        if not v.files_listed or v.missing_blobs:
            return False
    return True


def make_plan(
    listing: Iterable[ListedEntry],
    local: Mapping[tuple[str, str], LocalEntry],
    selections: Sequence[Selection],
    *,
    listing_complete: bool = True,
) -> SyncPlan:
    """Diff the upstream listing against the catalog.

    An entry is refreshed (info, versions, file lists, bytes) when it is new, when its listing
    stamp differs from the one recorded at its last complete refresh, or when a selected
    version is not fully stored (a failed or interrupted download, or a widened selection).
    Entries missing from a complete listing are marked removed.
    """
    plan = SyncPlan()
    seen: set[tuple[str, str]] = set()
    for item in listing:
        key = (item.kind, item.path)
        if key in seen:
            continue
        seen.add(key)
        plan.listed += 1
        mine = local.get(key)
        if mine is None:
            plan.new.append(item)
        elif mine.stamp is not None and (mine.stamp != item.stamp or mine.removed):
            plan.changed.append(item)
        elif mine.stamp is None or not is_complete(mine, selections):
            # never completely refreshed (a failed or interrupted run), or a selected
            # version lacks bytes (a widened selection, a repaired store)
            plan.incomplete.append(item)
        else:
            plan.unchanged += 1
    if listing_complete:
        plan.removed = sorted(k for k, v in local.items() if k not in seen and not v.removed)
    return plan


def versions_to_list(
    kind: str,
    path: str,
    versions: Sequence[RemoteVersion],
    latest: str | None,
    selections: Sequence[Selection],
) -> list[str]:
    """Versions whose file lists we fetch: the selected ones plus the latest (for `show`)."""
    wanted = select_versions(kind, path, versions, selections)
    ids = {v.version for v in versions}
    if latest and latest in ids and latest not in wanted:
        wanted.append(latest)
    elif not latest and versions and not wanted:
        wanted.append(newest_first(versions)[0].version)
    return wanted
