"""NGC-listed repositories whose tags a [[select]] picks are pulled from NGC's registry
(a real docker-registry standing in for nvcr.io) into the same store."""

from __future__ import annotations

import json
from pathlib import Path

import httpx

from mirror.fakengc import FakeCatalog, FakeEntry, FakeNGC, FakeVersion
from tests.conftest import cli_env, require_tool, run_mirror
from tests.registry_peer import Registry, build_layout, skopeo, skopeo_copy


def test_selected_ngc_image_tags_are_pulled_from_the_registry(tmp_path: Path) -> None:
    require_tool("docker-registry")
    require_tool("skopeo")
    layout = build_layout(tmp_path / "layout")
    skopeo_home = tmp_path / "skopeo-home"
    cat = FakeCatalog()
    cat.add(
        FakeEntry(
            kind="image",
            org="nvidia",
            team=None,
            name="single",
            display_name="Single Image",
            description="A test container from NGC.",
            updated="2026-02-01T00:00:00.000Z",
            versions=[
                FakeVersion(
                    "v2", created="2026-02-01T00:00:00.000Z", updated="2026-02-01T00:00:00.000Z"
                ),
                FakeVersion(
                    "v1", created="2026-01-01T00:00:00.000Z", updated="2026-01-01T00:00:00.000Z"
                ),
            ],
        )
    )
    home = tmp_path / "mirror"
    with Registry(tmp_path / "reg") as reg, FakeNGC(cat) as fake:
        for tag in ("v1", "v2"):
            skopeo_copy(layout.root, "single", reg.host, "nvidia/single", tag, home=skopeo_home)
        cfg = tmp_path / "m.toml"
        cfg.write_text(
            f'[ngc]\napi_url = "{fake.url}"\nregistry_url = "{reg.url}"\n'
            'kinds = ["image"]\n\n[[select]]\npattern = "nvidia/*"\n'
            'kinds = ["image"]\nlatest = 1\n'
        )
        env = cli_env(home, fake.url)
        env.pop("MIRROR_NGC_API_URL")
        first = run_mirror(["--config", str(cfg), "sync", "--json"], env)
        assert first.returncode == 0, first.stderr
        assert json.loads(first.stdout)["files_fetched"] > 0
        index = json.loads((home / "index.json").read_text())
        refs = [m["annotations"]["org.opencontainers.image.ref.name"] for m in index["manifests"]]
        assert refs == [f"{reg.host}/nvidia/single:v2"]  # latest = 1: only the newest tag
        skopeo("copy", "-q", f"oci:{home}:{refs[0]}", f"dir:{tmp_path / 'out'}", home=skopeo_home)
        shown = json.loads(run_mirror(["show", "nvidia/single", "--json"], env).stdout)
        assert "A test container from NGC." in shown["entry"]["description"]
        versions = {v["version"]: v for v in shown["versions"]}
        assert set(versions) == {"v1", "v2"}  # every NGC tag is catalogued
        assert versions["v2"]["mirrored"] and not versions["v1"]["mirrored"]
        # v1's digest is NGC's name for a tag nobody selected: not a blob this store misses
        assert run_mirror(["verify"], env).returncode == 0
        assert run_mirror(["gc"], env).returncode == 0
        again = run_mirror(["--config", str(cfg), "sync", "--json"], env)
        assert again.returncode == 0, again.stderr
        doc = json.loads(again.stdout)
        assert doc["files_fetched"] == 0 and doc["unchanged"] == 1

        # a newer tag (the index over the same amd64 image): prune releases v2, which shares
        # every blob with v3's amd64 image, so nothing is deleted and v3 stays whole
        skopeo_copy(
            layout.root,
            "multi",
            reg.host,
            "nvidia/single",
            "v3",
            home=skopeo_home,
            extra=("--all",),
        )
        day = "2026-03-01T00:00:00.000Z"
        cat.add_version(cat.entries[0], FakeVersion("v3", created=day, updated=day))
        assert run_mirror(["--config", str(cfg), "sync"], env).returncode == 0
        # v2 left the window but is held: it stays listed under the digest held here (NGC
        # lists another one for it), until prune
        index = json.loads((home / "index.json").read_text())
        refs = [m["annotations"]["org.opencontainers.image.ref.name"] for m in index["manifests"]]
        assert sorted(refs) == [f"{reg.host}/nvidia/single:v2", f"{reg.host}/nvidia/single:v3"]
        pruned = run_mirror(["--config", str(cfg), "prune", "--json"], env)
        assert pruned.returncode == 0, pruned.stderr
        report = json.loads(pruned.stdout)
        assert report["released"] == ["image nvidia/single:v2"] and report["blobs_freed"] == 0
        index = json.loads((home / "index.json").read_text())
        refs = [m["annotations"]["org.opencontainers.image.ref.name"] for m in index["manifests"]]
        assert refs == [f"{reg.host}/nvidia/single:v3"]
        skopeo("copy", "-q", f"oci:{home}:{refs[0]}", f"dir:{tmp_path / 'v3'}", home=skopeo_home)
        assert run_mirror(["verify"], env).returncode == 0


