"""Tests of the fake NGC server (mirror.fakengc), over real HTTP on 127.0.0.1 with urllib."""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mirror.fakengc import (
    FakeCatalog,
    FakeEntry,
    FakeFile,
    FakeNGC,
    FakeVersion,
    Fault,
    seed_catalog,
)
from mirror.fakengc.seed import read_model_listing
from mirror.fakengc.transfer import RangeNotSatisfiable, parse_range

REPO = Path(__file__).resolve().parents[1]
BERT = "bert_large_pre_training_for_tensorflow"  # first seed model: 3 files incl. empty.txt


class Reply:
    """A response (or HTTP error) read completely."""

    def __init__(self, status: int, headers: Any, body: bytes) -> None:
        self.status, self.headers, self.body = status, headers, body

    def json(self) -> Any:
        return json.loads(self.body)


def fetch(url: str, headers: dict[str, str] | None = None) -> Reply:
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return Reply(resp.status, resp.headers, resp.read())
    except urllib.error.HTTPError as err:
        return Reply(err.code, err.headers, err.read())


def search_url(fake: FakeNGC, rtype: str, query: str, page: int = 0, size: int = 100) -> str:
    q = {
        "fields": ["name"],
        "filters": [],
        "orderBy": [{"field": "score", "value": "ASC"}],
        "page": page,
        "pageSize": size,
        "query": query,
        "queryFields": ["name"],
    }
    # Form-encoded like the CLI: spaces become "+".
    return f"{fake.url}/v2/search/catalog/resources/{rtype}?" + urllib.parse.urlencode(
        {"q": json.dumps(q, sort_keys=True)}
    )


def b64sha(data: bytes) -> str:
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


@pytest.fixture(scope="module")
def seeded() -> Iterator[FakeNGC]:
    """A read-only server over the full seed catalog with small page caps."""
    with FakeNGC(seed_catalog(), search_page_size=7, list_page_size=1, url_page_size=2) as fake:
        yield fake
    assert fake.errors == []


@pytest.fixture()
def small() -> Iterator[FakeNGC]:
    """A fresh server over a small seed catalog, for tests that mutate or inject faults."""
    with FakeNGC(seed_catalog(limit=4)) as fake:
        yield fake
    assert fake.errors == []


def dl_urls(fake: FakeNGC, rid: str, ver: str) -> dict[str, tuple[str, str]]:
    """Walk the guest download-URL listing: {path: (url, sha256_base64)}."""
    org, *team, name = rid.split("/")
    prefix = f"org/{org}" + (f"/team/{team[0]}" if team else "")
    out: dict[str, tuple[str, str]] = {}
    page, pages = 0, 1
    while page < pages:
        body = fetch(f"{fake.url}/v2/models/{prefix}/{name}/{ver}/files?page-number={page}")
        doc = body.json()
        out.update(
            (p, (u, s))
            for p, u, s in zip(doc["filepath"], doc["urls"], doc["sha256_base64"], strict=True)
        )
        page, pages = page + 1, doc["paginationInfo"]["totalPages"]
    return out


# -- catalog ------------------------------------------------------------------------------


def test_seed_catalog_is_deterministic_with_distinct_ids() -> None:
    cat = seed_catalog()
    assert cat == seed_catalog()
    models, resources = cat.of_kind("model"), cat.of_kind("resource")
    assert len(models) == len(read_model_listing())  # duplicates of display names kept
    assert 5 <= len(resources) <= 10
    for kind in ("model", "resource"):
        ids = [e.resource_id for e in cat.of_kind(kind)]
        assert len(ids) == len(set(ids))
    twins = [
        e for e in models if e.display_name == "BERT-Base(fine-tuning) - SQuAD 1.1, seqLen=128"
    ]
    assert len(twins) == 2 and {e.framework for e in twins} == {"TensorFlow", "PyTorch"}
    assert any(e.team == "tlt" for e in models) and any(e.team is None for e in models)
    files = [f for e in cat.entries for v in e.versions for f in v.files]
    assert any(f.size == 0 for f in files) and any("/" in f.path for f in files)
    assert all(1 <= len(v.files) <= 3 for e in cat.entries for v in e.versions)
    assert all(len(e.versions) == 2 for e in cat.entries)
    limited = seed_catalog(limit=3, include_resources=False, versions_per_entry=1)
    assert [e.resource_id for e in limited.entries] == [e.resource_id for e in models[:3]]


