"""`mirror serve`'s NGC API, read tokens and blob re-verification, over real HTTP on loopback.

The root is a real sync of the fake NGC seed (newest version of each entry mirrored, the older
one metadata only); the server is uvicorn in a thread.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import httpx
import pytest

from mirror.config import Selection
from mirror.fakengc import FakeCatalog, FakeFile, FakeNGC, FakeVersion, seed_catalog
from mirror.paths import MirrorPaths
from mirror.sync import run_sync
from tests.conftest import make_settings
from tests.serve_peer import ServeThread

TOKEN = "read-token-for-tests"


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, FakeCatalog]:
    home = tmp_path_factory.mktemp("ngcapi") / "mirror"
    catalog = seed_catalog(limit=7, versions_per_entry=2)
    with FakeNGC(catalog) as fake:
        report = run_sync(
            make_settings(home, fake.url, kinds=("model", "resource"), select=(Selection("*"),))
        )
    assert report.outcome == "ok", report.failures
    return home, catalog


def _search(client: httpx.Client, rtype: str, query: str, page: int, size: int) -> Any:
    q = {"query": query, "page": page, "pageSize": size}
    r = client.get(f"/v2/search/catalog/resources/{rtype}?{urlencode({'q': json.dumps(q)})}")
    assert r.status_code == 200, r.text
    return r.json()


def test_search_pages_cover_every_entry_once(seeded: tuple[Path, FakeCatalog]) -> None:
    home, catalog = seeded
    with ServeThread(home) as srv, httpx.Client(base_url=srv.url, timeout=30) as c:
        assert c.get("/v2/products").json() == {"products": []}
        seen: list[str] = []
        first = _search(c, "MODEL", "resourceId:*", 0, 3)
        for page in range(first["resultPageTotal"]):
            body = _search(c, "MODEL", "resourceId:*", page, 3)
            seen += [r["resourceId"] for g in body["results"] for r in g["resources"]]
        want = sorted(e.resource_id for e in catalog.of_kind("model"))
        assert sorted(seen) == want and len(seen) == len(set(seen))
        one = want[0]
        body = _search(c, "MODEL", f"resourceId:{one}", 0, 100)
        assert [r["resourceId"] for r in body["results"][0]["resources"]] == [one]
        assert _search(c, "MODEL", "resourceId:nosuch/*", 0, 100)["results"] == []
        bad = c.get("/v2/search/catalog/resources/MODEL?q=%7Bnot-json")
        assert bad.status_code == 400 and "requestStatus" in bad.json()


def test_versions_files_and_downloads(seeded: tuple[Path, FakeCatalog]) -> None:
    home, catalog = seeded
    entry = catalog.of_kind("model")[0]
    newest, older = entry.versions[0], entry.versions[1]
    base = f"/v2/models/{entry.org}/{entry.name}"
    with ServeThread(home) as srv, httpx.Client(base_url=srv.url, timeout=30) as c:
        info = c.get(f"{base}?resolve-labels=false").json()["model"]
        assert info["name"] == entry.name and info["latestVersionIdStr"] == newest.version_id
        versions = c.get(f"{base}/versions?page-size=1000").json()["modelVersions"]
        status = {v["versionId"]: v["status"] for v in versions}
        # only the newest version's bytes are in this mirror
        assert status == {newest.version_id: "UPLOAD_COMPLETE", older.version_id: "UPLOAD_PENDING"}
        files = c.get(f"{base}/versions/{newest.version_id}/files").json()["modelFiles"]
        assert {f["path"]: f["sha256_base64"] for f in files} == {
            f.path: f.sha256_b64 for f in newest.files
        }
        # key-mode and guest download listings, all pages, then the bytes themselves
        for listing in (
            f"/v2/models/org/{entry.org}/{entry.name}/{newest.version_id}/files",
            f"/v2/org/{entry.org}/models/{entry.name}/{newest.version_id}/files",
        ):
            urls = c.get(listing).json()
            assert sorted(urls["filepath"]) == sorted(f.path for f in newest.files)
            for path, url in zip(urls["filepath"], urls["urls"], strict=True):
                assert urlsplit(url).netloc == srv.host
                body = httpx.get(url, timeout=30).content
                want = newest.file(path)
                assert want is not None and body == (want.content or b"")
        big = max(newest.files, key=lambda f: f.size)
        url = c.get(
            f"/v2/models/org/{entry.org}/{entry.name}/{newest.version_id}/files",
            params={"path": big.path},
        ).json()["urls"][0]
        part = httpx.get(url, timeout=30, headers={"Range": "bytes=10-19"})
        assert part.status_code == 206 and part.content == (big.content or b"")[10:20]
        assert part.headers["content-range"] == f"bytes 10-19/{big.size}"
        assert (
            httpx.get(url, timeout=30, headers={"Range": f"bytes={big.size}-"}).status_code == 416
        )
        # NGC's own client asks empty ranges as "bytes=0--1": the whole (here: any) body
        assert httpx.get(url, timeout=30, headers={"Range": "bytes=0--1"}).status_code == 200
        # a version whose bytes are not here: a clear 404, not a listing of dead links
        gone = c.get(f"/v2/models/org/{entry.org}/{entry.name}/{older.version_id}/files")
        assert gone.status_code == 404
        assert "not mirrored" in gone.json()["requestStatus"]["statusDescription"]
        assert c.get(f"/v2/models/{entry.org}/nosuch").status_code == 404


@pytest.mark.parametrize(
    "path",
    [
        "/v2/models/nvidia/..%2F..%2Fmirror.db",
        "/v2/models/nvidia/%2e%2e/versions",
        "/_dl/sha256/../../mirror.db",
        "/_dl/sha256/" + "0" * 64 + "/x",
        "/_dl/sha256/%2e%2e%2f%2e%2e%2fmirror.db/x",
        "/v2/repos/nvidia/..%00/images",
        "/static/../../mirror.db",
        "/v2/nvidia/x/blobs/sha256:..%2F..%2Fmirror.db",
    ],
)
def test_traversal_never_reaches_a_file(seeded: tuple[Path, FakeCatalog], path: str) -> None:
    home, _ = seeded
    db = (home / "mirror.db").read_bytes()[:16]
    with ServeThread(home) as srv, httpx.Client(base_url=srv.url, timeout=30) as c:
        r = c.get(path)
    assert r.status_code in (400, 404), (path, r.status_code)
    assert db not in r.content


def test_read_tokens_gate_every_api(seeded: tuple[Path, FakeCatalog]) -> None:
    home, catalog = seeded
    entry = catalog.of_kind("model")[0]
    v = entry.versions[0].version_id
    with ServeThread(home, tokens=[TOKEN]) as srv, httpx.Client(base_url=srv.url, timeout=30) as c:
        denied = c.get(f"/v2/models/{entry.org}/{entry.name}")
        assert denied.status_code == 401 and "Bearer" in denied.headers["www-authenticate"]
        reg = c.get("/v2/")
        assert reg.status_code == 401 and reg.headers["www-authenticate"].startswith("Basic")
        assert c.get("/v2/", auth=("anyone", TOKEN)).status_code == 200
        assert c.get("/v2/", auth=("anyone", "nope")).status_code == 401
        assert c.get("/", headers={"Accept": "text/html"}).status_code == 401
        # NGC's key exchange: Basic $oauthtoken:<token> -> a session token
        assert c.get("/token", auth=("$oauthtoken", "nope")).status_code == 401
        session = c.get("/token?service=ngc", auth=("$oauthtoken", TOKEN)).json()["token"]
        assert TOKEN not in session
        bearer = {"Authorization": f"Bearer {session}"}
        assert c.get(f"/v2/models/{entry.org}/{entry.name}", headers=bearer).status_code == 200
        listing = c.get(f"/v2/org/{entry.org}/models/{entry.name}/{v}/files", headers=bearer).json()
        url = listing["urls"][0]
        # the "presigned" link works without credentials (NGC clients send none there) ...
        assert httpx.get(url, timeout=30).status_code == 200
        # ... but not once altered or stripped of its signature
        parts = urlsplit(url)
        assert httpx.get(url.replace("sig=", "sig=x"), timeout=30).status_code == 403
        assert (
            httpx.get(f"{parts.scheme}://{parts.netloc}{parts.path}", timeout=30).status_code == 403
        )
        other = "/_dl/sha256/" + "1" * 64 + "/f?" + parts.query
        assert c.get(other).status_code == 403


def _blob_of(home: Path, catalog: FakeCatalog) -> tuple[str, bytes, str]:
    entry = catalog.of_kind("model")[0]
    f = max(entry.versions[0].files, key=lambda x: x.size)
    content = f.content or b""
    return "sha256:" + hashlib.sha256(content).hexdigest(), content, entry.resource_id


def _corrupt(home: Path, digest: str) -> None:
    path = MirrorPaths(home).blob(digest)
    os.chmod(path, 0o644)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def test_a_corrupt_blob_is_never_served_silently(
    seeded: tuple[Path, FakeCatalog], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    src, catalog = seeded
    home = tmp_path / "copy"
    shutil.copytree(src, home)
    digest, content, _ = _blob_of(home, catalog)
    url = f"/_dl/sha256/{digest.split(':')[1]}/f"
    with ServeThread(home) as srv, httpx.Client(base_url=srv.url, timeout=30) as c:
        assert c.get(url).content == content  # verified on first use
        _corrupt(home, digest)  # the file changes: verified again before it is served
        with pytest.raises(httpx.HTTPError):
            c.get(url)  # streamed, but the last chunk is withheld: the body comes up short
        again = c.get(url)  # known bad now: refused up front
        assert again.status_code == 500 and digest in again.text
        ranged = c.get(url, headers={"Range": "bytes=0-9"})
        assert ranged.status_code == 500
    assert any("failed verification" in r.getMessage() for r in caplog.records)
    # "never" trusts the store: the operator chose that
    with (
        ServeThread(home, reverify="never") as srv,
        httpx.Client(base_url=srv.url, timeout=30) as c,
    ):
        served = c.get(url)
        assert served.status_code == 200 and served.content != content


def test_latest_means_the_newest_version_held_here(tmp_path: Path) -> None:
    home = tmp_path / "mirror"
    cat = seed_catalog(limit=2)
    entry = cat.of_kind("model")[0]
    held = entry.versions[0].version_id
    with FakeNGC(cat) as fake:
        s = make_settings(home, fake.url, kinds=("model",), select=(Selection("*"),))
        assert run_sync(s).outcome == "ok"
        # upstream publishes 9.0; this mirror records it but (no selection) fetches no bytes
        cat.add_version(
            entry,
            FakeVersion("9.0", created="2031-01-01T00:00:00.000Z", files=[FakeFile("w", b"x")]),
        )
        assert run_sync(dataclasses.replace(s, select=())).outcome == "ok"
    with ServeThread(home) as srv, httpx.Client(base_url=srv.url, timeout=30) as c:
        info = c.get(f"/v2/models/{entry.org}/{entry.name}").json()["model"]
        assert info["latestVersionIdStr"] == held  # what `download-version` without :V gets
        versions = c.get(f"/v2/models/{entry.org}/{entry.name}/versions").json()["modelVersions"]
        assert versions[0]["versionId"] == "9.0" and versions[0]["status"] == "UPLOAD_PENDING"
        hit = _search(c, "MODEL", f"resourceId:{entry.resource_id}", 0, 10)
        attrs = {a["key"]: a["value"] for a in hit["results"][0]["resources"][0]["attributes"]}
        assert attrs["latestVersionIdStr"] == held
