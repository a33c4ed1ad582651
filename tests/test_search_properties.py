"""Invariants of grouped search over random catalogs (hypothesis, real Whoosh indexes)."""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from index.schema import IndexDoc
from index.search import Index
from index.writer import rebuild, update

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
        lambda kind, words, variant, extra, i: IndexDoc(
            kind=kind,
            path=f"nvidia/e{i}",
            display_name=" ".join(words) + " " + variant,
            name=f"e{i}",
            # members of one family differ in their descriptions' extra words
            description="a model " + " ".join(reversed(words)) + " " + " ".join(extra),
            versions=["1.0"],
        ),
        kind=st.sampled_from(["model", "resource", "image"]),
        words=st.lists(st.sampled_from(WORDS), min_size=1, max_size=3),
        variant=st.sampled_from(VARIANTS),
        extra=st.lists(st.sampled_from(WORDS), max_size=2),
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


# one word; two words (possibly spread over a family's members: its family document matches,
# no member does); a negation (ranked by entries, not families); a phrase
queries = st.one_of(
    st.sampled_from(WORDS),
    st.tuples(st.sampled_from(WORDS), st.sampled_from(WORDS)).map(" ".join),
    st.tuples(st.sampled_from(WORDS), st.sampled_from(WORDS)).map(" NOT ".join),
    st.tuples(st.sampled_from(WORDS), st.sampled_from(WORDS)).map(lambda t: f'"{t[0]} {t[1]}"'),
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(docs_strategy, queries, st.integers(1, 5))
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
        for g in full.groups:
            scores = [m.score for m in g.members]
            assert scores == sorted(scores, reverse=True), "members are not best first"
        limited = ix.search(word, limit=limit)
        assert [g.family for g in limited.groups] == [g.family for g in full.groups][:limit]
        for lg, fg in zip(limited.groups, full.groups, strict=False):
            assert {m.path for m in lg.members} == {m.path for m in fg.members}
    finally:
        ix.close()
        tmp.cleanup()


def test_a_family_matching_only_across_members_is_not_a_hit() -> None:
    """Words spread over two members match the family document but no entry: no group, and
    the limit is filled from the next families."""

    def doc(i: int, display: str, description: str) -> IndexDoc:
        return IndexDoc(
            kind="model",
            path=f"nvidia/e{i}",
            display_name=display,
            name=f"e{i}",
            description=description,
        )

    docs = [
        # one family, each word in one member only (often: the best family document)
        doc(1, "TLT ResNet18 DetectNet FP16", "squad squad squad"),
        doc(2, "TLT ResNet18 DetectNet INT8", "gnmt gnmt gnmt"),
        # families where an entry has both words (in a longer description)
        *(doc(10 + i, f"Model{i} Thing", "squad gnmt onnx tensorrt tlt base") for i in range(3)),
    ]
    ix, tmp = _index(docs)
    try:
        ranked, _ = ix._family_hits(ix._family_query("squad gnmt", None, None, None), None)
        assert ranked[0][1] == docs[0].family  # the case this test is about
        for limit in (1, 2, None):
            got = ix.search("squad gnmt", limit=limit)
            paths = [m.path for g in got.groups for m in g.members]
            assert paths and not {"nvidia/e1", "nvidia/e2"} & set(paths)
            assert len(got.groups) == (3 if limit is None else limit)
        assert {m.path for g in ix.search("squad", limit=None).groups for m in g.members} == {
            "nvidia/e1",
            *(f"nvidia/e{10 + i}" for i in range(3)),
        }
    finally:
        ix.close()
        tmp.cleanup()


def _family_docs(ix: Index) -> dict[str, tuple[str, str]]:
    """Family key -> (kind, members' stored text) of every live family document."""
    reader = ix.searcher.reader()
    return {
        f["fam_family"]: (f["fam_kind"], f["fam_src"])
        for _, f in reader.iter_docs()
        if "fam_family" in f
    }


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    docs_strategy,
    st.lists(st.tuples(st.integers(0, 30), st.sampled_from(WORDS + ["zebrafish"]))),
    st.lists(st.integers(0, 30)),
)
def test_incremental_updates_keep_family_documents_in_sync(
    docs: list[IndexDoc], edits: list[tuple[int, str]], removals: list[int]
) -> None:
    """After update(), the family documents (and answers) are those of a fresh rebuild."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        rebuild(root / "inc", docs)
        current = {d.id: d for d in docs}
        changed: dict[str, IndexDoc] = {}
        for i, word in edits:  # renames move entries between families; descriptions change
            old = docs[i % len(docs)]
            new = dataclasses.replace(
                old,
                display_name=f"{word} {old.display_name}" if i % 2 else old.display_name,
                description=f"{old.description} {word}",
            )
            current[new.id] = changed[new.id] = new
        gone = {docs[i % len(docs)].id for i in removals} - set(changed)
        for doc_id in gone:
            del current[doc_id]
        update(root / "inc", [dataclasses.replace(d) for d in changed.values()], sorted(gone))
        rebuild(root / "full", [dataclasses.replace(d) for d in current.values()])
        inc, full = Index(root / "inc"), Index(root / "full")
        try:
            assert _family_docs(inc) == _family_docs(full)
            for word in ("zebrafish", *WORDS[:4]):
                a, b = inc.search(word, limit=None), full.search(word, limit=None)
                assert {g.family: {m.path for m in g.members} for g in a.groups} == {
                    g.family: {m.path for m in g.members} for g in b.groups
                }
        finally:
            inc.close()
            full.close()


def test_a_field_name_still_narrows_the_search_to_that_field() -> None:
    """Words without a field name are looked for in the merged `text` field (and the
    description); `labels:x` etc. search that field only, for entries and families alike."""
    docs = [
        IndexDoc(kind="model", path="nvidia/a", display_name="Alpha", labels=["gnmt"]),
        IndexDoc(kind="model", path="nvidia/b", display_name="Gnmt Beta"),
        IndexDoc(kind="model", path="nvidia/c", display_name="Gamma", description="gnmt"),
    ]
    ix, tmp = _index(docs)
    try:

        def paths(query: str) -> set[str]:
            return {m.path for g in ix.search(query, limit=None).groups for m in g.members}

        assert paths("gnmt") == {"nvidia/a", "nvidia/b", "nvidia/c"}
        assert paths("labels:gnmt") == {"nvidia/a"}
        assert paths("name:gnmt") == {"nvidia/b"}
        assert paths("description:gnmt") == {"nvidia/c"}
        assert [g.family for g in ix.search("labels:gnmt", limit=1).groups] == [docs[0].family]
    finally:
        ix.close()
        tmp.cleanup()