def test_fake_file_hashes(tmp_path: Path) -> None:
    f = FakeFile("a/b.bin", content=b"hello")
    assert f.sha256_hex == hashlib.sha256(b"hello").hexdigest()
    assert f.sha256_b64 == b64sha(b"hello")
    f.content = b"changed"  # the cache must not serve a stale digest
    assert f.sha256_b64 == b64sha(b"changed") and f.size == 7
    f.listed_sha256_b64 = "AAAA"
    assert f.sha256_b64 == "AAAA" and f.sha256_hex == hashlib.sha256(b"changed").hexdigest()
    disk = tmp_path / "x.bin"
    disk.write_bytes(b"z" * 3_000_000)
    d = FakeFile("x.bin", disk_path=disk)
    assert d.size == 3_000_000 and d.sha256_b64 == b64sha(b"z" * 3_000_000)
    for bad in ("/abs", "a/../b", "a//b", ""):
        with pytest.raises(ValueError):
            FakeFile(bad)


# -- search ---------------------------------------------------------------------------------


def test_search_walks_all_pages_once(seeded: FakeNGC) -> None:
    expected = [e.resource_id for e in seeded.catalog.of_kind("model")]
    seen: list[str] = []
    first = fetch(search_url(seeded, "MODEL", "resourceId:*")).json()
    assert first["resultTotal"] == len(expected)
    assert first["resultPageTotal"] == math.ceil(len(expected) / 7)  # pageSize capped at 7
    assert first["params"]["pageSize"] == 7
    for page in range(first["resultPageTotal"]):
        body = fetch(search_url(seeded, "MODEL", "resourceId:*", page=page)).json()
        (group,) = body["results"]
        assert group["groupValue"] == "MODEL"
        seen += [r["resourceId"] for r in group["resources"]]
    assert seen == expected
    hit = first["results"][0]["resources"][0]
    assert hit["isPublic"] is True and hit["guestAccess"] is True
    assert hit["labels"][0]["key"] == "general"
    attrs = {a["key"]: a["value"] for a in hit["attributes"]}
    assert attrs["latestVersionIdStr"] == "2" and attrs["latestVersionSizeInBytes"].isdigit()
    beyond = fetch(search_url(seeded, "MODEL", "*", page=999)).json()
    assert beyond["results"][0]["resources"] == []


def test_search_glob_types_and_keyed_scopes(seeded: FakeNGC) -> None:
    tlt = fetch(search_url(seeded, "MODEL", "resourceId:nvidia/tlt/*", size=7)).json()
    want = sum(e.team == "tlt" for e in seeded.catalog.of_kind("model"))
    assert tlt["resultTotal"] == want > 0
    recipes = fetch(search_url(seeded, "RECIPE", "resourceId:nvidia/*")).json()
    assert recipes["resultTotal"] == len(seeded.catalog.of_kind("resource"))
    assert recipes["results"][0]["resources"][0]["resourceType"] == "RECIPE"
    helm = fetch(search_url(seeded, "HELM_CHART", "resourceId:*")).json()
    assert helm["resultTotal"] == 0 and helm["results"] == []
    for path in (
        "org/nvidia/resources/MODEL",
        "org/nvidia/team/tlt/resources/MODEL",
        "subscriber/catalog/resources/MODEL",
    ):
        assert fetch(f"{seeded.url}/v2/search/{path}?q=%7B%7D").json()["results"] == []
    assert fetch(f"{seeded.url}/v2/search/catalog/resources/MODEL?q=%7B").status == 400


