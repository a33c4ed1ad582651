"""Properties of the serve building blocks: Range parsing and the read-token checks."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mirror.errors import ConfigError
from mirror.serve.auth import ReadAuth, basic_password
from mirror.serve.blobs import parse_range
from mirror.serve.ngc_api import is_ngc_path


@given(st.integers(0, 10_000), st.integers(0, 12_000), st.integers(0, 12_000))
def test_a_satisfiable_range_stays_inside_the_blob(size: int, a: int, b: int) -> None:
    got = parse_range(f"bytes={a}-{b}", size)
    if b < a:
        assert got is None  # invalid: ignored, the whole body is served
    elif a >= size:
        assert got == "unsatisfiable"
    else:
        assert got == (a, min(b, size - 1))


@given(st.integers(0, 10_000), st.integers(0, 12_000))
def test_open_and_suffix_ranges(size: int, n: int) -> None:
    opened = parse_range(f"bytes={n}-", size)
    assert opened == ("unsatisfiable" if n >= size else (n, size - 1))
    suffix = parse_range(f"bytes=-{n}", size)
    if n == 0 or size == 0:
        assert suffix == "unsatisfiable"
    else:
        assert suffix == (max(0, size - n), size - 1)


@given(st.text(max_size=40))
def test_garbage_range_headers_never_raise(header: str) -> None:
    got = parse_range(header, 100)
    assert got is None or got == "unsatisfiable" or (0 <= got[0] <= got[1] < 100)


def test_ngc_empty_file_range_is_ignored() -> None:
    assert parse_range("bytes=0--1", 0) is None


@given(st.text(st.characters(min_codepoint=33, max_codepoint=126), min_size=16, max_size=40))
def test_tokens_sessions_and_signed_urls(token: str) -> None:
    auth = ReadAuth([token], secret=b"k" * 32)
    basic = base64.b64encode(f"anyone:{token}".encode()).decode()
    assert auth.allowed({"authorization": f"Basic {basic}"})
    assert auth.allowed({"authorization": f"Bearer {token}"})
    assert not auth.allowed({"authorization": f"Bearer {token}x"})
    assert not auth.allowed({})
    session, ttl = auth.issue(now=1000.0)
    assert token not in session and ttl > 0
    assert auth._valid_session(session, now=1000.0 + ttl - 1)
    assert not auth._valid_session(session, now=1000.0 + ttl + 1)  # expired
    assert not auth._valid_session(session[:-1] + ("A" if session[-1] != "A" else "B"), now=1000.0)
    query = dict(
        part.split("=", 1) for part in auth.sign("/_dl/sha256/ab/f", now=1000.0).split("&")
    )
    ok = {k: [v] for k, v in query.items()}
    assert auth.signed("/_dl/sha256/ab/f", ok, now=1000.0)
    assert not auth.signed("/_dl/sha256/cd/f", ok, now=1000.0)  # another blob
    assert not auth.signed("/_dl/sha256/ab/f", ok, now=1000.0 + 10 * ttl)  # expired
    later = {**ok, "exp": [str(int(ok["exp"][0]) + 3600)]}
    assert not auth.signed("/_dl/sha256/ab/f", later, now=1000.0)  # expiry stretched
    # another process (another secret) does not accept this one's sessions
    assert not ReadAuth([token], secret=b"j" * 32)._valid_session(session, now=1000.0)


def test_open_mirror_and_basic_decoding() -> None:
    assert ReadAuth(None).allowed({}) and not ReadAuth(None).enabled
    assert basic_password("%%%") is None
    assert basic_password(base64.b64encode(b"no-colon").decode()) is None
    assert basic_password(base64.b64encode(b"u:p:q").decode()) == "p:q"


@pytest.mark.parametrize(
    ("path", "ngc"),
    [
        ("/v2/products", True),
        ("/v2/search/catalog/resources/MODEL", True),
        ("/v2/models/nvidia/bert/versions/1/files", True),
        ("/v2/org/nvidia/models/bert/1/files", True),
        ("/v2/repos/nvidia/pytorch/tags/24.01", True),
        ("/v2/repos/nvidia/pytorch/tags/list", True),  # NGC's metadata of a tag named "list"
        ("/v2/models/nvidia/x/versions/1/files/manifests/a.json", True),
        ("/token", True),
        ("/_dl/sha256/ab/f", True),
        # registry repositories whose names start like NGC paths stay the registry's
        ("/v2/models/x/manifests/latest", False),
        ("/v2/org/team/img/blobs/sha256:" + "0" * 64, False),
        ("/v2/models/x/tags/list", False),
        ("/v2/nvidia/pytorch/manifests/24.01", False),
        ("/v2/", False),
        ("/search", False),
    ],
)
def test_routing_between_ngc_and_registry(path: str, ngc: bool) -> None:
    assert is_ngc_path(path) is ngc


def test_a_token_file_alone_closes_the_mirror(tmp_path: Path) -> None:
    """`create_app(root, token_file=f)` without `tokens` once meant open reads (fail-open)."""
    tokens = tmp_path / "tokens"
    tokens.write_text("# read tokens\n  # rotated 2026-01\nsecret-one\n")
    auth = ReadAuth(None, token_file=tokens)
    assert auth.enabled and not auth.allowed({})
    assert not auth.valid_token("# rotated 2026-01")  # an indented comment is no token
    basic = base64.b64encode(b"u:secret-one").decode()
    assert auth.allowed({"authorization": f"Basic {basic}"})
    tokens.write_text("# none left\n")
    with pytest.raises(ConfigError, match="lists no token"):
        ReadAuth(None, token_file=tokens)
