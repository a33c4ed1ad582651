"""Invariants of grouped search over random catalogs (hypothesis, real Whoosh indexes)."""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from index.schema import IndexDoc
from index.search import Index
from index.writer import rebuild

WORDS = [
    "bert",
    "large",
    "base",
    "resnet18",
    "resnet50",
    "classification",
    "detectnet",
    "squad",
    "gnmt",
    "waveglow",
    "tlt",
    "onnx",
    "tensorrt",
]
VARIANTS = ["for TensorFlow", "for PyTorch", "FP16", "INT8", "seqLen=128", "V100-16G", "T4", ""]

docs_strategy = st.lists(
    st.builds(
        lambda kind, words, variant, i: IndexDoc(
            kind=kind,
            path=f"nvidia/e{i}",
            display_name=" ".join(words) + " " + variant,
            name=f"e{i}",
            description="a model " + " ".join(reversed(words)),
            versions=["1.0"],
        ),
        kind=st.sampled_from(["model", "resource", "image"]),
        words=st.lists(st.sampled_from(WORDS), min_size=1, max_size=3),
        variant=st.sampled_from(VARIANTS),
        i=st.integers(0, 10**6),
    ),
    min_size=1,
    max_size=25,
    unique_by=lambda d: d.path,
)


def _index(docs: list[IndexDoc]) -> tuple[Index, tempfile.TemporaryDirectory[str]]:
    tmp = tempfile.TemporaryDirectory()
    rebuild(Path(tmp.name), docs)
    return Index(Path(tmp.name)), tmp


def _plain_matches(ix: Index, query: str) -> set[str]:
    """The ungrouped match set, straight from Whoosh."""
    return {h["id"] for h in ix.searcher.search(ix.parse(query), limit=None)}


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(docs_strategy, st.sampled_from(WORDS), st.integers(1, 5))
def test_grouping_loses_nothing_and_never_mixes_kinds(
    docs: list[IndexDoc], word: str, limit: int
) -> None:
    ix, tmp = _index(docs)
    try:
        full = ix.search(word, limit=None)
        members = [f"{m.kind}:{m.path}" for g in full.groups for m in g.members]
        assert len(members) == len(set(members)), "an entry is in two groups"
        assert set(members) == _plain_matches(ix, word), "grouping lost or invented entries"
        for g in full.groups:
            assert {m.kind for m in g.members} == {g.kind}
            assert len({m.doc["family"] for m in g.members}) == 1
        limited = ix.search(word, limit=limit)
        assert [g.family for g in limited.groups] == [g.family for g in full.groups][:limit]
        for lg, fg in zip(limited.groups, full.groups, strict=False):
            assert {m.path for m in lg.members} == {m.path for m in fg.members}
    finally:
        ix.close()
        tmp.cleanup()