# -- metadata -------------------------------------------------------------------------------


def test_info_guest_and_key_paths(seeded: FakeNGC) -> None:
    guest = fetch(f"{seeded.url}/v2/models/nvidia/tlt/tlt_resnet18_ssd?resolve-labels=false")
    key = fetch(f"{seeded.url}/v2/org/nvidia/team/tlt/models/tlt_resnet18_ssd")
    assert guest.status == key.status == 200
    model = guest.json()["model"]
    assert model == key.json()["model"]
    assert model["teamName"] == "tlt" and model["latestVersionIdStr"] == "v2"
    assert isinstance(model["latestVersionSizeInBytes"], int) and model["isPublic"] is True
    recipe = fetch(f"{seeded.url}/v2/resources/nvidia/bert_for_tensorflow").json()["recipe"]
    assert recipe["trainingFramework"] == "TensorFlow" and "framework" not in recipe
    missing = fetch(f"{seeded.url}/v2/models/nvidia/nope")
    assert missing.status == 404
    assert missing.json()["requestStatus"]["statusCode"] == "NOT_FOUND"
    version = fetch(f"{seeded.url}/v2/org/nvidia/models/{BERT}/versions/1").json()
    assert version["modelVersion"]["versionId"] == "1" and version["model"]["name"] == BERT
    assert (
        fetch(f"{seeded.url}/v2/resources/nvidia/bert_for_pytorch/versions/1.0").json()[
            "recipeVersion"
        ]["status"]
        == "UPLOAD_COMPLETE"
    )


def test_version_and_file_lists_style_a(seeded: FakeNGC) -> None:
    base = f"{seeded.url}/v2/models/nvidia/{BERT}/versions"
    first = fetch(base + "?page-size=1000&sort-order=SEMVER_DESC").json()  # capped at 1
    assert first["paginationInfo"]["totalPages"] == 2 and first["paginationInfo"]["size"] == 1
    second = fetch(base + "?page-size=1000&page-number=1").json()
    ids = [v["versionId"] for v in first["modelVersions"] + second["modelVersions"]]
    assert ids == ["2", "1"]  # newest first
    assert fetch(base + "?page-number=2").json()["modelVersions"] == []
    files = [fetch(f"{base}/2/files?page-size=1000&page-number={n}").json() for n in range(4)]
    assert files[0]["paginationInfo"]["totalPages"] == 3
    paths = [f["path"] for page in files for f in page["modelFiles"]]
    assert paths == ["model.ckpt.data-00000-of-00001", "checkpoints/model.ckpt", "empty.txt"]
    assert files[0]["modelFiles"][0]["sizeInBytes"] > 0 and files[3]["modelFiles"] == []
    key = fetch(f"{seeded.url}/v2/org/nvidia/resources/bert_for_pytorch/versions/1.0/files")
    assert {f["path"] for f in key.json()["recipeFiles"]} <= {
        "README.md",
        "scripts/run_training.sh",
        "requirements.txt",
    }


def test_download_url_listing_style_b(seeded: FakeNGC) -> None:
    base = f"{seeded.url}/v2/models/org/nvidia/{BERT}/2/files"
    p0, p1, p9 = (fetch(f"{base}?page-number={n}").json() for n in (0, 1, 9))
    assert p0["paginationInfo"] == {"index": 0, "size": 2, "totalPages": 2, "totalResults": 3}
    assert p0["filepath"] + p1["filepath"] == [
        "model.ckpt.data-00000-of-00001",
        "checkpoints/model.ckpt",
        "empty.txt",
    ]
    assert len(p0["urls"]) == len(p0["sha256_base64"]) == 2
    assert p9["filepath"] == p9["urls"] == p9["sha256_base64"] == []
    one = fetch(base + "?path=" + urllib.parse.quote("checkpoints/model.ckpt", safe="")).json()
    assert one["filepath"] == ["checkpoints/model.ckpt"] and len(one["urls"]) == 1
    assert fetch(base + "?path=nope").status == 404
    key = fetch(f"{seeded.url}/v2/org/nvidia/team/tlt/models/tlt_resnet18_ssd/v1/files").json()
    guest = fetch(f"{seeded.url}/v2/models/org/nvidia/team/tlt/tlt_resnet18_ssd/v1/files").json()
    assert key["filepath"] == guest["filepath"] != []
    res = fetch(f"{seeded.url}/v2/resources/org/nvidia/bert_for_pytorch/1.0/files").json()
    assert res["filepath"] and res["urls"][0].startswith(seeded.url + "/_dl/resource/")


