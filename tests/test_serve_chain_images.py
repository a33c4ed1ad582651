"""Chained mirrors with images: mirror B syncs NGC images and a [[registry]] source from
mirror A's `mirror serve` (https, read token), then skopeo pulls the result out of B.

A: fake NGC (nvidia/single, tags v1 and v2) + docker-registry (standing in for nvcr.io and
for a plain registry with test/multi); A mirrors nvidia/single:v2 and test/multi:1.0.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mirror.fakengc import FakeCatalog, FakeNGC
from tests.conftest import cli_env, require_tool, run_mirror
from tests.registry_peer import Registry, build_layout, push_test_images, skopeo, skopeo_copy
from tests.serve_peer import ServeThread, ngc_image_entry
from tests.tls_certs import make_tls

TOKEN = "chain-token-42"


def _catalog() -> FakeCatalog:
    cat = FakeCatalog()
    cat.add(ngc_image_entry())
    return cat


def _refs(home: Path) -> list[str]:
    index = json.loads((home / "index.json").read_text())
    return sorted(m["annotations"]["org.opencontainers.image.ref.name"] for m in index["manifests"])


def _blobs(home: Path) -> set[str]:
    return {p.name for p in (home / "blobs" / "sha256").iterdir()}


def test_images_flow_through_a_chain_of_mirrors(tmp_path: Path) -> None:
    require_tool("docker-registry")
    require_tool("skopeo")
    layout = build_layout(tmp_path / "layout")
    skopeo_home = tmp_path / "skopeo-home"
    home_a, home_b = tmp_path / "a", tmp_path / "b"
    with Registry(tmp_path / "reg") as reg, FakeNGC(_catalog()) as fake:
        push_test_images(layout.root, reg, skopeo_home, None)
        for tag in ("v1", "v2"):
            skopeo_copy(layout.root, "single", reg.host, "nvidia/single", tag, home=skopeo_home)
        cfg_a = tmp_path / "a.toml"
        cfg_a.write_text(
            f'[ngc]\napi_url = "{fake.url}"\nregistry_url = "{reg.url}"\nkinds = ["image"]\n\n'
            '[[select]]\npattern = "nvidia/*"\nkinds = ["image"]\nlatest = 1\n\n'
            f'[[registry]]\nurl = "{reg.url}"\nrepositories = ["test/multi"]\n'
            'tags = ["1.0"]\nplatforms = ["linux/amd64"]\n'
        )
        env_a = cli_env(home_a, fake.url)
        env_a.pop("MIRROR_NGC_API_URL")
        done = run_mirror(["--config", str(cfg_a), "sync"], env_a)
        assert done.returncode == 0, done.stderr
    assert _refs(home_a) == [f"{reg.host}/nvidia/single:v2", f"{reg.host}/test/multi:1.0"]

    tls = make_tls(tmp_path / "tls")
    with ServeThread(home_a, tls=tls, tokens=[TOKEN]) as a:
        cfg_b = tmp_path / "b.toml"
        cfg_b.write_text(
            f'[ngc]\napi_url = "{a.url}"\nauth_url = "{a.url}"\nregistry_url = "{a.url}"\n'
            f'kinds = ["image"]\n\n[http]\nca_bundle = "{tls.ca}"\n\n'
            '[[select]]\npattern = "nvidia/*"\nkinds = ["image"]\nlatest = 2\n\n'
            f'[[registry]]\nurl = "{a.url}"\nrepositories = ["test/multi"]\n'
            'username_env = "UP_USER"\npassword_env = "UP_TOKEN"\n'
        )
        env_b = cli_env(home_b, a.url, NGC_API_KEY=TOKEN, UP_USER="site-b", UP_TOKEN=TOKEN)
        env_b.pop("MIRROR_NGC_API_URL")
        first = run_mirror(["--config", str(cfg_b), "sync", "--json"], env_b)
        assert first.returncode == 0, first.stderr
        assert TOKEN not in first.stdout + first.stderr
        # B asked for the 2 newest NGC tags; A can deliver only v2, and says so
        assert _refs(home_b) == [f"{a.host}/nvidia/single:v2", f"{a.host}/test/multi:1.0"]
        again = run_mirror(["--config", str(cfg_b), "sync", "--json"], env_b)
        assert again.returncode == 0, again.stderr
        assert json.loads(again.stdout)["files_fetched"] == 0
    # byte-identical content: every blob B holds came from A and verifies
    assert _blobs(home_b) <= _blobs(home_a)
    verify = run_mirror(["verify"], env_b)
    assert verify.returncode == 0, verify.stderr
    out = tmp_path / "out"
    skopeo("copy", "-q", f"oci:{home_b}:{a.host}/nvidia/single:v2", f"dir:{out}", home=skopeo_home)
    assert (out / "manifest.json").exists()


@pytest.mark.parametrize("creds", [None, "site-b:wrong"])
def test_registry_reads_need_the_token(tmp_path: Path, creds: str | None) -> None:
    require_tool("docker-registry")
    require_tool("skopeo")
    layout = build_layout(tmp_path / "layout")
    home = tmp_path / "a"
    skopeo_home = tmp_path / "skopeo-home"
    with Registry(tmp_path / "reg") as reg:
        push_test_images(layout.root, reg, skopeo_home, None)
        cfg = tmp_path / "a.toml"
        cfg.write_text(
            f'[ngc]\nkinds = []\n\n[[registry]]\nurl = "{reg.url}"\n'
            'repositories = ["test/single"]\n'
        )
        done = run_mirror(["--config", str(cfg), "sync"], cli_env(home, "http://127.0.0.1:9"))
        assert done.returncode == 0, done.stderr
    with ServeThread(home, tokens=[TOKEN]) as a:
        args = ["--tls-verify=false", f"docker://{a.host}/test/single:v1"]
        with pytest.raises(RuntimeError, match="(?i)unauthorized|authentication"):
            skopeo("inspect", *(["--creds", creds] if creds else []), *args, home=skopeo_home)
        shown = json.loads(skopeo("inspect", "--creds", f"anyone:{TOKEN}", *args, home=skopeo_home))
        assert shown["Name"] == f"{a.host}/test/single"
