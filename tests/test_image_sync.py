"""`mirror sync` of container images from a real registry (Debian's docker-registry), then
`skopeo copy` straight out of the mirror root."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import cli_env, require_tool, run_mirror
from tests.registry_peer import Layout, Registry, build_layout, push_test_images, skopeo


@pytest.fixture(scope="module")
def peer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Registry, Layout, Path]]:
    require_tool("docker-registry")
    require_tool("skopeo")
    work = tmp_path_factory.mktemp("imgsync")
    layout = build_layout(work / "layout")
    with Registry(work / "reg") as reg:
        push_test_images(layout.root, reg, work / "home", None)
        yield reg, layout, work / "home"


def _config(
    tmp: Path,
    reg: Registry,
    *,
    tags: str = '["*"]',
    platforms: str = '["linux/amd64"]',
    repos: str = '["test/multi", "test/single", "test/docker"]',
) -> Path:
    cfg = tmp / "images.toml"
    cfg.write_text(
        f'[ngc]\nkinds = []\n\n[[registry]]\nurl = "{reg.url}"\n'
        f"repositories = {repos}\ntags = {tags}\nplatforms = {platforms}\n"
    )
    return cfg


def _env(home: Path) -> dict[str, str]:
    return cli_env(home, "http://127.0.0.1:9")


def test_mirror_then_skopeo_copy_out_of_the_root(
    peer: tuple[Registry, Layout, Path], home: Path, tmp_path: Path
) -> None:
    reg, layout, skopeo_home = peer
    cfg = _config(tmp_path, reg)
    first = run_mirror(["--config", str(cfg), "sync", "--json"], _env(home))
    assert first.returncode == 0, first.stderr
    doc = json.loads(first.stdout)
    assert doc["images_tags"] == 3 and doc["files_fetched"] > 0
    index = json.loads((home / "index.json").read_text())
    refs = {m["annotations"]["org.opencontainers.image.ref.name"] for m in index["manifests"]}
    assert refs == {
        f"{reg.host}/test/multi:1.0",
        f"{reg.host}/test/single:v1",
        f"{reg.host}/test/docker:v1",
    }
    for ref in sorted(refs):
        out = tmp_path / ref.replace("/", "_").replace(":", "_")
        skopeo("copy", "-q", f"oci:{home}:{ref}", f"dir:{out}", home=skopeo_home)
        assert (out / "manifest.json").exists()
    # byte-exact: the index digest is the registry's
    multi = next(
        m
        for m in index["manifests"]
        if m["annotations"]["org.opencontainers.image.ref.name"].endswith("multi:1.0")
    )
    assert multi["digest"] == layout.tags["multi"]["digest"]
    # the arm64-only layer was not fetched (platform selection)
    assert (
        subprocess.run(
            [".venv/bin/mirror", "verify"], env=_env(home), cwd=Path(__file__).parents[1]
        ).returncode
        == 0
    )

    # a no-op second sync makes no blob requests
    again = run_mirror(["--config", str(cfg), "sync", "--json"], _env(home))
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["files_fetched"] == 0
    # search lists the image repositories
    found = run_mirror(["search", "multi", "--json"], _env(home))
    groups = json.loads(found.stdout)["groups"]
    assert any(g["kind"] == "image" for g in groups)


def test_all_platforms_and_a_new_tag_fetches_only_new_blobs(
    peer: tuple[Registry, Layout, Path], home: Path, tmp_path: Path
) -> None:
    reg, layout, skopeo_home = peer
    cfg = _config(tmp_path, reg, repos='["test/multi"]', platforms='["linux/amd64", "linux/arm64"]')
    first = json.loads(run_mirror(["--config", str(cfg), "sync", "--json"], _env(home)).stdout)
    assert first["outcome"] == "ok"
    skopeo(
        "copy",
        "-q",
        "--dest-tls-verify=false",
        "--all",
        f"oci:{layout.root}:multi",
        f"docker://{reg.host}/test/multi:1.1",
        home=skopeo_home,
    )
    second = json.loads(run_mirror(["--config", str(cfg), "sync", "--json"], _env(home)).stdout)
    assert second["outcome"] == "ok" and second["files_fetched"] == 0  # same content, new tag
    index = json.loads((home / "index.json").read_text())
    assert len(index["manifests"]) == 2