# -- downloads ------------------------------------------------------------------------------


def test_downloads_hash_and_ranges(seeded: FakeNGC) -> None:
    urls = dl_urls(seeded, f"nvidia/{BERT}", "2")
    for url, sha in urls.values():  # sha256_base64 == base64(sha256(served bytes))
        assert b64sha(fetch(url).body) == sha
    url, _ = urls["checkpoints/model.ckpt"]
    full = fetch(url)
    assert full.status == 200 and full.headers["Accept-Ranges"] == "bytes"
    size = len(full.body)
    part = fetch(url, {"Range": "bytes=10-19"})
    assert part.status == 206 and part.body == full.body[10:20]
    assert part.headers["Content-Range"] == f"bytes 10-19/{size}"
    tail = fetch(url, {"Range": "bytes=100-"})
    assert tail.status == 206 and tail.body == full.body[100:]
    assert fetch(url, {"Range": "bytes=-5"}).body == full.body[-5:]
    bad = fetch(url, {"Range": f"bytes={size}-"})
    assert bad.status == 416 and bad.headers["Content-Range"] == f"bytes */{size}"
    empty = fetch(urls["empty.txt"][0], {"Range": "bytes=0--1"})  # what the CLI sends
    assert empty.status == 200 and empty.body == b""


def test_disk_file_uses_sendfile(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = os.urandom(3 << 20)
    (tmp_path / "big.bin").write_bytes(data)
    calls: list[int] = []
    real = socket.socket.sendfile

    def spy(self: socket.socket, file: Any, offset: int = 0, count: int | None = None) -> int:
        calls.append(count or 0)
        return real(self, file, offset, count)

    monkeypatch.setattr(socket.socket, "sendfile", spy)
    cat = FakeCatalog()
    cat.add(
        FakeEntry(
            "model",
            "nvidia",
            "bench",
            "disk",
            versions=[
                FakeVersion("1", files=[FakeFile("big.bin", disk_path=tmp_path / "big.bin")])
            ],
        )
    )
    with FakeNGC(cat) as fake:
        ((url, sha),) = dl_urls(fake, "nvidia/bench/disk", "1").values()
        assert sha == b64sha(data) and fetch(url).body == data
        assert fetch(url, {"Range": "bytes=1048576-2097151"}).body == data[1 << 20 : 2 << 20]
    assert calls == [3 << 20, 1 << 20]


def test_wrong_hash_override_and_live_changes(small: FakeNGC) -> None:
    entry = small.catalog.of_kind("model")[1]
    version = entry.versions[0]
    version.files[0].listed_sha256_b64 = b64sha(b"not the content")
    (url, sha), *_ = dl_urls(small, entry.resource_id, version.version_id).values()
    assert sha == b64sha(b"not the content") != b64sha(fetch(url).body)
    version.files[0].content = b"new bytes"
    assert fetch(url).body == b"new bytes"
    before = fetch(f"{small.url}/v2/models/{entry.resource_id}").json()["model"]
    small.catalog.add_version(entry, FakeVersion("3", files=[FakeFile("x", content=b"x")]))
    after = fetch(f"{small.url}/v2/models/{entry.resource_id}").json()["model"]
    assert after["latestVersionIdStr"] == "3" and after["updatedDate"] > before["updatedDate"]


# -- faults ---------------------------------------------------------------------------------


def test_fault_status_times_retry_after(small: FakeNGC) -> None:
    small.add_fault(Fault(r"/versions\?", status=429, times=2, retry_after="7"))
    url = f"{small.url}/v2/models/nvidia/{BERT}/versions?page-size=1000"
    replies = [fetch(url) for _ in range(3)]
    assert [r.status for r in replies] == [429, 429, 200]
    assert replies[0].headers["Retry-After"] == "7"
    assert replies[0].json()["requestStatus"]["statusCode"] == "TOO_MANY_REQUESTS"
    assert small.count(r"/versions\?page-size=1000$") == 3
    small.add_fault(Fault(r"/v2/products$", status=500, times=None))
    assert [fetch(f"{small.url}/v2/products").status for _ in range(3)] == [500] * 3
    small.clear_faults()
    assert fetch(f"{small.url}/v2/products").status == 200


def test_fault_malformed_body_and_delay(small: FakeNGC) -> None:
    small.add_fault(Fault(rf"/v2/models/nvidia/{BERT}$", body=b'{"model": ', delay=0.2))
    start = time.monotonic()
    reply = fetch(f"{small.url}/v2/models/nvidia/{BERT}")
    assert time.monotonic() - start >= 0.2
    assert reply.status == 200 and reply.body == b'{"model": '
    with pytest.raises(json.JSONDecodeError):
        reply.json()


def test_fault_truncate_corrupt_throttle(small: FakeNGC) -> None:
    url, sha = dl_urls(small, f"nvidia/{BERT}", "2")["checkpoints/model.ckpt"]
    good = fetch(url).body
    small.add_fault(Fault(r"^/_dl/.*model\.ckpt\?", truncate_at=100))
    with urllib.request.urlopen(url, timeout=10) as resp:
        assert int(resp.headers["Content-Length"]) == len(good)
        with pytest.raises(http.client.IncompleteRead) as info:
            resp.read()
    assert info.value.partial == good[:100]
    small.add_fault(Fault(r"^/_dl/", corrupt=True))
    bad = fetch(url).body
    assert len(bad) == len(good) and sum(a != b for a, b in zip(bad, good, strict=True)) == 1
    small.add_fault(Fault(r"^/_dl/", throttle_bps=8_000))
    start = time.monotonic()
    assert fetch(url).body == good
    assert time.monotonic() - start >= 0.8 * len(good) / 8_000  # ~0.25 s for ~2 KB
    assert b64sha(fetch(url).body) == sha  # faults used up


# -- auth -----------------------------------------------------------------------------------


def test_token_flow() -> None:
    key = "s3cret-key-123"
    with FakeNGC(seed_catalog(limit=2), api_key=key) as fake:
        basic = base64.b64encode(f"$oauthtoken:{key}".encode()).decode()
        token_url = f"{fake.url}/token?service=ngc&scope=group/ngc:nvidia"
        got = fetch(token_url, {"Authorization": f"Basic {basic}"})
        assert got.status == 200 and got.json()["expires_in"] == 3600
        token = got.json()["token"]
        keyed = f"{fake.url}/v2/org/nvidia/models/{BERT}"
        assert fetch(keyed, {"Authorization": f"Bearer {token}"}).status == 200
        assert fetch(keyed).status == 401
        assert fetch(keyed, {"Authorization": "Bearer forged"}).status == 401
        wrong = base64.b64encode(b"$oauthtoken:nope").decode()
        denied = fetch(token_url, {"Authorization": f"Basic {wrong}"})
        assert (
            denied.status == 401 and denied.json()["requestStatus"]["statusCode"] == "UNAUTHORIZED"
        )
        assert fetch(token_url).status == 401
        assert fetch(f"{fake.url}/v2/models/nvidia/{BERT}").status == 200  # guest stays open
        search = f"{fake.url}/v2/search/org/nvidia/resources/MODEL?q=%7B%7D"
        assert fetch(search).status == 401
        assert fetch(search, {"Authorization": f"Bearer {token}"}).status == 200
        assert fake.errors == []


# -- server ---------------------------------------------------------------------------------


def test_keep_alive_records_and_stop(small: FakeNGC) -> None:
    small.clear_requests()
    conn = http.client.HTTPConnection("127.0.0.1", small.port, timeout=5)
    conn.request("GET", "/v2/products?x=1", headers={"X-NGC-Guest-Token": "abc"})
    first = conn.getresponse()
    assert first.read() == b'{"products": []}'
    sock = conn.sock
    conn.request("GET", "/nowhere")
    second = conn.getresponse()
    assert second.status == 404 and second.read() and conn.sock is sock  # connection reused
    rec = small.requests[0]
    assert (rec.method, rec.path, rec.query) == ("GET", "/v2/products", {"x": ["1"]})
    assert rec.headers["x-ngc-guest-token"] == "abc"
    assert small.count(r"^/v2/products\?x=1$") == 1 and small.count("nowhere") == 1
    small.stop()
    with pytest.raises((ConnectionError, http.client.HTTPException, OSError)):
        conn.request("GET", "/v2/products")
        conn.getresponse()
    conn.close()


def test_loopback_only() -> None:
    cat = FakeCatalog()
    for host in ("0.0.0.0", "10.1.2.3", "192.168.0.1", "::", "example.com"):
        with pytest.raises(ValueError):
            FakeNGC(cat, host=host)
    with FakeNGC(cat, host="127.0.0.2") as fake:
        assert fetch(f"{fake.url}/v2/products").status == 200


@given(size=st.integers(0, 50), a=st.integers(0, 60), b=st.integers(0, 60))
def test_parse_range_properties(size: int, a: int, b: int) -> None:
    try:
        got = parse_range(f"bytes={a}-{b}", size)
    except RangeNotSatisfiable:
        assert a >= size and a <= b
        return
    if b < a:
        assert got is None
    else:
        assert got == (a, min(b + 1, size))
    assert parse_range("bytes=0--1", size) is None and parse_range(None, size) is None


def test_process_serves_and_stops(tmp_path: Path) -> None:
    ready = tmp_path / "url"
    env = {**os.environ, "PYTHONPATH": str(REPO), "FAKE_KEY": "k"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mirror.fakengc",
            "--seed",
            "--big-files",
            "2x1MiB",
            "--data-dir",
            str(tmp_path / "data"),
            "--api-key-env",
            "FAKE_KEY",
            "--ready-file",
            str(ready),
        ],
        stdout=subprocess.PIPE,
        env=env,
        cwd=tmp_path,
    )
    try:
        deadline = time.monotonic() + 60
        while not ready.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert ready.exists(), "the fake NGC server wrote no ready file within 60 s"
        url = ready.read_text().strip()
        assert proc.stdout is not None and proc.stdout.readline().decode().strip() == url
        assert fetch(f"{url}/v2/products").json() == {"products": []}
        keyed = f"{url}/v2/org/nvidia/team/bench/models/bigfiles"
        assert fetch(keyed).status == 401
        basic = base64.b64encode(b"$oauthtoken:k").decode()
        token = fetch(f"{url}/token?service=ngc", {"Authorization": f"Basic {basic}"}).json()
        assert fetch(keyed, {"Authorization": f"Bearer {token['token']}"}).status == 200
        listing = fetch(f"{url}/v2/models/org/nvidia/team/bench/bigfiles/1/files").json()
        assert listing["filepath"] == ["file_000.bin", "file_001.bin"]
        body = fetch(listing["urls"][1], {"Range": "bytes=0-1048575"}).body
        assert len(body) == 1 << 20 and b64sha(body) == listing["sha256_base64"][1]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        proc.kill()
        proc.wait()
