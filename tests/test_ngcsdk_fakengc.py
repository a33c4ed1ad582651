"""NVIDIA's own NGC SDK (PyPI ``ngcsdk``) as a real client of the fake NGC server.

Each SDK call runs ``tests/ngcsdk_driver.py`` in a subprocess against a FakeNGC speaking TLS
(the SDK only speaks HTTPS), in guest mode and in API-key mode, with small page caps so that
every list the SDK walks has more than one page. The results must match the catalog, the
downloaded bytes must equal the catalog's, and the recorded requests must use the URL family of
the mode (guest ``/v2/models/...``, key ``/v2/org/...`` with a bearer token from ``/token``).

Network isolation: the driver refuses a non-loopback NGC_CLI_API_URL / NGC_CLI_AUTH_URL and
patches ``socket`` so that any lookup or connection beyond loopback fails; the subprocess gets
no proxy variables (the SDK would send even loopback calls to a proxy, NO_PROXY or not).
"""

from __future__ import annotations

import json
import socket
import ssl
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from mirror.fakengc import (
    FakeCatalog,
    FakeEntry,
    FakeNGC,
    FakeVersion,
    RequestRecord,
    seed_catalog,
)
from tests import ngcsdk_driver  # imports no SDK
from tests.ngcsdk_peer import DRIVER, require_ngcsdk, rid_of, sdk_env
from tests.tls_certs import TlsFiles, make_tls

API_KEY = "fake-legacy-api-key-0123"
TEAM_MODEL = "nvidia/tlt/tlt_resnet18_ssd"  # versions v2 (1 file), v1 (3 files)
MODEL = "nvidia/bert_large_pre_training_for_tensorflow"  # 3 files incl. empty.txt and a subdir
TEAM_RESOURCE = "nvidia/tlt/tlt_getting_started"
RESOURCE = "nvidia/bert_for_pytorch"
IMAGE = "nvidia/bigdft"  # 3 tags: 2 pages of the tag list with url_page_size=2


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return make_tls(tmp_path_factory.mktemp("tls"))


def small_catalog() -> FakeCatalog:
    """3 models + 1 team model, the resources (one in a team) and the image repositories."""
    cat = seed_catalog(limit=3, include_images=True)
    team_model = seed_catalog().lookup("model", TEAM_MODEL)
    assert team_model is not None
    cat.add(team_model)
    return cat


