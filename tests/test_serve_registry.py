"""`mirror serve` registry API: real skopeo against the read-only server over a synced root.

The mirror root comes from a real `mirror sync` of docker-registry (test/multi:1.0 index with
linux/amd64 only, test/single:v1 OCI, test/docker:v1 Docker schema2), served by uvicorn on
127.0.0.1 in a background thread.
"""

from __future__ import annotations

import asyncio
import hashlib
import http.client
import json
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import require_tool
from tests.registry_peer import (
    OCI_INDEX,
    OCI_MANIFEST,
    Layout,
    free_port,
    skopeo,
)
from tests.serve_peer import ServeThread, raw_request, synced_test_images

DOCKER_V2 = "application/vnd.docker.distribution.manifest.v2+json"


@dataclass
class Served:
    url: str
    host: str
    root: Path
    layout: Layout
    home: Path  # skopeo HOME
    index: dict[str, Any]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    work = tmp_path_factory.mktemp("serve")
    root, layout = synced_test_images(work)
    index = json.loads((root / "index.json").read_text())
    with ServeThread(root) as srv:
        yield Served(srv.url, srv.host, root, layout, work / "home", index)


def _request(
    srv: Served, method: str, path: str, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    """Raw http.client: the path goes out exactly as written (no normalisation, no proxy)."""
    return raw_request(srv.host, method, path, headers)


def _code(body: bytes) -> str:
    doc = json.loads(body)
    (error,) = doc["errors"]
    assert set(error) == {"code", "message", "detail"}
    return str(error["code"])


def _stored_type(srv: Served, repo: str) -> str:
    for m in srv.index["manifests"]:
        if f"/{repo}:" in m["annotations"]["org.opencontainers.image.ref.name"]:
            return str(m["mediaType"])
    raise AssertionError(repo)


def _sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def test_split_reference() -> None:
    from mirror.serve.repo_index import split_reference

    assert split_reference("127.0.0.1:5000/test/multi:1.0") == ("test/multi", "1.0")
    assert split_reference("nvcr.io/nvidia/pytorch:24.01-py3") == ("nvidia/pytorch", "24.01-py3")
    assert split_reference("localhost/a/b:v") == ("a/b", "v")
    assert split_reference("nvidia/pytorch:1") == ("nvidia/pytorch", "1")
    assert split_reference("nvcr.io/nvidia/pytorch") is None
    assert split_reference("nvcr.io/../etc:1") is None


def test_skopeo_inspect_copy_and_list_tags(served: Served, tmp_path: Path) -> None:
    out = skopeo(
        "inspect", "--tls-verify=false", f"docker://{served.host}/test/multi:1.0", home=served.home
    )
    doc = json.loads(out)
    assert doc["Architecture"] == "amd64" and doc["Os"] == "linux"
    raw = skopeo(
        "inspect",
        "--raw",
        "--tls-verify=false",
        f"docker://{served.host}/test/multi:1.0",
        home=served.home,
    )
    assert _sha(raw.encode()) == served.layout.tags["multi"]["digest"]

    dest = tmp_path / "single"
    skopeo(
        "copy",
        "-q",
        "--src-tls-verify=false",
        f"docker://{served.host}/test/single:v1",
        f"dir:{dest}",
        home=served.home,
    )
    manifest = (dest / "manifest.json").read_bytes()
    assert _sha(manifest) == served.layout.tags["single"]["digest"]
    for layer in json.loads(manifest)["layers"]:
        data = (dest / layer["digest"][7:]).read_bytes()
        assert data == served.layout.blobs[layer["digest"]]

    docker_dest = tmp_path / "docker"
    skopeo(
        "copy",
        "-q",
        "--src-tls-verify=false",
        f"docker://{served.host}/test/docker:v1",
        f"dir:{docker_dest}",
        home=served.home,
    )
    stored = _stored_type(served, "test/docker")  # whatever the sync stored, served as is
    assert json.loads((docker_dest / "manifest.json").read_bytes())["mediaType"] == stored

    tags = json.loads(
        skopeo(
            "list-tags",
            "--tls-verify=false",
            f"docker://{served.host}/test/multi",
            home=served.home,
        )
    )
    assert tags["Tags"] == ["1.0"]


def test_base_and_manifest_headers(served: Served) -> None:
    status, headers, body = _request(served, "GET", "/v2/")
    assert (status, body) == (200, b"{}")
    assert headers["docker-distribution-api-version"] == "registry/2.0"
    status, headers, body = _request(served, "HEAD", "/v2/")
    assert status == 200 and headers["docker-distribution-api-version"] == "registry/2.0"

    digest = served.layout.tags["multi"]["digest"]
    status, headers, body = _request(served, "HEAD", "/v2/test/multi/manifests/1.0")
    assert status == 200 and body == b""
    assert headers["content-type"] == OCI_INDEX
    assert headers["docker-content-digest"] == digest
    assert int(headers["content-length"]) == served.layout.tags["multi"]["size"]
    status, headers, body = _request(served, "GET", f"/v2/test/multi/manifests/{digest}")
    assert status == 200 and _sha(body) == digest and headers["content-type"] == OCI_INDEX

    # the amd64 child by digest: media type from its body
    amd = json.loads(body)["manifests"][0]
    status, headers, child = _request(served, "GET", f"/v2/test/multi/manifests/{amd['digest']}")
    assert (
        status == 200 and _sha(child) == amd["digest"] and headers["content-type"] == OCI_MANIFEST
    )
    # the arm64 child was not selected: 404
    arm = json.loads(body)["manifests"][1]
    status, _, err = _request(served, "GET", f"/v2/test/multi/manifests/{arm['digest']}")
    assert status == 404 and _code(err) == "MANIFEST_UNKNOWN"
    # a digest of another repository is not served here
    status, _, err = _request(served, "GET", f"/v2/test/docker/manifests/{digest}")
    assert status == 404 and _code(err) == "MANIFEST_UNKNOWN"


def test_accept_negotiation(served: Served) -> None:
    stored = _stored_type(served, "test/docker")
    other = DOCKER_V2 if stored == OCI_MANIFEST else OCI_MANIFEST
    path = "/v2/test/docker/manifests/v1"
    for accept in (None, "*/*", f"{other}, {stored};q=0.5", f"{other}, */*"):
        hdrs = {"Accept": accept} if accept else {}
        status, headers, _ = _request(served, "GET", path, hdrs)
        assert status == 200 and headers["content-type"] == stored, accept
    status, _, err = _request(served, "GET", path, {"Accept": other})
    assert status == 404 and _code(err) == "MANIFEST_UNKNOWN"
    status, _, err = _request(served, "HEAD", "/v2/test/multi/manifests/1.0", {"Accept": other})
    assert status == 404
    # several Accept headers, as containers/image may send
    status, headers, _ = _request_multi(served, path, [other, stored])
    assert status == 200 and headers["content-type"] == stored


def _request_multi(srv: Served, path: str, accepts: list[str]) -> tuple[int, dict[str, str], bytes]:
    host, port = srv.host.split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        conn.putrequest("GET", path)
        for accept in accepts:
            conn.putheader("Accept", accept)
        conn.endheaders()
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def test_blobs_and_ranges(served: Served) -> None:
    manifest = json.loads(
        _request(
            served, "GET", f"/v2/test/single/manifests/{served.layout.tags['single']['digest']}"
        )[2]
    )
    layer = manifest["layers"][0]["digest"]
    data = served.layout.blobs[layer]
    size = len(data)
    path = f"/v2/test/single/blobs/{layer}"
    status, headers, body = _request(served, "GET", path)
    assert status == 200 and body == data
    assert headers["docker-content-digest"] == layer and headers["accept-ranges"] == "bytes"
    status, headers, body = _request(served, "HEAD", path)
    assert status == 200 and body == b"" and int(headers["content-length"]) == size
    cases = {
        "bytes=500-1499": (500, 1499),
        "bytes=500-": (500, size - 1),
        "bytes=-500": (size - 500, size - 1),
        f"bytes=10-{size + 100}": (10, size - 1),
    }
    for spec, (start, end) in cases.items():
        status, headers, body = _request(served, "GET", path, {"Range": spec})
        assert status == 206, spec
        assert headers["content-range"] == f"bytes {start}-{end}/{size}"
        assert body == data[start : end + 1]
    status, headers, _ = _request(served, "GET", path, {"Range": f"bytes={size}-"})
    assert status == 416 and headers["content-range"] == f"bytes */{size}"
    # config blob, via the blobs endpoint
    config = manifest["config"]["digest"]
    assert (
        _request(served, "GET", f"/v2/test/single/blobs/{config}")[2] == served.layout.blobs[config]
    )
    # unknown, other repository's and unselected-platform blobs
    status, _, err = _request(served, "GET", f"/v2/test/single/blobs/sha256:{'0' * 64}")
    assert status == 404 and _code(err) == "BLOB_UNKNOWN"
    arm_only = {d for d in served.layout.blobs} - {
        d for d in served.layout.blobs if (served.root / "blobs" / "sha256" / d[7:]).exists()
    }
    for digest in arm_only:
        status, _, err = _request(served, "GET", f"/v2/test/multi/blobs/{digest}")
        assert status == 404 and _code(err) == "BLOB_UNKNOWN"


def test_tags_pagination_and_catalog(served: Served, tmp_path: Path) -> None:
    status, headers, body = _request(served, "GET", "/v2/test/single/tags/list")
    assert status == 200 and json.loads(body) == {"name": "test/single", "tags": ["v1"]}
    assert "link" not in headers
    status, _, body = _request(served, "GET", "/v2/_catalog")
    assert json.loads(body)["repositories"] == ["test/docker", "test/multi", "test/single"]
    status, headers, body = _request(served, "GET", "/v2/_catalog?n=1")
    assert json.loads(body)["repositories"] == ["test/docker"]
    assert headers["link"] == '</v2/_catalog?n=1&last=test%2Fdocker>; rel="next"'
    status, _, err = _request(served, "GET", "/v2/test/nothing/tags/list")
    assert status == 404 and _code(err) == "NAME_UNKNOWN"

    # pagination + index.json reload, on a copy of the root served in-process
    root = tmp_path / "root"
    shutil.copytree(served.root, root, ignore=shutil.ignore_patterns("blobs"))
    os.symlink(served.root / "blobs", root / "blobs")
    index = json.loads((root / "index.json").read_text())
    single = next(m for m in index["manifests"] if "/test/single:" in str(m["annotations"]))
    extra = []
    for tag in ("b", "a", "c", "V2"):
        ref = f"nvcr.io/test/single:{tag}"
        extra.append({**single, "annotations": {"org.opencontainers.image.ref.name": ref}})

    from mirror.serve import create_app

    app = create_app(root)

    async def scenario() -> None:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            assert (await client.get("/v2/test/single/tags/list")).json()["tags"] == ["v1"]
            tmp = root / "index.json.new"
            tmp.write_text(json.dumps({**index, "manifests": index["manifests"] + extra}))
            os.replace(tmp, root / "index.json")
            r = await client.get("/v2/test/single/tags/list?n=2")
            assert r.json()["tags"] == ["V2", "a"]
            assert r.headers["link"] == '</v2/test/single/tags/list?n=2&last=a>; rel="next"'
            r = await client.get("/v2/test/single/tags/list?n=2&last=a")
            assert r.json()["tags"] == ["b", "c"] and "link" in r.headers
            r = await client.get("/v2/test/single/tags/list?n=2&last=c")
            assert r.json()["tags"] == ["v1"] and "link" not in r.headers
            r = await client.get("/v2/test/single/tags/list?n=0")
            assert r.json()["tags"] == [] and "link" not in r.headers
            assert (await client.get("/v2/test/single/tags/list?n=x")).status_code == 400
            r = await client.head("/v2/test/single/manifests/b")
            assert r.headers["docker-content-digest"] == single["digest"]

    asyncio.run(scenario())


def test_writes_traversal_and_bad_digests(served: Served) -> None:
    for method in ("PUT", "POST", "PATCH", "DELETE"):
        status, headers, body = _request(served, method, "/v2/test/single/manifests/v1")
        assert status == 405 and _code(body) == "UNSUPPORTED" and "GET" in headers["allow"]
    status, _, body = _request(served, "POST", "/v2/test/single/blobs/uploads/")
    assert status == 405 and _code(body) == "UNSUPPORTED"
    bad = [
        "/v2/../../etc/passwd",
        "/v2/test/../../../etc/passwd/manifests/v1",
        "/v2/test/single/blobs/sha256:../../../../etc/passwd",
        "/v2/test/single/blobs/..%2F..%2Fetc%2Fpasswd",
        "/v2/%2e%2e/%2e%2e/etc/manifests/v1",
        "/v2/test/single/blobs/sha256:abc",
        "/v2/test/single/manifests/sha256:totallywrong",
        f"/v2/test/single/blobs/sha256:{'A' * 64}",
        "/v2/Test/Single/tags/list",
    ]
    for path in bad:
        status, _, body = _request(served, "GET", path)
        assert status in (400, 404), path
        assert _code(body) in {"NAME_INVALID", "NAME_UNKNOWN", "DIGEST_INVALID"}, path
        assert b"root:" not in body
    status, _, body = _request(served, "GET", "/etc/passwd")  # the web UI's 404 page
    assert status == 404 and b"root:" not in body
    status, _, body = _request(served, "GET", "/v2/test/single/manifests/sha256:totallywrong")
    assert status == 400 and _code(body) == "DIGEST_INVALID"
    status, _, body = _request(served, "GET", f"/v2/test/single/blobs/sha512:{'0' * 128}")
    assert status == 404 and _code(body) == "BLOB_UNKNOWN"
    status, _, body = _request(served, "GET", "/v2/test/single/manifests/nope")
    assert status == 404 and _code(body) == "MANIFEST_UNKNOWN"
    status, _, body = _request(served, "GET", "/v2/127.0.0.1:5000/test/single/manifests/v1")
    assert status == 400 and _code(body) == "NAME_INVALID"


def test_corrupt_manifest_is_not_served(served: Served, tmp_path: Path) -> None:
    root = tmp_path / "root"
    shutil.copytree(served.root, root)
    digest = served.layout.tags["single"]["digest"]
    blob = root / "blobs" / "sha256" / digest[7:]
    data = bytearray(blob.read_bytes())
    data[10] ^= 0x01
    blob.write_bytes(bytes(data))

    from mirror.serve import create_app

    async def scenario() -> None:
        transport = httpx.ASGITransport(app=create_app(root))
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            r = await client.get("/v2/test/single/manifests/v1")
            assert r.status_code == 404 and r.json()["errors"][0]["code"] == "MANIFEST_UNKNOWN"
            r = await client.get("/v2/test/multi/manifests/1.0")  # its own manifests are fine
            assert r.status_code == 200

    asyncio.run(scenario())


def test_run_serves_on_loopback(served: Served) -> None:
    import subprocess
    import sys

    port = free_port()
    code = f"from mirror.serve import run; run({str(served.root)!r}, port={port})"
    proc = subprocess.Popen(
        [sys.executable, "-c", code],
        cwd=Path(__file__).parents[1],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with httpx.Client(trust_env=False, timeout=30) as client:
                    r = client.get(f"http://127.0.0.1:{port}/v2/test/single/tags/list")
                break
            except httpx.TransportError:
                assert proc.poll() is None and time.monotonic() < deadline
                time.sleep(0.05)
        assert r.status_code == 200 and r.json()["tags"] == ["v1"]
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_corrupt_layer_is_never_served_silently(served: Served, tmp_path: Path) -> None:
    root = tmp_path / "root"
    shutil.copytree(served.root, root)
    manifest = json.loads(
        (root / "blobs" / "sha256" / served.layout.tags["single"]["digest"][7:]).read_bytes()
    )
    layer = manifest["layers"][0]["digest"]
    path = root / "blobs" / "sha256" / layer[7:]
    path.chmod(0o644)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    with ServeThread(root) as srv:
        # skopeo pulls through the aborted response and fails; nothing wrong lands
        with pytest.raises(RuntimeError, match="(?i)digest|unexpected EOF|short"):
            skopeo(
                "copy",
                "--src-tls-verify=false",
                f"docker://{srv.host}/test/single:v1",
                f"dir:{tmp_path / 'out'}",
                home=served.home,
            )
        with httpx.Client(base_url=srv.url, timeout=30) as client:
            r = client.get(f"/v2/test/single/blobs/{layer}")
            assert r.status_code == 500 and r.json()["errors"][0]["detail"] == layer
            # other blobs of the same image still flow
            config = manifest["config"]["digest"]
            assert client.get(f"/v2/test/single/blobs/{config}").status_code == 200


def test_podman_pulls_from_the_mirror(served: Served, tmp_path: Path) -> None:
    require_tool("podman")
    import subprocess
    import tempfile

    run = Path(tempfile.mkdtemp(prefix="pod-", dir="/tmp"))  # podman caps runroot at 50 chars
    store = ["--root", str(tmp_path / "root"), "--runroot", str(run)]
    base = ["podman", *store, "--storage-driver", "vfs"]
    pulled = subprocess.run(
        [*base, "pull", "--tls-verify=false", f"{served.host}/test/single:v1"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert pulled.returncode == 0, pulled.stderr
    image_id = pulled.stdout.strip().splitlines()[-1]
    shown = subprocess.run(
        [*base, "image", "inspect", image_id], capture_output=True, text=True, timeout=60
    )
    assert shown.returncode == 0, shown.stderr
    (info,) = json.loads(shown.stdout)
    digest = served.layout.tags["single"]["digest"]
    assert info["Digest"] == digest
    assert f"{served.host}/test/single:v1" in info["RepoTags"]
    subprocess.run([*base, "rmi", "-a", "-f"], capture_output=True, timeout=60)
    shutil.rmtree(run, ignore_errors=True)


def test_podman_pulls_original_names_through_a_registries_conf_mirror(
    served: Served, tmp_path: Path
) -> None:
    """Sites keep their image names: registries.conf sends `nvcr.io/...` pulls to the mirror."""
    require_tool("podman")
    import subprocess
    import tempfile

    conf = tmp_path / "registries.conf"
    # the "real" location is a closed loopback port: a miss can never leave this machine
    conf.write_text(
        '[[registry]]\nprefix = "nvcr.io"\nlocation = "127.0.0.1:1"\n'
        f'[[registry.mirror]]\nlocation = "{served.host}"\ninsecure = true\n'
    )
    run = Path(tempfile.mkdtemp(prefix="pod-", dir="/tmp"))
    base = ["podman", "--root", str(tmp_path / "root"), "--runroot", str(run)]
    env = {**os.environ, "CONTAINERS_REGISTRIES_CONF": str(conf)}
    try:
        pulled = subprocess.run(
            [*base, "--storage-driver", "vfs", "pull", "nvcr.io/test/single:v1"],
            capture_output=True,
            text=True,
            timeout=300,
            env=env,
        )
        assert pulled.returncode == 0, pulled.stderr
        shown = subprocess.run(
            [*base, "--storage-driver", "vfs", "image", "inspect", "nvcr.io/test/single:v1"],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
        )
        assert shown.returncode == 0, shown.stderr
        assert json.loads(shown.stdout)[0]["Digest"] == served.layout.tags["single"]["digest"]
    finally:
        subprocess.run([*base, "--storage-driver", "vfs", "rmi", "-a", "-f"], capture_output=True)
        shutil.rmtree(run, ignore_errors=True)
