"""Property tests for the pure planner."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from mirror.config import Selection
from mirror.models import ListedEntry
from mirror.plan import LocalEntry, LocalVersion, make_plan, select_versions

names = st.text(alphabet="abcdefgh_", min_size=1, max_size=6)
stamps = st.sampled_from(["2024-01-01", "2024-02-01", "2025-01-01"])

listed = st.builds(
    ListedEntry,
    kind=st.sampled_from(["model", "resource"]),
    org=st.sampled_from(["nvidia", "acme"]),
    team=st.none() | st.just("tao"),
    name=names,
    updated=stamps,
    latest_version=st.sampled_from(["1", "2", None]),
)
versions = st.lists(
    st.builds(
        LocalVersion,
        version=st.sampled_from(["1", "2", "3", "10"]),
        status=st.sampled_from(["UPLOAD_COMPLETE", "UPLOAD_PENDING"]),
        size=st.none() | st.integers(0, 10_000),
        created=st.none() | stamps,
        files_listed=st.booleans(),
        missing_blobs=st.integers(0, 2),
    ),
    max_size=4,
    unique_by=lambda v: v.version,
)
selections = st.lists(
    st.builds(
        Selection,
        pattern=st.sampled_from(["*", "nvidia/*", "acme/tao/*"]),
        kinds=st.sampled_from([("model",), ("resource",), ("model", "resource")]),
        latest=st.none() | st.integers(1, 3),
        max_size=st.none() | st.integers(0, 10_000),
    ),
    max_size=3,
)


def _synced(item: ListedEntry, vs: list[LocalVersion]) -> LocalEntry:
    """The local state right after a complete refresh of `item`."""
    done = tuple(LocalVersion(v.version, v.status, v.size, v.created, True, 0) for v in vs)
    return LocalEntry(item.kind, item.path, item.stamp, False, done)


@given(
    st.lists(listed, max_size=12, unique_by=lambda e: (e.kind, e.path)),
    st.lists(versions, min_size=12, max_size=12),
    selections,
)
def test_plan_after_a_complete_sync_is_empty(
    listing: list[ListedEntry], vss: list[list[LocalVersion]], sels: list[Selection]
) -> None:
    local = {(i.kind, i.path): _synced(i, vs) for i, vs in zip(listing, vss, strict=False)}
    plan = make_plan(listing, local, sels)
    assert plan.refresh == [] and plan.removed == []
    assert plan.unchanged == len(local)


@given(
    st.lists(listed, max_size=12),
    st.dictionaries(st.tuples(st.sampled_from(["model", "resource"]), names), stamps, max_size=6),
    selections,
)
def test_every_listed_entry_lands_in_exactly_one_bucket(
    listing: list[ListedEntry], old: dict[tuple[str, str], str], sels: list[Selection]
) -> None:
    local = {k: LocalEntry(k[0], k[1], v, False) for k, v in old.items()}
    plan = make_plan(listing, local, sels)
    keys = [(e.kind, e.path) for e in plan.refresh]
    assert len(keys) == len(set(keys))
    assert len(keys) + plan.unchanged == plan.listed == len({(e.kind, e.path) for e in listing})
    assert set(plan.removed) == set(local) - {(e.kind, e.path) for e in listing}


@given(versions, selections)
def test_selected_versions_are_complete_and_within_caps(
    vs: list[LocalVersion], sels: list[Selection]
) -> None:
    chosen = select_versions("model", "nvidia/x", vs, sels)
    by_id = {v.version: v for v in vs}
    assert all(by_id[c].status == "UPLOAD_COMPLETE" for c in chosen)
    matching = [s for s in sels if s.matches("model", "nvidia/x")]
    if not matching:
        assert chosen == []
    for c in chosen:
        size = by_id[c].size
        assert any(s.max_size is None or size is None or size <= s.max_size for s in matching)
    limits = [s.latest for s in matching]
    if limits and None not in limits:
        assert len(chosen) <= sum(x for x in limits if x)