@dataclass
class Sdk:
    """A FakeNGC over TLS plus the environment that points the SDK driver at it."""

    fake: FakeNGC
    env: dict[str, str]
    mode: str

    def run(self, *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
        """Run one driver op; with ok (the default), require exit status 0."""
        proc = subprocess.run(
            [sys.executable, str(DRIVER), *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if ok:
            assert proc.returncode == 0, f"{args}: exit {proc.returncode}\n{proc.stderr}"
        return proc

    def json(self, *args: str) -> Any:
        return json.loads(self.run(*args).stdout)  # the SDK result the driver printed

    def requests(self) -> list[RequestRecord]:
        """The requests recorded since the last call, then forget them."""
        got = list(self.fake.requests)
        self.fake.clear_requests()
        return got


@pytest.fixture(params=["guest", "key"])
def sdk(request: pytest.FixtureRequest, tls: TlsFiles, tmp_path: Path) -> Iterator[Sdk]:
    require_ngcsdk()
    mode = str(request.param)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(tls.cert, tls.key)
    api_key = API_KEY if mode == "key" else None
    fake = FakeNGC(
        small_catalog(),
        api_key=api_key,
        ssl_context=ctx,
        search_page_size=10,
        list_page_size=1,
        url_page_size=2,
    )
    home = tmp_path / "ngc-home"
    home.mkdir()
    with fake:
        assert fake.url.startswith("https://127.0.0.1:")
        yield Sdk(fake, sdk_env(fake.url, home, tls.ca, api_key), mode)
    assert fake.errors == []


def check_mode(sdk: Sdk, requests: list[RequestRecord]) -> None:
    """Every request fits the mode: guest sends no credentials, key mode uses tokens."""
    assert requests
    for rec in requests:
        if rec.path.startswith("/_dl/"):  # presigned URLs: no NGC headers at all
            assert "authorization" not in rec.headers and "x-ngc-guest-token" not in rec.headers
            continue
        assert rec.headers["user-agent"].startswith("ngcsdk/")
        if sdk.mode == "guest":
            assert "authorization" not in rec.headers and "nv-ngc-org" not in rec.headers
            assert rec.headers["x-ngc-guest-token"]
            assert not rec.path.startswith(("/v2/org/", "/token"))
        elif rec.path == "/token":
            assert rec.headers["authorization"].startswith("Basic ")
        else:
            assert rec.headers["authorization"].startswith("Bearer ")
            assert rec.headers["nv-ngc-org"] == "nvidia"


def paths(requests: list[RequestRecord]) -> list[str]:
    return [r.path for r in requests]


def entry(sdk: Sdk, kind: str, rid: str) -> FakeEntry:
    found = sdk.fake.catalog.lookup(kind, rid)
    assert found is not None
    return found


def check_download(sdk: Sdk, kind: str, rid: str, version: str | None, dest: Path) -> None:
    art = entry(sdk, kind, rid)
    ver = art.version(version) if version else art.latest
    assert ver is not None
    ref = f"{rid}:{version}" if version else rid
    dest.mkdir()
    result = sdk.json(f"{kind}-download", ref, str(dest))
    root = dest / f"{art.name}_v{ver.version_id}"
    assert result["status"] == "Completed" and Path(result["path"]) == root
    assert result["completed_count"] == len(ver.files)
    assert result["completed_bytes"] == ver.total_size
    on_disk = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
    assert on_disk == sorted(f.path for f in ver.files)
    for file in ver.files:
        assert (root / file.path).read_bytes() == (file.content or b""), file.path
    reqs = sdk.requests()
    check_mode(sdk, reqs)
    served = sorted(p for p in paths(reqs) if p.startswith("/_dl/"))
    assert len(served) == len(ver.files)  # each file fetched once (all < 512 MiB: one range)


# -- models ---------------------------------------------------------------------------------


def test_model_list(sdk: Sdk) -> None:
    models = [e.resource_id for e in sdk.fake.catalog.of_kind("model")]
    listed = sdk.json("model-list")
    assert sorted(rid_of(m) for m in listed) == sorted(models)
    by_rid = {rid_of(m): m for m in listed}
    assert by_rid[MODEL]["latestVersionIdStr"] == "2"
    assert by_rid[TEAM_MODEL]["teamName"] == "tlt"
    reqs = sdk.requests()
    check_mode(sdk, reqs)
    search = [r for r in reqs if r.path.startswith("/v2/search/")]
    q = json.loads(search[0].query["q"][0])
    assert q["query"] == "resourceId:*" and q["page"] == 0
    if sdk.mode == "key":  # catalog, org and subscriber searches, then unioned
        assert {p for p in paths(search)} == {
            "/v2/search/catalog/resources/MODEL",
            "/v2/search/org/nvidia/resources/MODEL",
            "/v2/search/subscriber/catalog/resources/MODEL",
        }
    else:
        assert paths(search) == ["/v2/search/catalog/resources/MODEL"]

    glob = sdk.json("model-list", "nvidia/tlt/*")
    assert [rid_of(m) for m in glob] == [TEAM_MODEL]
    sdk.requests()

    versions = sdk.json("model-list", TEAM_MODEL)  # a concrete name lists its versions
    assert [v["versionId"] for v in versions] == ["v2", "v1"]
    assert versions[1]["totalFileCount"] == 3 and versions[1]["status"] == "UPLOAD_COMPLETE"
    reqs = sdk.requests()
    check_mode(sdk, reqs)
    prefix = "/v2/org/nvidia/team/tlt/models" if sdk.mode == "key" else "/v2/models/nvidia/tlt"
    assert paths(reqs)[-2:] == [f"{prefix}/tlt_resnet18_ssd/versions"] * 2  # 2 pages of 1
    assert [r.query.get("page-number") for r in reqs[-2:]] == [None, ["1"]]


def test_model_info(sdk: Sdk) -> None:
    art = entry(sdk, "model", MODEL)
    doc = sdk.json("model-info", MODEL)["model"]
    assert (doc["name"], doc["orgName"], doc["displayName"]) == (
        art.name,
        "nvidia",
        art.display_name,
    )
    assert doc["latestVersionIdStr"] == "2" and doc["latestVersionSizeInBytes"] == 3882
    reqs = sdk.requests()
    check_mode(sdk, reqs)
    want = f"/v2/org/nvidia/models/{art.name}" if sdk.mode == "key" else f"/v2/models/{MODEL}"
    assert paths(reqs)[-1] == want and reqs[-1].query == {"resolve-labels": ["false"]}

    team = sdk.json("model-info", f"{TEAM_MODEL}:v1")
    assert team["modelVersion"]["versionId"] == "v1"
    assert team["modelVersion"]["totalFileCount"] == 3
    assert team["model"]["teamName"] == "tlt"
    reqs = sdk.requests()
    check_mode(sdk, reqs)
    want = (
        "/v2/org/nvidia/team/tlt/models/tlt_resnet18_ssd/versions/v1"
        if sdk.mode == "key"
        else "/v2/models/nvidia/tlt/tlt_resnet18_ssd/versions/v1"
    )
    assert paths(reqs)[-1] == want

    missing = sdk.run("model-info", "nvidia/no_such_model", ok=False)
    assert missing.returncode == 1 and missing.stdout == ""
    assert "ResourceNotFoundException" in missing.stderr
    assert "'nvidia/no_such_model' could not be found" in missing.stderr


def test_model_download(sdk: Sdk, tmp_path: Path) -> None:
    check_download(sdk, "model", MODEL, "1", tmp_path / "a")
    check_download(sdk, "model", TEAM_MODEL, None, tmp_path / "b")  # latest: v2


# -- resources ------------------------------------------------------------------------------


def test_resource_list_and_info(sdk: Sdk) -> None:
    resources = [e.resource_id for e in sdk.fake.catalog.of_kind("resource")]
    listed = sdk.json("resource-list", "nvidia/*")
    assert sorted(rid_of(r) for r in listed) == sorted(resources)
    assert {r["name"]: r for r in listed}["bert_for_pytorch"]["trainingFramework"] == "PyTorch"
    check_mode(sdk, sdk.requests())

    versions = sdk.json("resource-list", RESOURCE)
    assert [v["versionId"] for v in versions] == ["2.0", "1.0"]
    check_mode(sdk, sdk.requests())

    recipe = sdk.json("resource-info", TEAM_RESOURCE)["recipe"]
    assert recipe["teamName"] == "tlt" and recipe["latestVersionIdStr"] == "2.0"
    reqs = sdk.requests()
    check_mode(sdk, reqs)
    want = (
        "/v2/org/nvidia/team/tlt/resources/tlt_getting_started"
        if sdk.mode == "key"
        else f"/v2/resources/{TEAM_RESOURCE}"
    )
    assert paths(reqs)[-1] == want

    version = sdk.json("resource-info", f"{RESOURCE}:1.0")
    art = entry(sdk, "resource", RESOURCE)
    ver = art.version("1.0")
    assert ver is not None
    assert version["recipeVersion"]["versionId"] == "1.0"
    assert version["recipeVersion"]["totalSizeInBytes"] == ver.total_size


def test_resource_download(sdk: Sdk, tmp_path: Path) -> None:
    check_download(sdk, "resource", TEAM_RESOURCE, "2.0", tmp_path / "a")


# -- images ---------------------------------------------------------------------------------


def test_image_list(sdk: Sdk) -> None:
    images = sdk.fake.catalog.of_kind("image")
    listed = sdk.json("image-list")
    assert sorted(r["name"] for r in listed) == sorted(e.name for e in images)  # all org nvidia
    pytorch = {r["name"]: r for r in listed}["pytorch"]
    assert pytorch["latestTag"] == "19.10-py3" and pytorch["latestImageSize"] > 0
    reqs = sdk.requests()
    check_mode(sdk, reqs)
    catalog_pages = [
        json.loads(r.query["q"][0])["page"]
        for r in reqs
        if r.path == "/v2/search/catalog/resources/CONTAINER"
    ]
    assert catalog_pages == list(range(-(-len(images) // 10)))  # every page once

    art = entry(sdk, "image", IMAGE)
    tags = sdk.json("image-list", IMAGE)
    assert [t["tag"] for t in tags] == [v.version_id for v in art.versions]
    assert all(t["digest"].startswith("sha256:") for t in tags)
    reqs = sdk.requests()
    check_mode(sdk, reqs)
    want = (
        "/v2/org/nvidia/repos/bigdft/images"
        if sdk.mode == "key"
        else "/v2/repos/nvidia/bigdft/images"
    )
    assert paths(reqs)[-2:] == [want, want]  # style B: 3 tags in pages of 2


def test_image_info(sdk: Sdk) -> None:
    art = entry(sdk, "image", IMAGE)
    repo, scan = sdk.json("image-info", IMAGE)
    assert scan is None
    assert (repo["name"], repo["namespace"]) == ("bigdft", "nvidia")
    assert repo["tags"] == [v.version_id for v in art.versions] and repo["latestTag"] == "19.10"
    check_mode(sdk, sdk.requests())

    tag = art.version("19.09")
    assert tag is not None
    meta, manifest, scans, arches = sdk.json("image-info", f"{IMAGE}:19.09")
    assert meta["tag"] == "19.09" and meta["digest"] == tag.digest
    assert meta["size"] == tag.image_size and scans == []
    assert manifest["name"] == IMAGE and manifest["tag"] == "19.09"
    assert [a["architecture"] for a in arches] == tag.architectures
    assert arches[0]["digest"] == tag.digest
    reqs = sdk.requests()
    check_mode(sdk, reqs)
    base = "/v2/org/nvidia/repos/bigdft" if sdk.mode == "key" else "/v2/repos/nvidia/bigdft"
    assert paths(reqs)[-2:] == [f"{base}/images/19.09", f"{base}/tags/19.09"]

    missing = sdk.run("image-info", f"{IMAGE}:0.0", ok=False)
    assert missing.returncode == 1 and "ResourceNotFoundException" in missing.stderr


# -- what the fake serves for the SDK (no SDK needed) ---------------------------------------


def _get(url: str, ca: Path) -> tuple[int, Any]:
    ctx = ssl.create_default_context(cafile=str(ca))
    try:
        with urllib.request.urlopen(url, timeout=10, context=ctx) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_fake_over_tls(tls: TlsFiles) -> None:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(tls.cert, tls.key)
    with FakeNGC(seed_catalog(limit=1), ssl_context=ctx) as fake:
        assert fake.url == f"https://127.0.0.1:{fake.port}"
        status, doc = _get(f"{fake.url}/v2/models/org/{MODEL}/2/files", tls.ca)
        assert status == 200 and all(u.startswith(fake.url + "/_dl/") for u in doc["urls"])
        entry = fake.catalog.lookup("model", MODEL)
        assert entry is not None and entry.latest is not None
        want = entry.latest.file(doc["filepath"][0])
        assert want is not None
        ctx_client = ssl.create_default_context(cafile=str(tls.ca))
        with urllib.request.urlopen(doc["urls"][0], timeout=10, context=ctx_client) as resp:
            assert resp.read() == want.content
        # A client that does not trust the CA fails the handshake; the server carries on.
        with pytest.raises(urllib.error.URLError):
            urllib.request.urlopen(f"{fake.url}/v2/products", timeout=10)
        assert _get(f"{fake.url}/v2/products", tls.ca) == (200, {"products": []})
    assert fake.errors == []


def test_fake_image_tag_endpoints(tls: TlsFiles) -> None:
    """``image info repo:tag`` reads /images/{tag} and /tags/{tag}, team repos included."""
    cat = seed_catalog(limit=1, include_resources=False, include_images=True)
    team_tags = [FakeVersion("1.0", architectures=["amd64", "arm64"], image_size=5000)]
    cat.add(FakeEntry("image", "acme", "lab", "tool", versions=team_tags))
    cat.add(FakeEntry("image", "acme", "tool", "images", versions=[FakeVersion("2.0")]))
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(tls.cert, tls.key)
    with FakeNGC(cat, ssl_context=ctx, api_key="k") as fake:
        base = f"{fake.url}/v2/repos"
        status, meta = _get(f"{base}/acme/lab/tool/tags/1.0", tls.ca)
        assert status == 200 and meta["tag"] == "1.0" and meta["size"] == 5000
        assert [a["architecture"] for a in meta["architectureVariants"]] == ["amd64", "arm64"]
        status, manifest = _get(f"{base}/acme/lab/tool/images/1.0", tls.ca)
        assert status == 200 and manifest == {
            "name": "acme/lab/tool",
            "tag": "1.0",
            "architecture": "amd64",
            "schemaVersion": 1,
            "fsLayers": [],
            "history": [],
        }
        status, meta = _get(f"{base}/nvidia/pytorch/tags/19.10-py3", tls.ca)
        assert status == 200 and meta["digest"].startswith("sha256:")
        assert (
            _get(f"{base}/nvidia/pytorch/images/19.10-py3", tls.ca)[1]["name"] == "nvidia/pytorch"
        )
        # "acme/tool/images" is the repository "images" of team acme/tool (no repo acme/tool)
        assert _get(f"{base}/acme/tool/images", tls.ca)[1]["name"] == "images"
        assert _get(f"{base}/acme/tool/images/images", tls.ca)[1]["images"][0]["tag"] == "2.0"
        assert _get(f"{base}/acme/tool/images/tags/2.0", tls.ca)[1]["tag"] == "2.0"
        status, err = _get(f"{base}/nvidia/pytorch/tags/0.0", tls.ca)
        assert status == 404 and err["requestStatus"]["statusDescription"] == "Tag not found"
        for bad in ("nvidia/pytorch/tags", "nvidia/pytorch/images/a/b", "nvidia/pytorch/x/y"):
            assert _get(f"{base}/{bad}", tls.ca)[0] == 404, bad
        keyed = f"{fake.url}/v2/org/acme/team/lab/repos/tool/tags/1.0"
        assert _get(keyed, tls.ca)[0] == 401  # key-mode paths need a token
    assert fake.errors == []


# -- the driver's own guard rails -------------------------------------------------------------


@pytest.mark.parametrize(
    ("var", "value"),
    [
        ("NGC_CLI_API_URL", "https://api.ngc.nvidia.com"),
        ("NGC_CLI_API_URL", "https://10.0.0.1:8443"),
        ("NGC_CLI_AUTH_URL", "https://authn.nvidia.com"),
        ("NGC_CLI_API_URL", ""),
    ],
)
def test_driver_refuses_non_loopback(tmp_path: Path, var: str, value: str) -> None:
    env = sdk_env("https://127.0.0.1:1", tmp_path, tmp_path / "ca.pem", api_key="k")
    env[var] = value
    proc = subprocess.run(
        [sys.executable, str(DRIVER), "model-list"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2 and proc.stdout == ""
    assert var in proc.stderr


def test_driver_refuses_proxies(tmp_path: Path) -> None:
    env = sdk_env("https://127.0.0.1:1", tmp_path, tmp_path / "ca.pem")
    env["https_proxy"] = "http://127.0.0.1:3128"
    proc = subprocess.run(
        [sys.executable, str(DRIVER), "model-list"], env=env, capture_output=True, text=True
    )
    assert proc.returncode == 2 and "https_proxy" in proc.stderr


def test_loopback_predicate() -> None:
    ok = ["127.0.0.1", "127.3.4.5", "::1", "[::1]", "localhost", "LOCALHOST.", "::ffff:127.0.0.1"]
    bad = ["10.0.0.1", "192.0.2.1", "::ffff:10.0.0.1", "api.ngc.nvidia.com", "", None, "0.0.0.0"]
    assert all(ngcsdk_driver.is_loopback_host(h) for h in ok)
    assert not any(ngcsdk_driver.is_loopback_host(h) for h in bad)
    assert ngcsdk_driver.is_loopback_host(b"127.0.0.1")


def test_network_guard(monkeypatch: pytest.MonkeyPatch) -> None:
    """The guard wraps lookups and connects; the wrapped functions are inert stand-ins here
    (monkeypatch restores the real ones), so nothing can leave the machine even if it fails."""
    reached: list[object] = []

    def fake_getaddrinfo(host: object, *args: object, **kwargs: object) -> list[object]:
        reached.append(host)
        return []

    def fake_connect(self: socket.socket, address: object) -> None:
        reached.append(address)

    monkeypatch.setattr(socket, "getaddrinfo", fake_getaddrinfo)
    monkeypatch.setattr(socket.socket, "connect", fake_connect)
    monkeypatch.setattr(socket.socket, "connect_ex", fake_connect)
    ngcsdk_driver.forbid_non_loopback_network()
    with pytest.raises(socket.gaierror):
        socket.getaddrinfo("api.ngc.nvidia.com", 443)
    with socket.socket() as sock:
        with pytest.raises(OSError, match="beyond loopback"):
            sock.connect(("192.0.2.1", 443))
        with pytest.raises(OSError, match="beyond loopback"):
            sock.connect_ex(("192.0.2.1", 443))
        socket.getaddrinfo("localhost", 443)
        sock.connect(("127.0.0.1", 9))
    assert reached == ["localhost", ("127.0.0.1", 9)]
