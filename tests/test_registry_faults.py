"""RegistryClient through a fault-injecting proxy in front of a real docker-registry 2.8.

Each test gets a fresh FaultProxy; the registries and pushed images are shared per module.
Backoff sleeps are recorded, not slept, so Retry-After shows up as a recorded wait.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from mirror.blobstore import BlobStore
from mirror.errors import HTTPStatusError, IntegrityError, ProtocolError
from mirror.paths import MirrorPaths
from mirror.sources.registry import Descriptor, image_blobs, platforms
from tests.conftest import require_tool
from tests.registry_peer import (
    HTP_PASS,
    HTP_USER,
    NGC_KEY,
    NGC_USER,
    FaultProxy,
    Layout,
    Registry,
    SideServer,
    TokenServer,
    TokenSigner,
    build_layout,
    make_client,
    push_test_images,
    skopeo_copy,
)

PAGED_TAGS = ["v3", "a1", "v1", "b2", "v2"]


@dataclass
class Peers:
    layout: Layout
    plain: Registry
    htp: Registry
    tok: Registry
    tokens: TokenServer
    signer: TokenSigner


@pytest.fixture(scope="module")
def peers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Peers]:
    require_tool("docker-registry")
    require_tool("skopeo")
    require_tool("htpasswd")
    work = tmp_path_factory.mktemp("faults")
    home = work / "home"
    layout = build_layout(work / "layout")
    signer = TokenSigner(work)
    with (
        TokenServer(signer) as tokens,
        Registry(work / "plain") as plain,
        Registry(work / "htp", auth="htpasswd") as htp,
        Registry(
            work / "tok", auth="token", token_realm=tokens.realm, cert=signer.cert_path
        ) as tok,
    ):
        push_test_images(layout.root, plain, home, None)
        push_test_images(layout.root, htp, home, f"{HTP_USER}:{HTP_PASS}")
        push_test_images(layout.root, tok, home, f"{NGC_USER}:{NGC_KEY}")
        for tag in PAGED_TAGS:
            skopeo_copy(layout.root, "single", plain.host, "test/paged", tag, home=home)
        yield Peers(layout, plain, htp, tok, tokens, signer)


@pytest.fixture
def store(tmp_path: Path) -> BlobStore:
    s = BlobStore(MirrorPaths(tmp_path / "mirror"))
    s.init_layout()
    return s


def _proxy(registry: Registry) -> FaultProxy:
    return FaultProxy(registry.url)


def _big_layer(client: object, repo: str = "test/single", tag: str = "v1") -> Descriptor:
    manifest = client.manifest(repo, tag)  # type: ignore[attr-defined]
    return max(image_blobs(manifest.data).layers, key=lambda d: d.size)


def _nothing_stored(store: BlobStore, digest: str) -> bool:
    return not store.has(digest) and not any(
        p.name.endswith(".verified") for p in store.paths.tmp.iterdir()
    )


# -- bodies ----------------------------------------------------------------------------------
def test_corrupted_blob_is_an_integrity_error_and_nothing_is_stored(
    peers: Peers, store: BlobStore
) -> None:
    with _proxy(peers.plain) as proxy:
        client = make_client(proxy.url)
        layer = _big_layer(client)
        proxy.plan("blob", "corrupt")
        with pytest.raises(IntegrityError, match="digest mismatch") as info:
            client.fetch_blob("test/single", layer.digest, layer.size, store)
    assert info.value.exit_code == 4 and info.value.expected == layer.digest
    assert _nothing_stored(store, layer.digest)
    assert list(store.paths.tmp.iterdir()) == []  # the bad bytes are not kept for resume


def test_truncated_body_resumes_with_range(peers: Peers, store: BlobStore) -> None:
    with _proxy(peers.plain) as proxy:
        client = make_client(proxy.url)
        layer = _big_layer(client)
        proxy.plan("blob", "truncate")
        client.fetch_blob("test/single", layer.digest, layer.size, store)
        ranges = [s.headers.get("range") for s in proxy.requests_for("blob")]
    assert ranges == [None, f"bytes={layer.size // 3}-"]
    assert store.verify(layer.digest)
    assert store.paths.blob(layer.digest).read_bytes() == peers.layout.blobs[layer.digest]


def test_429_with_retry_after_is_waited_out_and_retried(peers: Peers) -> None:
    sleeps: list[float] = []
    with _proxy(peers.plain) as proxy:
        proxy.retry_after = "1"
        proxy.plan("manifest", "429", "429")
        manifest = make_client(proxy.url, sleeps=sleeps).manifest("test/multi", "1.0")
    assert manifest.digest == peers.layout.tags["multi"]["digest"]
    assert sleeps == [1.0, 1.0] and len(proxy.requests_for("manifest")) == 3


def test_5xx_in_the_middle_of_a_blob_is_retried_and_resumed(peers: Peers, store: BlobStore) -> None:
    sleeps: list[float] = []
    with _proxy(peers.plain) as proxy:
        client = make_client(proxy.url, sleeps=sleeps)
        layer = _big_layer(client)
        proxy.plan("blob", "truncate", "503", "502")
        client.fetch_blob("test/single", layer.digest, layer.size, store)
        ranges = [s.headers.get("range") for s in proxy.requests_for("blob")]
    resume = f"bytes={layer.size // 3}-"
    assert ranges == [None, resume, resume, resume]
    assert store.verify(layer.digest) and len(sleeps) == 3


def test_5xx_beyond_the_retry_budget_fails_and_publishes_nothing(
    peers: Peers, store: BlobStore
) -> None:
    with _proxy(peers.plain) as proxy:
        client = make_client(proxy.url, sleeps=[], retries=2)
        layer = _big_layer(client)
        proxy.plan("blob", "500", "500", "500")
        with pytest.raises(HTTPStatusError) as info:
            client.fetch_blob("test/single", layer.digest, layer.size, store)
    assert info.value.status == 500 and info.value.attempts == 3
    assert _nothing_stored(store, layer.digest)


# -- tokens ----------------------------------------------------------------------------------
def _pull_everything(client: object, repo: str, tag: str, store: BlobStore) -> int:
    index = client.manifest(repo, tag)  # type: ignore[attr-defined]
    count = 0
    for child in platforms(index.data):
        manifest = client.manifest(repo, child.digest)  # type: ignore[attr-defined]
        for blob in image_blobs(manifest.data).all:
            client.fetch_blob(repo, blob.digest, blob.size, store)  # type: ignore[attr-defined]
            count += 1
    return count


def test_token_expiring_mid_sync_is_renewed_from_the_current_challenge(
    peers: Peers, store: BlobStore
) -> None:
    peers.tokens.requests.clear()
    with _proxy(peers.tok) as proxy:
        proxy.expire_after = 2
        client = make_client(proxy.url, username=NGC_USER, password=NGC_KEY)
        _pull_everything(client, "test/multi", "1.0", store)
    assert len(list(store.iter_digests())) == 6
    renewals = [r for r in peers.tokens.requests if r.scopes == ["repository:test/multi:pull"]]
    assert len(renewals) >= 4 and all(r.user == NGC_USER for r in renewals)


def test_token_expiring_between_a_broken_body_and_its_resume(
    peers: Peers, store: BlobStore
) -> None:
    with _proxy(peers.tok) as proxy:
        proxy.expire_after = 1  # every token is good for exactly one request
        client = make_client(proxy.url, username=NGC_USER, password=NGC_KEY)
        layer = _big_layer(client)
        proxy.plan("blob", "truncate")
        client.fetch_blob("test/single", layer.digest, layer.size, store)
        blob_requests = proxy.requests_for("blob")
    assert store.verify(layer.digest)
    # no token, then a live token (truncated), then the dead one, then a fresh one (206)
    assert [s.headers.get("range") for s in blob_requests][-2:] == [f"bytes={layer.size // 3}-"] * 2


def test_realm_moving_after_expiry_is_followed(peers: Peers, store: BlobStore) -> None:
    # nvcr.io re-challenges with another realm once a token expires (oci.md §2.3, #1945)
    with TokenServer(peers.signer) as second, _proxy(peers.tok) as proxy:
        proxy.expire_after = 1
        proxy.realm_after_expiry = second.realm
        client = make_client(proxy.url, username=NGC_USER, password=NGC_KEY)
        config = image_blobs(client.manifest("test/single", "v1").data).config
        client.fetch_blob("test/single", config.digest, config.size, store)
        assert [r.user for r in second.requests] == [NGC_USER]
    assert store.verify(config.digest)


def test_challenge_without_service_like_nvcr_io(peers: Peers) -> None:
    peers.tokens.requests.clear()
    with _proxy(peers.tok) as proxy:
        proxy.strip_service = True
        client = make_client(proxy.url, username=NGC_USER, password=NGC_KEY)
        client.probe()
        client.manifest("test/single", "v1")
    assert [(r.service, r.scopes) for r in peers.tokens.requests] == [
        (None, []),
        (None, ["repository:test/single:pull"]),
    ]


# -- redirects -------------------------------------------------------------------------------
@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2"], ids=["other-port", "other-host"])
@pytest.mark.parametrize("auth", ["token", "basic"])
def test_blob_redirect_is_followed_without_credentials(
    peers: Peers, store: BlobStore, host: str, auth: str
) -> None:
    registry, user, password = (
        (peers.tok, NGC_USER, NGC_KEY) if auth == "token" else (peers.htp, HTP_USER, HTP_PASS)
    )
    with SideServer(host) as side, _proxy(registry) as proxy:
        client = make_client(proxy.url, username=user, password=password)
        layer = _big_layer(client)
        proxy.redirect_to = side
        client.fetch_blob("test/single", layer.digest, layer.size, store)
    assert store.verify(layer.digest)
    assert [s.headers.get("authorization") for s in side.seen] == [None]
    assert proxy.requests_for("blob")[-1].headers.get("authorization")  # the registry got it


def test_redirect_resumes_with_range_at_the_storage_host(peers: Peers, store: BlobStore) -> None:
    with SideServer() as side, _proxy(peers.tok) as proxy:
        client = make_client(proxy.url, username=NGC_USER, password=NGC_KEY)
        layer = _big_layer(client)
        proxy.redirect_to = side
        side.truncate_next = 1
        client.fetch_blob("test/single", layer.digest, layer.size, store)
    assert store.verify(layer.digest)
    assert [s.headers.get("range") for s in side.seen] == [None, f"bytes={layer.size // 2}-"]
    assert all("authorization" not in s.headers for s in side.seen)


def test_challenge_from_a_redirect_target_gets_no_credentials(
    peers: Peers, store: BlobStore
) -> None:
    with (
        TokenServer(peers.signer) as evil,
        SideServer("127.0.0.2") as side,
        _proxy(peers.tok) as proxy,
    ):
        side.challenge = f'Bearer realm="{evil.realm}",service="evil"'
        client = make_client(proxy.url, username=NGC_USER, password=NGC_KEY)
        layer = _big_layer(client)
        proxy.redirect_to = side
        with pytest.raises(HTTPStatusError) as info:
            client.fetch_blob("test/single", layer.digest, layer.size, store)
        assert evil.requests == []
    assert info.value.status == 401
    assert all("authorization" not in s.headers for s in side.seen)


# -- manifests -------------------------------------------------------------------------------
def test_schema1_manifest_is_refused_clearly(peers: Peers) -> None:
    with _proxy(peers.plain) as proxy:
        proxy.schema1_tags = {"legacy"}
        with pytest.raises(ProtocolError, match="test/single:legacy is a Docker schema1") as info:
            make_client(proxy.url).manifest("test/single", "legacy")
    assert "schema2" in (info.value.hint or "")


def test_manifest_not_matching_docker_content_digest_is_refused(peers: Peers) -> None:
    with _proxy(peers.plain) as proxy:
        proxy.digest_header = "sha256:" + "0" * 64
        with pytest.raises(IntegrityError, match="Docker-Content-Digest"):
            make_client(proxy.url).manifest("test/single", "v1")


def test_malformed_docker_content_digest_is_a_protocol_error(peers: Peers) -> None:
    with _proxy(peers.plain) as proxy:
        proxy.digest_header = "sha256:../../etc/passwd"
        with pytest.raises(ProtocolError, match="Docker-Content-Digest"):
            make_client(proxy.url).manifest("test/single", "v1")


def test_corrupted_manifest_by_digest_is_an_integrity_error(peers: Peers) -> None:
    digest = peers.layout.tags["single"]["digest"]
    with _proxy(peers.plain) as proxy:
        proxy.plan("manifest", "corrupt")
        with pytest.raises((IntegrityError, ProtocolError)):
            make_client(proxy.url).manifest("test/single", digest)


def test_manifest_served_under_another_media_type_is_refused(peers: Peers) -> None:
    with _proxy(peers.plain) as proxy:
        proxy.content_type = "application/vnd.docker.distribution.manifest.v2+json"
        with pytest.raises(ProtocolError, match="says mediaType"):
            make_client(proxy.url).manifest("test/single", "v1")


# -- tag pages -------------------------------------------------------------------------------
def test_tags_follow_link_pages(peers: Peers) -> None:
    with _proxy(peers.plain) as proxy:
        proxy.tags_page_size = 2
        tags = make_client(proxy.url).tags("test/paged")
        queries = [s.path.partition("?")[2] for s in proxy.requests_for("tags")]
    assert tags == sorted(PAGED_TAGS)
    assert queries == ["", "n=2&last=b2", "n=2&last=v2"]


def test_tags_page_with_n_and_last_when_there_is_no_link(peers: Peers) -> None:
    with _proxy(peers.plain) as proxy:
        proxy.tags_page_size = 2
        proxy.tags_link = False
        tags = make_client(proxy.url).tags("test/paged", page_size=2)
        queries = [s.path.partition("?")[2] for s in proxy.requests_for("tags")]
    assert tags == sorted(PAGED_TAGS)
    assert queries == ["n=2", "n=2&last=b2", "n=2&last=v2"]  # [v3] is short: done


def test_tags_link_to_another_origin_is_not_followed(peers: Peers) -> None:
    with SideServer("127.0.0.2") as side, _proxy(peers.plain) as proxy:
        proxy.tags_page_size = 2
        proxy.tags_link_base = side.url
        with pytest.raises(ProtocolError, match="another origin"):
            make_client(proxy.url).tags("test/paged")
    assert side.seen == []
