"""RegistryClient against Debian's real docker-registry 2.8 (no auth, htpasswd, token auth).

Images are synthetic OCI layouts pushed with skopeo; skopeo's own `inspect --raw` is the
reference for byte-exact manifests (oci.md §6).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from mirror.blobstore import BlobStore
from mirror.errors import HTTPStatusError, UpstreamError, UsageError
from mirror.paths import MirrorPaths
from mirror.sources.registry import (
    DOCKER_MANIFEST,
    OCI_INDEX,
    OCI_MANIFEST,
    Platform,
    image_blobs,
    platforms,
)
from tests.conftest import require_tool
from tests.registry_peer import (
    HTP_PASS,
    HTP_USER,
    NGC_KEY,
    NGC_USER,
    Layout,
    Registry,
    TokenServer,
    TokenSigner,
    build_layout,
    make_client,
    push_test_images,
    skopeo_copy,
    skopeo_raw,
)

PAGED_TAGS = ["v3", "a1", "v1", "b2", "v2"]


@dataclass
class Peer:
    registry: Registry
    home: Path
    creds: str | None = None
    tokens: TokenServer | None = None


@pytest.fixture(scope="module")
def layout(tmp_path_factory: pytest.TempPathFactory) -> Layout:
    require_tool("docker-registry")
    require_tool("skopeo")
    return build_layout(tmp_path_factory.mktemp("layout"))


@pytest.fixture(scope="module")
def plain(layout: Layout, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Peer]:
    work = tmp_path_factory.mktemp("plain")
    with Registry(work / "reg") as reg:
        push_test_images(layout.root, reg, work / "home", None)
        for tag in PAGED_TAGS:
            skopeo_copy(layout.root, "single", reg.host, "test/paged", tag, home=work / "home")
        yield Peer(reg, work / "home")


@pytest.fixture(scope="module")
def htp(layout: Layout, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Peer]:
    require_tool("htpasswd")
    work = tmp_path_factory.mktemp("htp")
    creds = f"{HTP_USER}:{HTP_PASS}"
    with Registry(work / "reg", auth="htpasswd") as reg:
        push_test_images(layout.root, reg, work / "home", creds)
        yield Peer(reg, work / "home", creds)


@pytest.fixture(scope="module")
def tok(layout: Layout, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Peer]:
    work = tmp_path_factory.mktemp("tok")
    signer = TokenSigner(work)
    creds = f"{NGC_USER}:{NGC_KEY}"
    with (
        TokenServer(signer) as tokens,
        Registry(
            work / "reg", auth="token", token_realm=tokens.realm, cert=signer.cert_path
        ) as reg,
    ):
        push_test_images(layout.root, reg, work / "home", creds)
        tokens.requests.clear()
        yield Peer(reg, work / "home", creds, tokens)


def _store(tmp_path: Path) -> BlobStore:
    store = BlobStore(MirrorPaths(tmp_path / "mirror"))
    store.init_layout()
    return store


# -- auth ------------------------------------------------------------------------------------
def test_registry_without_auth_answers_the_probe_and_tags(plain: Peer) -> None:
    client = make_client(plain.registry.url)
    client.probe()
    assert client.tags("test/multi") == ["1.0"]
    assert client.auth.tokens_fetched == 0


def test_htpasswd_registry_is_read_with_basic_credentials(htp: Peer) -> None:
    client = make_client(htp.registry.url, username=HTP_USER, password=HTP_PASS)
    client.probe()
    assert client.manifest("test/single", "v1").media_type == OCI_MANIFEST


def test_htpasswd_wrong_password_is_a_401_that_never_shows_the_password(htp: Peer) -> None:
    client = make_client(htp.registry.url, username=HTP_USER, password="wrong-secret")
    with pytest.raises(HTTPStatusError) as info:
        client.manifest("test/single", "v1")
    assert info.value.status == 401 and info.value.exit_code == 3
    assert "wrong-secret" not in str(info.value) and info.value.hint


def test_htpasswd_registry_refuses_anonymous_reads(htp: Peer) -> None:
    with pytest.raises(HTTPStatusError) as info:
        make_client(htp.registry.url).probe()
    assert info.value.status == 401


def test_token_registry_with_an_ngc_style_key(tok: Peer, tmp_path: Path) -> None:
    assert tok.tokens is not None
    tok.tokens.requests.clear()
    client = make_client(tok.registry.url, username=NGC_USER, password=NGC_KEY)
    client.probe()
    index = client.manifest("test/multi", "1.0")
    child = platforms(index.data)[0]
    blobs = image_blobs(client.manifest("test/multi", child.digest).data)
    for blob in blobs.all:
        client.fetch_blob("test/multi", blob.digest, blob.size, _store(tmp_path))
    seen = tok.tokens.requests
    assert {r.user for r in seen} == {NGC_USER} and {r.account for r in seen} == {NGC_USER}
    # one token for the probe, one for the repository: cached across manifests and blobs
    assert [r.scopes for r in seen] == [[], ["repository:test/multi:pull"]]
    assert all(r.service == "test-registry" for r in seen)


def test_token_registry_allows_anonymous_pull(tok: Peer, tmp_path: Path) -> None:
    assert tok.tokens is not None
    tok.tokens.requests.clear()
    client = make_client(tok.registry.url)
    manifest = client.manifest("test/single", "v1")
    config = image_blobs(manifest.data).config
    store = _store(tmp_path)
    assert client.fetch_blob("test/single", config.digest, config.size, store) == config.digest
    assert [r.user for r in tok.tokens.requests] == [None]


def test_token_service_refusing_the_key_is_a_clear_error(tok: Peer) -> None:
    client = make_client(tok.registry.url, username=NGC_USER, password="nvapi-WRONG")
    with pytest.raises(UpstreamError, match="refused user '\\$oauthtoken'") as info:
        client.manifest("test/single", "v1")
    assert "nvapi-WRONG" not in str(info.value) and "NGC_API_KEY" in (info.value.hint or "")


# -- manifests -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("repo", "tag", "media_type"),
    [
        ("test/multi", "1.0", OCI_INDEX),
        ("test/single", "v1", OCI_MANIFEST),
        ("test/docker", "v1", DOCKER_MANIFEST),
    ],
)
def test_manifest_by_tag_and_by_digest_is_byte_exact(
    tok: Peer, repo: str, tag: str, media_type: str
) -> None:
    client = make_client(tok.registry.url, username=NGC_USER, password=NGC_KEY)
    by_tag = client.manifest(repo, tag)
    reference = skopeo_raw(tok.registry.host, repo, tag, home=tok.home, creds=tok.creds)
    assert by_tag.data == reference and by_tag.media_type == media_type
    by_digest = client.manifest(repo, by_tag.digest)
    assert by_digest == by_tag


def test_oci_layout_bytes_survive_the_round_trip(plain: Peer, layout: Layout) -> None:
    client = make_client(plain.registry.url)
    for tag, repo, ref in (("multi", "test/multi", "1.0"), ("single", "test/single", "v1")):
        manifest = client.manifest(repo, ref)
        assert manifest.digest == layout.tags[tag]["digest"]
        assert manifest.data == layout.blobs[manifest.digest]


def test_unknown_tag_is_a_404(plain: Peer) -> None:
    with pytest.raises(HTTPStatusError) as info:
        make_client(plain.registry.url).manifest("test/multi", "nope")
    assert info.value.status == 404


def test_bad_names_are_refused_before_any_request(plain: Peer) -> None:
    client = make_client(plain.registry.url)
    for repo, ref in (("Test/Upper", "v1"), ("test/../x", "v1"), ("test/multi", "sha256:abc")):
        with pytest.raises(UsageError):
            client.manifest(repo, ref)
    with pytest.raises(UsageError):
        client.tags("a//b")
    assert client.http.requests_made == 0


# -- index walking and blobs ------------------------------------------------------------------
def test_index_walk_stores_every_platform_blob_verified(
    htp: Peer, layout: Layout, tmp_path: Path
) -> None:
    client = make_client(htp.registry.url, username=HTP_USER, password=HTP_PASS)
    store = _store(tmp_path)
    index = client.manifest("test/multi", "1.0")
    assert index.is_index
    children = platforms(index.data)
    assert [c.platform for c in children] == [
        Platform("linux", "amd64"),
        Platform("linux", "arm64"),
    ]
    wanted: set[str] = set()
    for child in children:
        manifest = client.manifest("test/multi", child.digest)
        assert manifest.media_type == OCI_MANIFEST and not manifest.is_index
        for blob in image_blobs(manifest.data).all:
            wanted.add(blob.digest)
            assert client.fetch_blob("test/multi", blob.digest, blob.size, store) == blob.digest
    assert len(wanted) == 6  # 2 configs + shared base + amd64 + small + arm64
    assert set(store.iter_digests()) == wanted
    assert all(store.verify(d) for d in wanted)
    assert all(store.paths.blob(d).read_bytes() == layout.blobs[d] for d in wanted)
    assert list(store.paths.tmp.iterdir()) == []


def test_docker_schema2_manifest_lists_docker_layer_types(plain: Peer) -> None:
    manifest = make_client(plain.registry.url).manifest("test/docker", "v1")
    blobs = image_blobs(manifest.data)
    assert blobs.config.media_type == "application/vnd.docker.container.image.v1+json"
    assert {layer.media_type for layer in blobs.layers} == {
        "application/vnd.docker.image.rootfs.diff.tar.gzip"
    }


def test_blob_already_in_the_store_is_not_fetched_again(plain: Peer, tmp_path: Path) -> None:
    client = make_client(plain.registry.url)
    config = image_blobs(client.manifest("test/single", "v1").data).config
    store = _store(tmp_path)
    client.fetch_blob("test/single", config.digest, config.size, store)
    before = client.http.requests_made
    client.fetch_blob("test/single", config.digest, config.size, store)
    assert client.http.requests_made == before


# -- tags ------------------------------------------------------------------------------------
def test_tags_from_distribution_2_8_which_ignores_n_and_last(plain: Peer) -> None:
    # 2.8 returns every tag unsorted and no Link (oci.md §1.5); paging must not loop on it.
    client = make_client(plain.registry.url)
    assert sorted(client.tags("test/paged")) == sorted(PAGED_TAGS)
    assert sorted(client.tags("test/paged", page_size=2)) == sorted(PAGED_TAGS)


def test_tags_of_an_unknown_repository_is_a_404(plain: Peer) -> None:
    with pytest.raises(HTTPStatusError) as info:
        make_client(plain.registry.url).tags("test/missing")
    assert info.value.status == 404
