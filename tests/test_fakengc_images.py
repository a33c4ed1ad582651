"""Tests of the container-image (repository) support of the fake NGC server, with urllib."""

from __future__ import annotations

import base64
import json
import re
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from mirror.fakengc import FakeCatalog, FakeEntry, FakeNGC, FakeVersion, seed_catalog
from mirror.fakengc.seed import read_image_listing

DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")


def fetch(url: str, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def search_url(fake: FakeNGC, query: str, page: int, size: int = 100) -> str:
    q = {"page": page, "pageSize": size, "query": query, "filters": []}
    return f"{fake.url}/v2/search/catalog/resources/CONTAINER?" + urllib.parse.urlencode(
        {"q": json.dumps(q, sort_keys=True)}
    )


def image_catalog() -> FakeCatalog:
    return seed_catalog(limit=2, include_resources=False, include_images=True)


def many_tags(count: int) -> FakeEntry:
    tags = [
        FakeVersion(
            version_id=f"1.{k}",
            created=f"2020-01-{k + 1:02d}T00:00:00.000Z",
            updated=f"2020-01-{k + 1:02d}T00:00:00.000Z",
            image_size=1000 + k,
            architectures=["amd64", "arm64"],
        )
        for k in range(count)
    ]
    tags.reverse()
    return FakeEntry("image", "acme", "lab", "many", versions=tags, updated=tags[0].updated)


def test_seed_images_default_off_and_deterministic() -> None:
    assert seed_catalog().of_kind("image") == []
    assert len(seed_catalog().entries) == len(seed_catalog(include_images=False).entries)
    cat = image_catalog()
    images = cat.of_kind("image")
    listing = read_image_listing()
    assert len(images) == len(listing)
    names = [e.name for e in images]
    assert len(set(names)) == len(names)
    assert {"pytorch", "tensorrt-inference-server", "deepstream", "deepstream-2"} <= set(names)
    for entry in images:
        assert entry.org == "nvidia" and entry.team is None
        assert 1 <= len(entry.versions) <= 3
        for tag in entry.versions:
            assert tag.files == [] and tag.digest is not None and DIGEST.match(tag.digest)
            assert tag.image_size is not None and tag.image_size > 0
    assert images == image_catalog().of_kind("image")
    pytorch = cat.get("image", "nvidia", None, "pytorch")
    assert pytorch is not None and pytorch.versions[0].version_id == "19.10-py3"


def test_search_container_lists_every_image_once() -> None:
    with FakeNGC(image_catalog(), search_page_size=7) as fake:
        seen: list[str] = []
        page, pages = 0, 1
        while page < pages:
            status, doc = fetch(search_url(fake, "resourceId:nvidia/*", page))
            assert status == 200
            pages = doc["resultPageTotal"]
            for group in doc["results"]:
                assert group["groupValue"] == "CONTAINER"
                seen += [r["resourceId"] for r in group["resources"]]
                for res in group["resources"]:
                    assert res["resourceType"] == "CONTAINER"
                    assert res["orgName"] == "nvidia" and res["teamName"] is None
                    assert res["isPublic"] is True and res["guestAccess"] is True
                    assert res["labels"][0]["key"] == "general"
                    attrs = {a["key"]: a["value"] for a in res["attributes"]}
                    assert set(attrs) == {"latestTag", "size"}
                    assert isinstance(attrs["size"], str) and int(attrs["size"]) > 0
            page += 1
        expected = [e.resource_id for e in image_catalog().of_kind("image")]
        assert sorted(seen) == sorted(expected) and len(seen) == len(set(seen))
        assert pages == -(-len(expected) // 7)
        # Models are not containers, and containers are not models.
        model_doc = fetch(search_url(fake, "*", 0).replace("CONTAINER", "MODEL"))[1]
        assert model_doc["resultTotal"] == 2


def test_repository_info_guest_and_404() -> None:
    with FakeNGC(image_catalog()) as fake:
        status, doc = fetch(f"{fake.url}/v2/repos/nvidia/pytorch?resolve-labels=false")
        assert status == 200
        assert doc["name"] == "pytorch" and doc["namespace"] == "nvidia"
        assert doc["displayName"] == "PyTorch"
        assert isinstance(doc["description"], str) and isinstance(doc["shortDescription"], str)
        assert doc["latestTag"] == "19.10-py3" and doc["tags"][0] == "19.10-py3"
        assert isinstance(doc["tags"], list) and all(isinstance(t, str) for t in doc["tags"])
        assert isinstance(doc["latestImageSize"], int) and doc["latestImageSize"] > 0
        assert isinstance(doc["labels"], list) and doc["updatedDate"].endswith("Z")
        assert doc["isPublic"] is True and doc["canGuestPull"] is True
        variant = doc["latestArchitectureVariants"][0]
        assert variant["os"] == "linux" and DIGEST.match(variant["digest"])
        status, err = fetch(f"{fake.url}/v2/repos/nvidia/nope")
        assert status == 404
        assert err["requestStatus"]["statusCode"] == "NOT_FOUND"
        assert fetch(f"{fake.url}/v2/repos/nvidia/nope/images")[0] == 404
        assert fetch(f"{fake.url}/v2/repos/nvidia/pytorch/bogus")[0] == 404


def test_tag_list_pagination_style_b() -> None:
    cat = FakeCatalog()
    cat.add(many_tags(5))
    with FakeNGC(cat, url_page_size=2) as fake:
        base = f"{fake.url}/v2/repos/acme/lab/many/images"
        status, first = fetch(base)
        assert status == 200
        assert first["paginationInfo"] == {
            "index": 0,
            "size": 2,
            "totalPages": 3,
            "totalResults": 5,
        }
        tags = [i["tag"] for i in first["images"]]
        for n in (1, 2):
            status, doc = fetch(f"{base}?page-number={n}")
            assert status == 200 and doc["paginationInfo"]["index"] == n
            tags += [i["tag"] for i in doc["images"]]
        assert tags == ["1.4", "1.3", "1.2", "1.1", "1.0"]  # newest first
        image = first["images"][0]
        assert image["size"] == 1004 and DIGEST.match(image["digest"])
        assert image["updatedDate"] == "2020-01-05T00:00:00.000Z"
        arches = image["architectureVariants"]
        assert [a["architecture"] for a in arches] == ["amd64", "arm64"]
        assert arches[0]["digest"] == image["digest"] != arches[1]["digest"]
        assert all(a["os"] == "linux" and isinstance(a["compressedSize"], int) for a in arches)
        status, empty = fetch(f"{base}?page-number=9")
        assert status == 200 and empty["images"] == []
        assert empty["paginationInfo"]["totalResults"] == 5
        assert fetch(f"{base}?page-number=-1")[0] == 400


def test_key_mode_repos_with_token() -> None:
    key = "secret-key"
    with FakeNGC(image_catalog(), api_key=key) as fake:
        basic = base64.b64encode(f"$oauthtoken:{key}".encode()).decode()
        token = fetch(f"{fake.url}/token?service=ngc", {"Authorization": f"Basic {basic}"})[1]
        auth = {"Authorization": f"Bearer {token['token']}"}
        repo = f"{fake.url}/v2/org/nvidia/repos/tensorrt-inference-server"
        assert fetch(repo)[0] == 401
        status, doc = fetch(repo, auth)
        assert status == 200 and doc["name"] == "tensorrt-inference-server"
        status, tags = fetch(f"{repo}/images", auth)
        assert status == 200
        assert [i["tag"] for i in tags["images"]] == doc["tags"]
        assert fetch(f"{fake.url}/v2/org/nvidia/repos/nope", auth)[0] == 404
        # Guest paths stay open.
        assert fetch(f"{fake.url}/v2/repos/nvidia/pytorch/images")[0] == 200


def test_team_repository_paths() -> None:
    cat = FakeCatalog()
    cat.add(many_tags(1))
    with FakeNGC(cat, api_key="k") as fake:
        assert fetch(f"{fake.url}/v2/repos/acme/lab/many")[1]["namespace"] == "acme/lab"
        basic = base64.b64encode(b"$oauthtoken:k").decode()
        token = fetch(f"{fake.url}/token", {"Authorization": f"Basic {basic}"})[1]["token"]
        keyed = f"{fake.url}/v2/org/acme/team/lab/repos/many/images"
        status, doc = fetch(keyed, {"Authorization": f"Bearer {token}"})
        assert status == 200 and [i["tag"] for i in doc["images"]] == ["1.0"]
