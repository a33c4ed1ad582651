"""`mirror gc` on a root holding mirrored images: it removes what no tag references (a stray
blob, the old manifest of a moved tag, tmp/ leftovers) and never a blob that any live tag's
manifest or index reaches, so `skopeo copy` out of the root still works afterwards."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.conftest import require_tool, run_mirror
from tests.registry_peer import OCI_INDEX, Layout, Registry, skopeo_copy
from tests.test_image_support import (
    add_image,
    add_index,
    env_for,
    index_refs,
    push,
    registry_config,
    sha256,
    skopeo_out,
    stored,
    tar_layer,
    verify_clean,
)

NAME = "gc.test"
REPOS = ["gc/app", "gc/multi", "gc/docker"]


def _reachable(home: Path) -> tuple[set[str], set[str]]:
    """Walk index.json: (blobs reached, index children absent from the store)."""
    blobs = home / "blobs" / "sha256"
    reached: set[str] = set()
    absent: set[str] = set()
    todo: list[dict[str, Any]] = list(json.loads((home / "index.json").read_text())["manifests"])
    while todo:
        desc = todo.pop()
        digest = desc["digest"]
        path = blobs / digest[7:]
        if not path.exists():
            absent.add(digest)
            continue
        reached.add(digest)
        doc = json.loads(path.read_bytes())
        if desc["mediaType"] == OCI_INDEX:
            todo.extend(doc["manifests"])
        else:
            for blob in [doc["config"], *doc["layers"]]:
                assert (blobs / blob["digest"][7:]).exists(), f"{blob['digest']} was collected"
                reached.add(blob["digest"])
    return reached, absent


def _gc(home: Path, *args: str) -> dict[str, Any]:
    done = run_mirror(["gc", "--json", *args], env_for(home))
    assert done.returncode == 0, done.stderr
    doc: dict[str, Any] = json.loads(done.stdout)
    return doc


def test_gc_keeps_everything_a_tag_references_and_removes_the_rest(tmp_path: Path) -> None:
    require_tool("docker-registry")
    require_tool("skopeo")
    skopeo_home = tmp_path / "skopeo-home"
    layout = Layout(tmp_path / "layout")
    base = tar_layer("base.bin", bytes(range(256)) * 800)
    top1 = tar_layer("one.bin", b"1" * 40_000)
    top2 = tar_layer("two.bin", b"2" * 40_000)
    top3 = tar_layer("three.bin", b"3" * 40_000)
    arm = tar_layer("arm.bin", b"arm" * 10_000)
    layout.tags["a"] = add_image(layout, [base, top1], created="2026-01-01T00:00:00Z")
    layout.tags["b"] = add_image(layout, [base, top2], created="2026-01-02T00:00:00Z")
    layout.tags["c"] = add_image(layout, [base, top3], created="2026-01-03T00:00:00Z")
    amd_img = add_image(layout, [base, top2], created="2026-01-04T00:00:00Z")
    arm_img = add_image(layout, [arm], created="2026-01-04T00:00:00Z", arch="arm64")
    layout.tags["multi"] = add_index(layout, [(amd_img, "amd64"), (arm_img, "arm64")])
    layout.write_index()
    home = tmp_path / "mirror"
    env = env_for(home)
    with Registry(tmp_path / "reg") as reg:
        push(layout, "a", reg.host, "gc/app", "v1", home=skopeo_home)
        push(layout, "b", reg.host, "gc/app", "v2", home=skopeo_home)
        push(layout, "multi", reg.host, "gc/multi", "1.0", home=skopeo_home)
        # the same image as gc/app:v1, stored as Docker schema2: top1 is shared with it
        skopeo_copy(
            layout.root,
            "a",
            reg.host,
            "gc/docker",
            "v1",
            home=skopeo_home,
            extra=("--format", "v2s2"),
        )
        cfg = registry_config(tmp_path / "m.toml", reg.url, REPOS, name=NAME)
        first = run_mirror(["--config", str(cfg), "sync"], env)
        assert first.returncode == 0, first.stderr
        # gc/app:v1 moves to image c: the old manifest is garbage, top1 is not (docker:v1)
        push(layout, "c", reg.host, "gc/app", "v1", home=skopeo_home)
        second = run_mirror(["--config", str(cfg), "sync"], env)
        assert second.returncode == 0, second.stderr

    refs = index_refs(home)
    assert refs.keys() == {f"{NAME}/gc/app:v1", f"{NAME}/gc/app:v2"} | {
        f"{NAME}/gc/multi:1.0",
        f"{NAME}/gc/docker:v1",
    }
    assert refs[f"{NAME}/gc/app:v1"] == layout.tags["c"]["digest"]
    before, absent = _reachable(home)
    assert absent == {arm_img["digest"]}  # the unselected platform only
    assert {base.digest, top1.digest, top2.digest, top3.digest} <= before
    assert arm.digest not in stored(home)

    stray_data = b"a stray blob nothing references\n"
    stray = sha256(stray_data)
    (home / "blobs" / "sha256" / stray[7:]).write_bytes(stray_data)
    (home / "tmp" / f"sha256-{'0' * 64}.partial").write_bytes(b"left over")
    old_manifest = layout.tags["a"]["digest"]
    assert old_manifest in stored(home)
    garbage = {stray, old_manifest}

    dry = _gc(home, "--dry-run")
    assert set(dry["unreferenced"]) == garbage and dry["removed"] == 0
    assert garbage <= stored(home)

    done = _gc(home)
    assert set(done["unreferenced"]) == garbage and done["removed"] == len(garbage)
    assert done["partials_removed"] == 1 and list((home / "tmp").iterdir()) == []
    left = stored(home)
    assert not garbage & left
    after, absent = _reachable(home)
    assert after == before and absent == {arm_img["digest"]}
    verify_clean(env)
    assert _gc(home)["unreferenced"] == []  # nothing more to collect
    for ref in sorted(refs):
        dest = tmp_path / "out" / ref.replace("/", "_").replace(":", "_")
        out = skopeo_out(home, ref, dest, skopeo_home=skopeo_home)
        assert (out / "manifest.json").is_file()
    moved = tmp_path / "out" / f"{NAME}_gc_app_v1"
    assert (moved / top3.digest[7:]).read_bytes() == top3.data
