"""Bundles carry images: export → `skopeo copy oci:BUNDLE:REF` → import → copy out of the
target root."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import cli_env, require_tool, run_mirror
from tests.registry_peer import Layout, Registry, build_layout, push_test_images, skopeo


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str, Path]]:
    require_tool("docker-registry")
    require_tool("skopeo")
    work = tmp_path_factory.mktemp("bimg")
    layout: Layout = build_layout(work / "layout")
    with Registry(work / "reg") as reg:
        push_test_images(layout.root, reg, work / "home", None)
        cfg = work / "images.toml"
        cfg.write_text(
            f'[ngc]\nkinds = []\n\n[[registry]]\nurl = "{reg.url}"\n'
            'repositories = ["test/multi", "test/single", "test/docker"]\n'
        )
        home = work / "src"
        proc = run_mirror(["--config", str(cfg), "sync"], cli_env(home, "http://127.0.0.1:9"))
        assert proc.returncode == 0, proc.stderr
        yield home, reg.host, work / "skopeo-home"


@pytest.mark.parametrize("fmt", ["dir", "tar"])
def test_images_round_trip_through_a_bundle(
    source: tuple[Path, str, Path], tmp_path: Path, fmt: str
) -> None:
    home, host, skopeo_home = source
    bundle = tmp_path / "bundle"
    args = ["export", str(bundle)] + (
        ["--format", "tar", "--split", "1MiB"] if fmt == "tar" else []
    )
    assert run_mirror(args, cli_env(home, "http://127.0.0.1:9")).returncode == 0
    refs = [f"{host}/test/multi:1.0", f"{host}/test/single:v1", f"{host}/test/docker:v1"]
    if fmt == "dir":  # a directory bundle is itself an OCI layout standard tools read
        names = {
            m["annotations"]["org.opencontainers.image.ref.name"]
            for m in json.loads((bundle / "index.json").read_text())["manifests"]
        }
        assert names == set(refs)
        skopeo(
            "copy", "-q", f"oci:{bundle}:{refs[0]}", f"dir:{tmp_path / 'fromb'}", home=skopeo_home
        )
    target = tmp_path / "site"
    env = cli_env(target, "http://127.0.0.1:9")
    imp = run_mirror(["import", str(bundle)], env)
    assert imp.returncode == 0, imp.stderr
    assert run_mirror(["verify"], env).returncode == 0
    for i, ref in enumerate(refs):
        skopeo("copy", "-q", f"oci:{target}:{ref}", f"dir:{tmp_path / f'out{i}'}", home=skopeo_home)
    src_index = json.loads((home / "index.json").read_text())
    dst_index = json.loads((target / "index.json").read_text())
    assert src_index == dst_index  # same digests, media types, sizes and names
    show = run_mirror(["show", f"{host}/test/multi:1.0", "--json"], env)
    assert show.returncode == 0, show.stderr
    assert json.loads(show.stdout)["entry"]["kind"] == "image"
