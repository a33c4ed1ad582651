"""NVIDIA's own SDK (PyPI `ngcsdk`, the code behind the `ngc` CLI) against `mirror serve`.

The mirror root is a real sync of the fake NGC (models, resources, one team model, and the
image nvidia/single whose newest tag was pulled from docker-registry). `mirror serve` speaks
https with a throw-away CA given to the SDK through REQUESTS_CA_BUNDLE; guest mode runs against
an open mirror, key mode against a mirror with a read token (NGC_CLI_API_KEY = the token).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from mirror.fakengc import FakeCatalog, FakeEntry, FakeNGC, seed_catalog
from tests.conftest import cli_env, require_tool, run_mirror
from tests.ngcsdk_peer import require_ngcsdk, rid_of, run_sdk, sdk_env
from tests.registry_peer import Registry, build_layout, skopeo_copy
from tests.serve_peer import ServeThread, ngc_image_entry
from tests.tls_certs import TlsFiles, make_tls

TOKEN = "site-read-token-7"
MODEL = "nvidia/bert_large_pre_training_for_tensorflow"
TEAM_MODEL = "nvidia/tlt/tlt_resnet18_ssd"
RESOURCE = "nvidia/tlt/tlt_getting_started"
IMAGE = "nvidia/single"


def _catalog() -> FakeCatalog:
    cat = seed_catalog(limit=3)
    team_model = seed_catalog().lookup("model", TEAM_MODEL)
    assert team_model is not None
    cat.add(team_model)
    cat.add(ngc_image_entry())
    return cat


@dataclass
class Site:
    home: Path
    catalog: FakeCatalog
    tls: TlsFiles
    registry_host: str


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Site:
    require_ngcsdk()
    require_tool("docker-registry")
    require_tool("skopeo")
    work = tmp_path_factory.mktemp("ngcsdk-serve")
    layout = build_layout(work / "layout")
    cat = _catalog()
    home = work / "mirror"
    with Registry(work / "reg") as reg, FakeNGC(cat) as fake:
        for tag in ("v1", "v2"):
            skopeo_copy(layout.root, "single", reg.host, IMAGE, tag, home=work / "skopeo")
        cfg = work / "m.toml"
        cfg.write_text(
            f'[ngc]\nregistry_url = "{reg.url}"\n\n'
            '[[select]]\npattern = "*"\nkinds = ["model", "resource", "image"]\nlatest = 1\n'
        )
        done = run_mirror(["--config", str(cfg), "sync"], cli_env(home, fake.url))
        assert done.returncode == 0, done.stderr
        host = reg.host
    return Site(home, cat, make_tls(work / "tls"), host)


@dataclass
class Sdk:
    env: dict[str, str]
    mode: str

    def json(self, *args: str) -> Any:
        return json.loads(run_sdk(self.env, *args).stdout)


@pytest.fixture(scope="module", params=["guest", "key"])
def sdk(
    request: pytest.FixtureRequest, site: Site, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Sdk]:
    mode = str(request.param)
    tokens = [TOKEN] if mode == "key" else None
    home = tmp_path_factory.mktemp(f"ngc-home-{mode}")
    with ServeThread(site.home, tls=site.tls, tokens=tokens) as srv:
        yield Sdk(sdk_env(srv.url, home, site.tls.ca, TOKEN if mode == "key" else None), mode)


def _entry(site: Site, kind: str, rid: str) -> FakeEntry:
    found = site.catalog.lookup(kind, rid)
    assert found is not None
    return found


def test_model_list_and_info(sdk: Sdk, site: Site) -> None:
    listed = sdk.json("model-list")
    assert sorted(rid_of(m) for m in listed) == sorted(
        e.resource_id for e in site.catalog.of_kind("model")
    )
    assert [rid_of(m) for m in sdk.json("model-list", "nvidia/tlt/*")] == [TEAM_MODEL]
    art = _entry(site, "model", TEAM_MODEL)
    versions = sdk.json("model-list", TEAM_MODEL)
    assert [v["versionId"] for v in versions] == [v.version_id for v in art.versions]
    # the newest is mirrored; the older exists in the catalog but not here
    assert [v["status"] for v in versions] == ["UPLOAD_COMPLETE", "UPLOAD_PENDING"]
    info = sdk.json("model-info", MODEL)["model"]
    assert info["name"] == MODEL.split("/")[1] and info["latestVersionIdStr"] == "2"
    team = sdk.json("model-info", f"{TEAM_MODEL}:{art.versions[0].version_id}")
    assert team["model"]["teamName"] == "tlt"
    assert team["modelVersion"]["totalFileCount"] == len(art.versions[0].files)
    missing = run_sdk(sdk.env, "model-info", "nvidia/no_such_model", ok=False)
    assert missing.returncode == 1 and "could not be found" in missing.stderr


def _download(sdk: Sdk, site: Site, kind: str, rid: str, ref: str, dest: Path) -> None:
    art = _entry(site, kind, rid)
    ver = art.versions[0]
    dest.mkdir()
    result = sdk.json(f"{kind}-download", ref, str(dest))
    root = dest / f"{art.name}_v{ver.version_id}"
    assert result["status"] == "Completed" and Path(result["path"]) == root
    on_disk = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
    assert on_disk == sorted(f.path for f in ver.files)
    for f in ver.files:
        assert (root / f.path).read_bytes() == (f.content or b""), f.path


def test_downloads_are_byte_exact(sdk: Sdk, site: Site, tmp_path: Path) -> None:
    _download(sdk, site, "model", MODEL, MODEL, tmp_path / "latest")  # no version: latest
    art = _entry(site, "model", TEAM_MODEL)
    ref = f"{TEAM_MODEL}:{art.versions[0].version_id}"
    _download(sdk, site, "model", TEAM_MODEL, ref, tmp_path / "team")
    _download(sdk, site, "resource", RESOURCE, f"{RESOURCE}:2.0", tmp_path / "resource")
    # a version this mirror does not hold: refused by the SDK itself, nothing written
    older = f"{TEAM_MODEL}:{art.versions[1].version_id}"
    (tmp_path / "older").mkdir()
    refused = run_sdk(sdk.env, "model-download", older, str(tmp_path / "older"), ok=False)
    assert refused.returncode != 0 and "UPLOAD_COMPLETE" in refused.stderr
    assert not any(p.is_file() for p in (tmp_path / "older").rglob("*"))


def test_images(sdk: Sdk, site: Site) -> None:
    listed = sdk.json("image-list")
    assert [r["name"] for r in listed] == ["single"]
    tags = sdk.json("image-list", IMAGE)
    assert [t["tag"] for t in tags] == ["v2"]  # the tag this mirror can serve
    repo, _scan = sdk.json("image-info", IMAGE)
    assert repo["tags"] == ["v2"] and repo["latestTag"] == "v2"
    meta, manifest, _scans, arches = sdk.json("image-info", f"{IMAGE}:v2")
    index = json.loads((site.home / "index.json").read_text())
    (stored,) = [
        m["digest"]
        for m in index["manifests"]
        if m["annotations"]["org.opencontainers.image.ref.name"].endswith(f"{IMAGE}:v2")
    ]
    assert meta["digest"] == stored and arches[0]["digest"] == stored
    assert manifest["tag"] == "v2"
