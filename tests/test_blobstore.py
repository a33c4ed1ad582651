from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mirror.blobstore import BlobStore
from mirror.errors import DigestError, IntegrityError
from mirror.paths import MirrorPaths, safe_relpath, validate_digest


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@pytest.fixture
def store(tmp_path: Path) -> BlobStore:
    s = BlobStore(MirrorPaths(tmp_path / "root"))
    s.init_layout()
    return s


def test_layout_is_an_oci_image_layout(store: BlobStore) -> None:
    import json

    root = store.paths.root
    assert json.loads((root / "oci-layout").read_text()) == {"imageLayoutVersion": "1.0.0"}
    assert json.loads((root / "index.json").read_text())["schemaVersion"] == 2
    assert (root / "blobs" / "sha256").is_dir()


def test_put_and_read_back(store: BlobStore) -> None:
    data = os.urandom(3 * 1024 * 1024 + 17)
    d = store.put_bytes(data, digest_of(data))
    assert d == digest_of(data)
    with store.open(d) as fh:
        assert fh.read() == data
    assert store.verify(d)
    assert list(store.iter_digests()) == [d]


def test_wrong_digest_publishes_nothing(store: BlobStore) -> None:
    with pytest.raises(IntegrityError, match="digest mismatch"):
        store.put_bytes(b"hello", digest_of(b"other"))
    assert list(store.iter_digests()) == []
    assert list(store.paths.tmp.iterdir()) == []


def test_size_mismatch_publishes_nothing(store: BlobStore) -> None:
    data = b"x" * 100
    with store.writer(digest_of(data), 50) as w, pytest.raises(IntegrityError):
        w.write(data)
    assert list(store.iter_digests()) == []


def test_partial_is_kept_for_resume_and_never_visible(store: BlobStore) -> None:
    data = os.urandom(200_000)
    d = digest_of(data)
    with store.writer(d, len(data)) as w:
        w.write(data[:70_000])  # the process "dies" here: no commit
    assert not store.has(d)
    assert store.partial_size(d) == 70_000
    with store.writer(d, len(data)) as w:
        assert w.offset == 70_000
        w.write(data[70_000:])
        assert w.commit() == d
    assert store.verify(d)
    assert store.partial_size(d) == 0


def test_stale_partial_with_wrong_bytes_fails_then_is_gone(store: BlobStore) -> None:
    data = os.urandom(1000)
    d = digest_of(data)
    store.paths.partial(d).write_bytes(b"\0" * 500)
    with store.writer(d, len(data)) as w:
        w.write(data[500:])
        with pytest.raises(IntegrityError):
            w.commit()
    assert store.partial_size(d) == 0 and not store.has(d)


@pytest.mark.parametrize(
    "bad",
    [
        "sha256:ABC",
        "md5:" + "0" * 32,
        "sha256:" + "g" * 64,
        "sha256:../../etc/passwd",
        "sha256:" + "0" * 63,
        "",
    ],
)
def test_bad_digests_never_reach_the_filesystem(bad: str) -> None:
    with pytest.raises(DigestError):
        validate_digest(bad)
    with pytest.raises(DigestError):
        MirrorPaths(Path("/x")).blob(bad)


@pytest.mark.parametrize(
    "bad", ["../x", "/etc/passwd", "a/../../b", "a//b", "C:/x", "a\\b", "a/./b", "", "x\x00y"]
)
def test_unsafe_relative_paths_refused(bad: str) -> None:
    from mirror.errors import UsageError

    with pytest.raises(UsageError):
        safe_relpath(bad)


@given(
    st.lists(
        st.text(alphabet=st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=12),
        min_size=1,
        max_size=5,
    )
)
def test_safe_relpath_never_escapes(parts: list[str]) -> None:
    path = "/".join(parts)
    try:
        rel = safe_relpath(path)
    except Exception:
        return
    joined = (Path("/base") / rel).resolve()
    assert str(joined).startswith("/base/")


@settings(max_examples=30, deadline=None)
@given(st.binary(max_size=5000), st.lists(st.integers(0, 5000), max_size=4))
def test_any_interrupted_write_resumes_to_the_same_blob(data: bytes, cuts: list[int]) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        store = BlobStore(MirrorPaths(Path(tmp)))
        store.init_layout()
        d = digest_of(data)
        pos = 0
        for cut in sorted(c % (len(data) + 1) for c in cuts):
            with store.writer(d, len(data)) as w:
                assert w.offset == pos
                w.write(data[pos:cut]) if cut > pos else None
                pos = max(pos, cut)
        with store.writer(d, len(data)) as w:
            w.write(data[w.offset :])
            w.commit()
        assert store.verify(d) and store.paths.blob(d).read_bytes() == data


def test_an_empty_partial_is_not_kept(store: BlobStore) -> None:
    data = b"x" * 1000
    d = digest_of(data)
    with store.writer(d, len(data)):
        pass  # the upstream answered 404 before any byte
    assert not store.paths.partial(d).exists()
    with store.writer(d, len(data)) as w:
        w.write(data[:10])
    assert store.partial_size(d) == 10  # a started download is kept for resume


def test_fetch_into_restarts_a_resumed_blob_that_fails_verification(store: BlobStore) -> None:
    from mirror.blobstore import fetch_into

    data = os.urandom(10_000)
    d = digest_of(data)
    store.paths.partial(d).write_bytes(b"\0" * 100)  # a stale partial with wrong bytes
    calls: list[int] = []

    def fetch(w: Any) -> int:
        calls.append(w.offset)
        rest = data[w.offset :]
        w.write(rest)
        return len(rest)

    assert fetch_into(store, d, len(data), fetch, what="x") == (d, 10_000 - 100 + 10_000)
    assert calls == [100, 0] and store.verify(d)


def test_fetch_into_retries_once_only_when_asked(store: BlobStore) -> None:
    from mirror.blobstore import fetch_into
    from mirror.errors import UpstreamError

    data = b"payload"
    d = digest_of(data)
    seen: list[str] = []

    def failing(w: Any) -> int:
        raise UpstreamError("gone")

    def refresh(exc: Exception) -> bool:
        seen.append(str(exc))
        return True

    with pytest.raises(UpstreamError):
        fetch_into(store, d, len(data), failing, what="x", retry_once=refresh)
    assert len(seen) == 1  # asked after the first failure only
    with pytest.raises(UpstreamError):
        fetch_into(store, d, len(data), failing, what="x", retry_once=lambda e: False)
    with pytest.raises(IntegrityError):  # a fresh (not resumed) blob that fails: no retry
        fetch_into(store, d, len(data), lambda w: (w.write(b"other!!"), 7)[1], what="x")
    assert not store.has(d)