def test_registry_repositories_beside_ngc_images_stay_put(tmp_path: Path) -> None:
    """With NGC images catalogued, NGC's listing once marked every [[registry]] repository
    removed on every other sync (prune then freed them, the next sync fetched them again), and
    serve's NGC API listed them as NGC repositories a downstream mirror could not pull."""
    from tests.serve_peer import ServeThread

    require_tool("docker-registry")
    require_tool("skopeo")
    layout = build_layout(tmp_path / "layout")
    skopeo_home = tmp_path / "skopeo-home"
    cat = FakeCatalog()
    day = "2026-02-01T00:00:00.000Z"
    cat.add(
        FakeEntry(
            kind="image",
            org="nvidia",
            team=None,
            name="single",
            updated=day,
            versions=[FakeVersion("v2", created=day, updated=day)],
        )
    )
    home = tmp_path / "mirror"
    with Registry(tmp_path / "reg") as reg, FakeNGC(cat) as fake:
        skopeo_copy(layout.root, "single", reg.host, "nvidia/single", "v2", home=skopeo_home)
        skopeo_copy(layout.root, "single", reg.host, "lab/app", "1.0", home=skopeo_home)
        cfg = tmp_path / "m.toml"
        cfg.write_text(
            f'[ngc]\napi_url = "{fake.url}"\nregistry_url = "{reg.url}"\n'
            'kinds = ["model", "image"]\n\n[[select]]\npattern = "nvidia/*"\n'
            'kinds = ["image"]\nlatest = 1\n\n'
            f'[[registry]]\nurl = "{reg.url}"\nname = "lab.example"\nrepositories = ["lab/app"]\n'
        )
        env = cli_env(home, fake.url)
        env.pop("MIRROR_NGC_API_URL")
        want = {f"{reg.host}/nvidia/single:v2", "lab.example/lab/app:1.0"}
        for _ in range(3):
            done = run_mirror(["--config", str(cfg), "sync", "--json"], env)
            assert done.returncode == 0, done.stderr
            assert json.loads(done.stdout)["removed"] == 0
            index = json.loads((home / "index.json").read_text())
            refs = {
                m["annotations"]["org.opencontainers.image.ref.name"] for m in index["manifests"]
            }
            assert refs == want
        pruned = run_mirror(["--config", str(cfg), "prune", "--dry-run", "--json"], env)
        assert pruned.returncode == 0 and json.loads(pruned.stdout)["released"] == []
    with ServeThread(home) as srv:
        q = json.dumps({"query": "resourceId:*", "page": 0, "pageSize": 100})
        found = httpx.get(
            f"{srv.url}/v2/search/catalog/resources/CONTAINER", params={"q": q}, timeout=30
        ).json()
        ids = [r["resourceId"] for g in found["results"] for r in g["resources"]]
        assert ids == ["nvidia/single"]  # lab.example/lab/app is pulled by name, not listed
        pulled = httpx.get(f"{srv.url}/v2/lab/app/manifests/1.0", timeout=30)
        assert pulled.status_code == 200


def test_a_newest_tag_over_max_size_leaves_the_held_one_wanted(tmp_path: Path) -> None:
    """max_size on NGC images: the too-big newest tag keeps its measured size in the catalog,
    so prune sees it does not fit and keeps the older tag (it used to hold the entry back on
    every run, waiting for a tag that would never be fetched)."""
    from tests.registry_peer import Layout
    from tests.test_image_support import MiB, add_image, push, tar_layer

    require_tool("docker-registry")
    require_tool("skopeo")
    skopeo_home = tmp_path / "skopeo-home"
    layout = Layout(tmp_path / "layout")
    layout.tags["small"] = add_image(
        layout, [tar_layer("s.bin", b"s" * 10_000)], created="2026-01-01T00:00:00Z"
    )
    layout.tags["big"] = add_image(
        layout,
        [tar_layer("b.bin", bytes(range(256)) * (2 * MiB // 256))],
        created="2026-02-01T00:00:00Z",
    )
    layout.write_index()
    cat = FakeCatalog()
    day = "2026-01-01T00:00:00.000Z"
    entry = cat.add(
        FakeEntry(
            kind="image",
            org="nvidia",
            team=None,
            name="sized",
            updated=day,
            versions=[FakeVersion("v1", created=day, updated=day)],
        )
    )
    home = tmp_path / "mirror"
    with Registry(tmp_path / "reg") as reg, FakeNGC(cat) as fake:
        push(layout, "small", reg.host, "nvidia/sized", "v1", home=skopeo_home)
        push(layout, "big", reg.host, "nvidia/sized", "v2", home=skopeo_home)
        cfg = tmp_path / "m.toml"
        cfg.write_text(
            f'[ngc]\napi_url = "{fake.url}"\nregistry_url = "{reg.url}"\nkinds = ["image"]\n\n'
            '[[select]]\npattern = "nvidia/*"\nkinds = ["image"]\nlatest = 1\nmax_size = "1MiB"\n'
        )
        env = cli_env(home, fake.url)
        env.pop("MIRROR_NGC_API_URL")
        assert run_mirror(["--config", str(cfg), "sync"], env).returncode == 0
        later = "2026-02-01T00:00:00.000Z"
        cat.add_version(entry, FakeVersion("v2", created=later, updated=later))
        assert run_mirror(["--config", str(cfg), "sync"], env).returncode == 0
        shown = json.loads(run_mirror(["show", "nvidia/sized", "--json"], env).stdout)
        sizes = {v["version"]: v["size"] for v in shown["versions"]}
        assert sizes["v2"] > MiB  # measured, not NGC's listing
        pruned = run_mirror(["--config", str(cfg), "prune", "--dry-run", "--json"], env)
        assert pruned.returncode == 0, pruned.stderr
        report = json.loads(pruned.stdout)
        assert report["released"] == [] and report["held_back"] == []
