"""Registry auth and parsing at the transport seam (httpx.MockTransport, no sockets).

The real-peer tests cover the happy paths against distribution; these pin the edge cases
from oci.md §5.9 that a real registry will not produce on demand.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from mirror.config import HttpSettings, Secret
from mirror.errors import ProtocolError, UpstreamError
from mirror.http import HttpClient
from mirror.sources.registry import (
    OCI_MANIFEST,
    RegistryClient,
    image_blobs,
    next_link,
    platforms,
)
from mirror.sources.registry_auth import RegistryAuth, parse_challenges

Handler = Callable[[httpx.Request], httpx.Response]


def http(handler: Handler) -> HttpClient:
    return HttpClient(
        HttpSettings(retries=2, backoff=0.01, max_backoff=0.05),
        transport=httpx.MockTransport(handler),
        sleep=lambda _: None,
    )


def auth(handler: Handler, url: str = "https://reg.example", **kw: object) -> RegistryAuth:
    return RegistryAuth(url, http(handler), **kw)  # type: ignore[arg-type]


# -- challenges ------------------------------------------------------------------------------
def test_nvcr_challenge_without_service() -> None:
    [c] = parse_challenges(
        ['Bearer realm="https://nvcr.io/proxy_auth",scope="repository:a/b:pull"']
    )
    assert (c.scheme, c.realm, c.service, c.scopes) == (
        "bearer",
        "https://nvcr.io/proxy_auth",
        None,
        ["repository:a/b:pull"],
    )


def test_challenge_with_several_scopes_error_and_extra_params() -> None:
    [c] = parse_challenges(
        [
            'Bearer realm="https://a/token", service="svc", error="invalid_token", '
            'scope="repository:x:pull repository:y:push,pull", foo=bar'
        ]
    )
    assert c.scopes == ["repository:x:pull", "repository:y:push,pull"]
    assert c.error == "invalid_token" and c.params["foo"] == "bar"


def test_two_challenges_in_one_header_and_escaped_quotes() -> None:
    found = parse_challenges(['Basic realm="say \\"hi\\"", Bearer realm="https://t/x",service=s'])
    assert [(c.scheme, c.realm) for c in found] == [
        ("basic", 'say "hi"'),
        ("bearer", "https://t/x"),
    ]
    assert found[1].service == "s"


def test_token68_is_skipped() -> None:
    found = parse_challenges(["Negotiate abc123==", "BASIC REALM=x"])
    assert [c.scheme for c in found] == ["negotiate", "basic"]
    assert found[1].realm == "x"


@given(st.text(max_size=200))
def test_challenge_parser_never_crashes(text: str) -> None:
    for c in parse_challenges([text]):
        assert c.scheme == c.scheme.lower()


# -- tokens ----------------------------------------------------------------------------------
def _registry(token_body: bytes | None, seen: list[httpx.Request]) -> Handler:
    """A registry at reg.example whose token service lives at auth.example."""

    def handler(req: httpx.Request) -> httpx.Response:
        seen.append(req)
        if req.url.host == "auth.example":
            return httpx.Response(200, content=token_body or b"")
        if req.headers.get("authorization", "").startswith("Bearer "):
            return httpx.Response(200, json={})
        return httpx.Response(
            401,
            headers={"WWW-Authenticate": 'Bearer realm="https://auth.example/t",service="reg"'},
        )

    return handler


@pytest.mark.parametrize(
    ("body", "lifetime"),
    [
        ({"access_token": "A"}, 60),  # only access_token, no expires_in: the 60 s default
        ({"token": "T", "expires_in": 5}, 60),  # too short: raised to 60
        ({"token": "T", "expires_in": 600, "issued_at": "1999-01-01T00:00:00Z"}, 600),
    ],
)
def test_token_response_variants(body: dict[str, object], lifetime: int) -> None:
    seen: list[httpx.Request] = []
    now = [1000.0]
    a = RegistryAuth(
        "https://reg.example",
        http(_registry(json.dumps(body).encode(), seen)),
        clock=lambda: now[0],
    )
    assert a.answer("s", "https://reg.example/v2/", ['Bearer realm="https://auth.example/t"'])
    value = str(body.get("token") or body.get("access_token"))
    assert a.headers("s") == {"Authorization": f"Bearer {value}"}
    now[0] += lifetime  # issued_at from a skewed server clock is ignored
    assert a.headers("s") == {}


@pytest.mark.parametrize("body", [b"not json", b"[]", b'{"token": ""}', b"{}"])
def test_unusable_token_responses_are_protocol_errors(body: bytes) -> None:
    a = auth(_registry(body, []))
    with pytest.raises(ProtocolError):
        a.answer("", "https://reg.example/v2/", ['Bearer realm="https://auth.example/t"'])


def test_huge_token_response_is_bounded() -> None:
    a = auth(_registry(b"{" + b" " * (2 << 20) + b"}", []))
    with pytest.raises(ProtocolError, match="limit"):
        a.answer("", "https://reg.example/v2/", ['Bearer realm="https://auth.example/t"'])


def test_credentials_go_to_the_realm_as_basic_and_never_to_http_realms() -> None:
    seen: list[httpx.Request] = []
    token = json.dumps({"token": "T"}).encode()
    a = auth(_registry(token, seen), username="$oauthtoken", password=Secret("nvapi-K"))
    assert a.answer("s", "https://reg.example/x", ['Bearer realm="https://auth.example/t"'])
    basic = base64.b64encode(b"$oauthtoken:nvapi-K").decode()
    assert seen[-1].headers["authorization"] == f"Basic {basic}"
    assert seen[-1].url.params["account"] == "$oauthtoken"
    with pytest.raises(ProtocolError, match="plain http"):
        a.answer("s", "https://reg.example/x", ['Bearer realm="http://auth.example/t"'])
    with pytest.raises(ProtocolError, match="userinfo"):
        a.answer("s", "https://reg.example/x", ['Bearer realm="https://u:p@auth.example/t"'])
    assert len(seen) == 1


def test_challenge_from_another_origin_is_ignored() -> None:
    seen: list[httpx.Request] = []
    a = auth(_registry(b'{"token":"T"}', seen), username="u", password=Secret("p"))
    for url in ("https://cdn.example/blob", "http://reg.example/v2/", "https://reg.example:444/"):
        assert not a.answer("s", url, ['Bearer realm="https://auth.example/t"'])
    assert seen == []


def test_token_service_refusal_is_an_upstream_error_without_the_key() -> None:
    def handler(req: httpx.Request) -> httpx.Response:
        return httpx.Response(401)

    a = auth(handler, username="$oauthtoken", password=Secret("nvapi-SECRET"))
    with pytest.raises(UpstreamError, match="refused") as info:
        a.answer("s", "https://reg.example/v2/", ['Bearer realm="https://auth.example/t"'])
    assert "nvapi-SECRET" not in str(info.value)
    assert "nvapi-SECRET" not in repr(a.__dict__)


def test_basic_challenge_sends_credentials_once_and_gives_up_on_refusal() -> None:
    a = auth(lambda r: httpx.Response(500), username="u", password=Secret("p"))
    assert a.headers("s") == {}
    assert a.answer("s", "https://reg.example/v2/", ['Basic realm="r"'])
    assert a.headers("s")["Authorization"].startswith("Basic ")
    assert not a.answer("s", "https://reg.example/v2/", ['Basic realm="r"'])
    assert not auth(lambda r: httpx.Response(500)).answer("s", "https://reg.example/", ["Basic"])


# -- the client over a fake registry ----------------------------------------------------------
def test_manifest_over_the_size_limit_is_refused() -> None:
    def handler(req: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=b" " * ((4 << 20) + 1))

    with pytest.raises(ProtocolError, match="limit"):
        RegistryClient("https://reg.example", http(handler)).manifest("a/b", "v1")


def test_manifest_with_json_content_type_uses_its_media_type_field() -> None:
    body = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "layers": []}).encode()
    digest = "sha256:" + hashlib.sha256(body).hexdigest()

    def handler(req: httpx.Request) -> httpx.Response:
        assert "application/vnd.oci.image.index.v1+json" in req.headers["accept"]
        assert "v1+prettyjws" not in req.headers["accept"]
        return httpx.Response(200, content=body, headers={"Content-Type": "application/json"})

    m = RegistryClient("https://reg.example", http(handler)).manifest("a/b", digest)
    assert (m.media_type, m.digest, m.data) == (OCI_MANIFEST, digest, body)


def test_unknown_manifest_media_type_is_refused() -> None:
    def handler(req: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"schemaVersion": 2}, headers={"Content-Type": "x/y"})

    with pytest.raises(ProtocolError, match="unsupported media type"):
        RegistryClient("https://reg.example", http(handler)).manifest("a/b", "v1")


def test_registry_url_must_be_an_origin() -> None:
    for url in ("ftp://x", "https://u:p@reg.example", "https://reg.example/v2", "reg.example"):
        with pytest.raises(Exception, match="registry URL"):
            RegistryClient(url, http(lambda r: httpx.Response(200)))


# -- descriptors and links --------------------------------------------------------------------
GOOD = "sha256:" + "a" * 64


@pytest.mark.parametrize(
    "digest",
    ["sha256:../../etc/passwd", "sha256:" + "A" * 64, "sha512:" + "a" * 128, "", None, 7],
)
def test_descriptor_digests_are_validated_before_use(digest: object) -> None:
    index = {"manifests": [{"digest": digest, "size": 1, "mediaType": OCI_MANIFEST}]}
    with pytest.raises(ProtocolError, match="digest"):
        platforms(json.dumps(index).encode())
    manifest = {"config": {"digest": GOOD, "size": 1, "mediaType": "c"}, "layers": []}
    manifest["layers"] = [{"digest": digest, "size": 1, "mediaType": "l"}]
    with pytest.raises(ProtocolError, match="digest"):
        image_blobs(json.dumps(manifest).encode())


@pytest.mark.parametrize(
    "raw",
    [
        {"digest": GOOD, "size": -1, "mediaType": "l"},
        {"digest": GOOD, "size": True, "mediaType": "l"},
        {"digest": GOOD, "size": 1},
        "not a descriptor",
    ],
)
def test_descriptor_size_and_type_are_required(raw: object) -> None:
    doc = {"config": {"digest": GOOD, "size": 1, "mediaType": "c"}, "layers": [raw]}
    with pytest.raises(ProtocolError):
        image_blobs(json.dumps(doc).encode())


def test_index_and_manifest_shapes() -> None:
    for bad in (b"[]", b"{", b'{"manifests": {}}'):
        with pytest.raises(ProtocolError):
            platforms(bad)
    with pytest.raises(ProtocolError):
        image_blobs(b'{"config": {"digest": "%s", "size": 1, "mediaType": "c"}}' % GOOD.encode())
    entry = {"digest": GOOD, "size": 3, "mediaType": OCI_MANIFEST, "platform": {"os": "linux"}}
    assert platforms(json.dumps({"manifests": [entry]}).encode())[0].platform is None


def test_link_header_parsing() -> None:
    base = "https://reg.example/v2/a/tags/list?n=2"
    assert next_link('</v2/a/tags/list?n=2&last=b>; rel="next"', base) == (
        "https://reg.example/v2/a/tags/list?n=2&last=b"
    )
    assert next_link('<https://x/p>; rel="prev", <q?last=c>; rel=next', base) == (
        "https://reg.example/v2/a/tags/q?last=c"
    )
    assert next_link(None, base) is None and next_link("garbage", base) is None


@given(st.text(max_size=200))
def test_link_parser_never_crashes(text: str) -> None:
    next_link(text, "https://reg.example/v2/a/tags/list")


def test_tags_drop_invalid_names_and_stop_when_a_page_repeats() -> None:
    pages = {
        "": (["v1", "../evil", "bad tag"], '</v2/a/b/tags/list?last=x>; rel="next"'),
        "last=x": (["v2"], '</v2/a/b/tags/list?last=y>; rel="next"'),
        "last=y": (["v2", "v1"], '</v2/a/b/tags/list?last=y>; rel="next"'),  # a loop
    }
    calls: list[str] = []

    def handler(req: httpx.Request) -> httpx.Response:
        query = req.url.query.decode()
        calls.append(query)
        tags, link = pages[query]
        return httpx.Response(200, json={"name": "a/b", "tags": tags}, headers={"Link": link})

    assert RegistryClient("https://reg.example", http(handler)).tags("a/b") == ["v1", "v2"]
    assert calls == ["", "last=x", "last=y"]
