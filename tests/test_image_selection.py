"""Which image tags a `[[registry]]` source mirrors, and what a dry run says it would cost.

- `latest = N` keeps the N newest tags by the `created` date in their image configs (not by
  tag name, not by push order), also when dates carry offsets or fractional seconds;
- `max_size` skips a tag whose blobs add up to more;
- `sync --dry-run --json` reports `bytes_to_fetch` = the unique bytes still missing (a layer
  shared by several tags counts once; unselected platforms not at all) and fetches no blob.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import require_tool, run_mirror
from tests.registry_peer import FaultProxy, Layout, Registry
from tests.test_image_support import (
    Blob,
    MiB,
    add_image,
    add_index,
    env_for,
    index_refs,
    needed_blobs,
    push,
    registry_config,
    stored,
    tar_layer,
    verify_clean,
)

NAME = "sel.test"
# tag -> created; alphabetical order and push order both disagree with the dates
DATED = {
    "a-newest": "2026-06-01T00:00:00Z",
    "m-middle": "2025-06-01T12:00:00Z",
    "z-oldest": "2024-01-01T00:00:00Z",
}
# the same instant-ordering trap with RFC 3339 offsets and fractions: as strings, "zoned"
# (2026-06-01T01:00+02:00 = 2026-05-31T23:00Z) sorts after "utc" although it is older, and
# "frac" (half a second later than "whole") sorts before it
ZONED = {
    "zoned": "2026-06-01T01:00:00+02:00",
    "utc": "2026-05-31T23:30:00Z",
    "frac": "2026-05-01T00:00:00.5Z",
    "whole": "2026-05-01T00:00:00Z",
}


@dataclass
class Peers:
    reg: Registry
    layout: Layout
    tops: dict[str, Blob]
    base: Blob
    arm_only: Blob


@pytest.fixture(scope="module")
def peers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Peers]:
    require_tool("docker-registry")
    require_tool("skopeo")
    work = tmp_path_factory.mktemp("imgsel")
    home = work / "skopeo-home"
    layout = Layout(work / "layout")
    base = tar_layer("base.bin", bytes(range(256)) * 1000)
    tops: dict[str, Blob] = {}
    for tag, created in {**DATED, **ZONED}.items():
        tops[tag] = tar_layer(f"{tag}.bin", tag.encode() * 20_000)
        layout.tags[tag] = add_image(layout, [base, tops[tag]], created=created)
    tops["big"] = tar_layer("big.bin", b"B" * (3 * MiB // 2))
    layout.tags["big"] = add_image(layout, [base, tops["big"]], created="2026-01-01T00:00:00Z")
    tops["small"] = tar_layer("small.bin", b"s" * 10_000)
    layout.tags["small"] = add_image(layout, [tops["small"]], created="2026-01-01T00:00:00Z")
    # an index: amd64 shares `base`; arm64 has a layer of its own that must not be counted
    arm_only = tar_layer("arm.bin", b"arm" * 50_000)
    amd = add_image(layout, [base, tops["small"]], created="2026-01-02T00:00:00Z")
    arm = add_image(layout, [arm_only], created="2026-01-02T00:00:00Z", arch="arm64")
    layout.tags["multi"] = add_index(layout, [(amd, "amd64"), (arm, "arm64")])
    layout.write_index()
    with Registry(work / "reg") as reg:
        # pushed newest-first, so push order is no proxy for "newest" either
        for tag in DATED:
            push(layout, tag, reg.host, "sel/dated", tag, home=home)
        for tag in ZONED:
            push(layout, tag, reg.host, "sel/zoned", tag, home=home)
        for tag in ("big", "small"):
            push(layout, tag, reg.host, "sel/sized", tag, home=home)
        push(layout, "multi", reg.host, "sel/multi", "1.0", home=home)
        yield Peers(reg, layout, tops, base, arm_only)


def _sync(cfg: Path, home: Path, *extra: str) -> dict[str, object]:
    done = run_mirror(["--config", str(cfg), "sync", "--json", *extra], env_for(home))
    assert done.returncode == 0, done.stderr
    doc: dict[str, object] = json.loads(done.stdout)
    return doc


def test_latest_1_keeps_the_newest_tag_by_config_created(peers: Peers, tmp_path: Path) -> None:
    home = tmp_path / "mirror"
    cfg = registry_config(tmp_path / "m.toml", peers.reg.url, ["sel/dated"], name=NAME, latest=1)
    doc = _sync(cfg, home)
    assert doc["images_tags"] == 1 and doc["failures"] == []
    assert index_refs(home).keys() == {f"{NAME}/sel/dated:a-newest"}
    have = stored(home)
    assert peers.tops["a-newest"].digest in have
    assert peers.tops["m-middle"].digest not in have and peers.tops["z-oldest"].digest not in have
    verify_clean(env_for(home))


@pytest.mark.parametrize(
    ("tags", "newest"),
    [(["zoned", "utc"], "utc"), (["frac", "whole"], "frac")],
    ids=["offset", "fraction"],
)
def test_latest_compares_instants_not_strings(
    peers: Peers, tmp_path: Path, tags: list[str], newest: str
) -> None:
    home = tmp_path / "mirror"
    cfg = registry_config(
        tmp_path / "m.toml", peers.reg.url, ["sel/zoned"], name=NAME, latest=1, tags=tags
    )
    _sync(cfg, home)
    assert index_refs(home).keys() == {f"{NAME}/sel/zoned:{newest}"}


def test_max_size_skips_a_tag_that_is_too_big(peers: Peers, tmp_path: Path) -> None:
    home = tmp_path / "mirror"
    cfg = registry_config(
        tmp_path / "m.toml", peers.reg.url, ["sel/sized"], name=NAME, max_size="1MiB"
    )
    big = sum(needed_blobs(peers.layout, peers.layout.tags["big"]).values())
    small = sum(needed_blobs(peers.layout, peers.layout.tags["small"]).values())
    assert small < MiB < big  # the fixture straddles the limit
    doc = _sync(cfg, home)
    assert doc["outcome"] == "ok" and doc["failures"] == []
    assert index_refs(home).keys() == {f"{NAME}/sel/sized:small"}
    have = stored(home)
    assert peers.tops["big"].digest not in have and peers.base.digest not in have
    # what came: small's config and layer, and big's config (read for its `created` date)
    small_blobs = needed_blobs(peers.layout, peers.layout.tags["small"], manifests=False)
    big_config = json.loads(peers.layout.blobs[peers.layout.tags["big"]["digest"]])["config"]
    assert doc["bytes_fetched"] == sum(small_blobs.values()) + big_config["size"]
    verify_clean(env_for(home))


def _unique(peers: Peers, tags: list[str], *, manifests: bool = True) -> dict[str, int]:
    out: dict[str, int] = {}
    for tag in tags:
        out.update(needed_blobs(peers.layout, peers.layout.tags[tag], manifests=manifests))
    return out


def test_dry_run_counts_unique_bytes_once_and_fetches_nothing(peers: Peers, tmp_path: Path) -> None:
    home = tmp_path / "mirror"
    repos = ["sel/dated", "sel/multi"]
    unique = _unique(peers, [*DATED, "multi"])
    # the fixture really shares: base is in all four tags, arm64's layer is not wanted
    assert peers.base.digest in unique and peers.arm_only.digest not in unique
    with FaultProxy(peers.reg.url) as proxy:
        cfg = registry_config(tmp_path / "m.toml", proxy.url, repos, name=NAME)
        doc = _sync(cfg, home, "--dry-run")
        blob_requests = proxy.requests_for("blob")
    assert doc["dry_run"] is True
    assert doc["bytes_to_fetch"] == sum(unique.values())
    assert doc["bytes_fetched"] == 0 and doc["files_fetched"] == 0
    assert blob_requests == []
    assert stored(home) == set()
    assert not (home / "index.json").exists() or index_refs(home) == {}

    # after mirroring one repository, the dry run counts only what is still missing
    with FaultProxy(peers.reg.url) as proxy:
        one = registry_config(tmp_path / "one.toml", proxy.url, ["sel/dated"], name=NAME)
        first = _sync(one, home)
        # a real run plans the same bytes, and GETs every config and layer once
        assert first["bytes_to_fetch"] == sum(_unique(peers, list(DATED)).values())
        blobs = _unique(peers, list(DATED), manifests=False)
        assert first["bytes_fetched"] == sum(blobs.values())
        assert first["files_fetched"] == len(blobs)
        cfg = registry_config(tmp_path / "m.toml", proxy.url, repos, name=NAME)
        before = len(proxy.requests_for("blob"))
        doc = _sync(cfg, home, "--dry-run")
        after = len(proxy.requests_for("blob"))
    missing = {d: n for d, n in unique.items() if d not in stored(home)}
    assert missing and peers.base.digest not in missing
    assert doc["bytes_to_fetch"] == sum(missing.values())
    assert after == before


def test_unselected_tags_are_ranked_without_refetching_their_configs(
    peers: Peers, tmp_path: Path
) -> None:
    home = tmp_path / "mirror"
    with FaultProxy(peers.reg.url) as proxy:
        cfg = registry_config(tmp_path / "m.toml", proxy.url, ["sel/dated"], name=NAME, latest=1)
        _sync(cfg, home)
        # the two older tags' configs were fetched to rank them; nothing references them, so
        # gc removes them ...
        gc = run_mirror(["gc"], env_for(home))
        assert gc.returncode == 0, gc.stderr
        before = len(proxy.requests_for("blob"))
        doc = _sync(cfg, home)
        # ... and the next sync still ranks every tag, from the remembered dates: no blob GET
        assert proxy.requests_for("blob")[before:] == []
        assert doc["failures"] == [] and doc["images_tags"] == 1
    assert index_refs(home).keys() == {f"{NAME}/sel/dated:a-newest"}
    verify_clean(env_for(home))


def test_prune_frees_tags_that_left_the_latest_window(peers: Peers, tmp_path: Path) -> None:
    home = tmp_path / "mirror"
    wide = registry_config(tmp_path / "wide.toml", peers.reg.url, ["sel/dated"], name=NAME)
    narrow = registry_config(
        tmp_path / "narrow.toml", peers.reg.url, ["sel/dated"], name=NAME, latest=1
    )
    _sync(wide, home)
    old = {peers.tops["m-middle"].digest, peers.tops["z-oldest"].digest}
    assert old | {peers.base.digest} <= stored(home)
    _sync(narrow, home)
    assert index_refs(home).keys() == {f"{NAME}/sel/dated:a-newest"}
    assert old <= stored(home)  # a sync alone never deletes bytes

    done = run_mirror(["--config", str(narrow), "prune", "--json"], env_for(home))
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert sorted(report["released"]) == [
        f"image {NAME}/sel/dated:m-middle",
        f"image {NAME}/sel/dated:z-oldest",
    ]
    have = stored(home)
    assert not old & have
    configs = {
        json.loads(peers.layout.blobs[peers.layout.tags[t]["digest"]])["config"]["digest"]
        for t in ("m-middle", "z-oldest")
    }
    assert not configs & have  # their configs went too
    # what a-newest needs stays: the shared base, its own layer, its config and manifest
    assert set(needed_blobs(peers.layout, peers.layout.tags["a-newest"])) <= have
    assert index_refs(home).keys() == {f"{NAME}/sel/dated:a-newest"}
    verify_clean(env_for(home))


def test_a_new_tag_that_fails_keeps_the_one_it_replaces_listed(tmp_path: Path) -> None:
    """latest = 1: until the newest tag arrives whole, the older one stays in index.json (and
    pullable), and prune keeps it."""
    require_tool("docker-registry")
    require_tool("skopeo")
    home, skopeo_home = tmp_path / "mirror", tmp_path / "skopeo-home"
    layout = Layout(tmp_path / "layout")
    base = tar_layer("base.bin", b"base" * 20_000)
    new_top = tar_layer("new.bin", b"new" * 20_000)
    layout.tags["old"] = add_image(
        layout, [base, tar_layer("old.bin", b"old" * 20_000)], created="2026-01-01T00:00:00Z"
    )
    layout.tags["new"] = add_image(layout, [base, new_top], created="2026-02-01T00:00:00Z")
    layout.write_index()
    env = env_for(home)
    with Registry(tmp_path / "reg") as reg:
        push(layout, "old", reg.host, "win/app", "old", home=skopeo_home)
        cfg = registry_config(tmp_path / "m.toml", reg.url, ["win/app"], name=NAME, latest=1)
        _sync(cfg, home)
        assert index_refs(home).keys() == {f"{NAME}/win/app:old"}

        push(layout, "new", reg.host, "win/app", "new", home=skopeo_home)
        # the new tag's own layer goes missing in the registry's storage: its GET fails
        hexd = new_top.digest[7:]
        data = tmp_path / "reg" / "data/docker/registry/v2/blobs/sha256" / hexd[:2] / hexd / "data"
        aside = tmp_path / "aside"
        data.rename(aside)
        done = run_mirror(["--config", str(cfg), "sync", "--json"], env)
        assert done.returncode == 6, done.stderr
        assert index_refs(home).keys() == {f"{NAME}/win/app:old"}
        kept = run_mirror(["--config", str(cfg), "prune", "--json"], env)
        assert kept.returncode == 0, kept.stderr
        assert json.loads(kept.stdout)["released"] == []

        aside.rename(data)
        _sync(cfg, home)
        assert index_refs(home).keys() == {f"{NAME}/win/app:new"}
        done = run_mirror(["--config", str(cfg), "prune", "--json"], env)
        assert json.loads(done.stdout)["released"] == [f"image {NAME}/win/app:old"]
    verify_clean(env)


def test_an_unchanged_repository_is_not_rewritten(peers: Peers, tmp_path: Path) -> None:
    """A sync that finds nothing new writes nothing: the entry's changed snapshot stays, so
    no incremental bundle sends the repository again."""
    import sqlite3

    home = tmp_path / "mirror"
    cfg = registry_config(tmp_path / "m.toml", peers.reg.url, ["sel/dated"], name=NAME, latest=2)

    def changed() -> list[tuple[str, int]]:
        with sqlite3.connect(home / "mirror.db") as db:
            return list(db.execute("SELECT path, changed_snapshot_id FROM entries ORDER BY path"))

    _sync(cfg, home)
    first = changed()
    again = _sync(cfg, home)
    assert again["failures"] == [] and changed() == first
    assert index_refs(home).keys() == {f"{NAME}/sel/dated:a-newest", f"{NAME}/sel/dated:m-middle"}
