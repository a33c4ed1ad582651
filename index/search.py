"""Search with collapsed duplicates: parse, match, group by family, suggest.

Whoosh's own `collapse=` with a `limit` returns too few groups (collapsed-out documents still
take places in the top N; reference/performance.md), so grouping is done here, in two steps
over the two kinds of documents of the index (index/schema.py):

1. rank families: the query, over the family documents' merged text, gives each family a
   score (a family matches whenever one of its members could: its text holds all of theirs);
   the top K families are scored exactly (K grows until enough groups are certain: a family
   is *certain* when its score is above the K-th score, or the result set is exhausted);
2. list members: the query over the entry documents of just those families (and the
   kind/framework/precision filters, per entry) gives each group its matching members, best
   first; a family none of whose members matches on its own (its words were spread over
   several members) is dropped, and more families are ranked until `limit` groups are found.

Groups are ordered by family score, then family key; the unlimited answer orders the same
groups the same way, so a limited answer is always a prefix of the unlimited one, and every
matching member of a returned group is listed (nothing is hidden). A query with a negation
cannot be answered from the merged text (a word of one member would exclude the others): it
ranks entry documents directly (top K entries, groups ordered by their best member).
"""

from __future__ import annotations

import json
from bisect import bisect_left
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from whoosh import index as windex
from whoosh import query as wq
from whoosh.matching.wrappers import WrappingMatcher
from whoosh.qparser import AndGroup, FieldAliasPlugin, MultifieldParser
from whoosh.searching import Searcher

from index.schema import DEFAULT_FIELDS, FAMILY_FIELD, FAMILY_SEARCH_FIELDS, SEARCH_FIELDS
from index.writer import current_dir

FIELD_ALIASES = {"kind", "family", *SEARCH_FIELDS}
VARIANT_ORDER = ("framework", "precision", "seqlen", "gpu", "optimizer", "version")


class QuerySyntaxError(ValueError):
    """The query cannot be parsed; the message says where and how to fix it."""


class IndexMissing(FileNotFoundError):
    """No usable index (missing or another format): rebuild it from the catalog."""


@dataclass
class Member:
    path: str
    kind: str
    display_name: str
    score: float
    doc: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in self.doc.items() if k not in ("family",)}
        d["score"] = round(self.score, 4)
        return d


@dataclass
class Group:
    family: str
    kind: str
    members: list[Member] = field(default_factory=list)
    rank: float | None = None  # the family document's score (None: ranked by best member)

    @property
    def best_score(self) -> float:
        return max(m.score for m in self.members)

    @property
    def title(self) -> str:
        return self.members[0].display_name

    @property
    def variants(self) -> dict[str, list[str]]:
        merged: dict[str, list[str]] = {}
        for m in self.members:
            for key, values in m.doc.get("variants", {}).items():
                bucket = merged.setdefault(key, [])
                bucket.extend(v for v in values if v not in bucket)
        return {k: merged[k] for k in VARIANT_ORDER if k in merged}

    def summary(self) -> str:
        """E.g. "TensorFlow, PyTorch · FP16/FP32/INT8 · T4, V100-16G"."""
        v = self.variants
        parts = []
        for key in VARIANT_ORDER:
            if key not in v:
                continue
            joiner = "/" if key == "precision" else ", "
            prefix = "seqLen " if key == "seqlen" else ""
            parts.append(prefix + joiner.join(v[key]))
        return " · ".join(parts)

    def as_dict(self) -> dict[str, Any]:
        best = self.members[0].doc
        return {
            "title": self.title,
            "kind": self.kind,
            "family": self.family,
            "variants": self.variants,
            "summary": self.summary(),
            "latest_version": best.get("latest_version"),
            "mirrored": any(m.doc.get("mirrored") for m in self.members),
            "count": len(self.members),
            "members": [m.as_dict() for m in self.members],
        }


@dataclass
class SearchResult:
    query: str
    groups: list[Group]
    suggestions: list[str] = field(default_factory=list)

    @property
    def total_members(self) -> int:
        return sum(len(g.members) for g in self.groups)

    def as_dict(self) -> dict[str, Any]:
        return {
            "query": self.query,
            "groups": [g.as_dict() for g in self.groups],
            "total_members": self.total_members,
            "suggestions": self.suggestions,
        }


def _check_syntax(text: str) -> None:
    depth = 0
    for i, ch in enumerate(text):
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth < 0:
                raise QuerySyntaxError(f"unmatched ')' at position {i + 1} in {text!r}")
    if depth:
        raise QuerySyntaxError(f"unclosed '(' in {text!r}: add ')' or quote the query")
    if text.count('"') % 2:
        raise QuerySyntaxError(f"unclosed '\"' in {text!r}")
    for word in text.replace("(", " ").split():
        if ":" in word and not word.startswith('"'):
            fname = word.split(":", 1)[0].lstrip("+-")
            if fname and fname not in FIELD_ALIASES and fname.isidentifier():
                raise QuerySyntaxError(
                    f"unknown field {fname!r} in {text!r}; fields: "
                    + ", ".join(sorted(FIELD_ALIASES))
                )


class Index:
    """An open search index (one generation), reusable for many queries."""

    def __init__(self, search_root: Path) -> None:
        target = current_dir(search_root)
        if target is None:
            raise IndexMissing(str(search_root))
        self.ix = windex.open_dir(str(target))
        self.schema = self.ix.schema
        self._searcher: Searcher | None = None
        aliases: dict[str, list[str]] = {}
        for entry_field, fam_field in FAMILY_FIELD.items():
            aliases.setdefault(fam_field, []).append(entry_field)
        self._fam_parser = MultifieldParser(list(FAMILY_SEARCH_FIELDS), self.schema, group=AndGroup)
        self._fam_parser.add_plugin(FieldAliasPlugin(aliases))

    @property
    def searcher(self) -> Searcher:
        if self._searcher is None:
            self._searcher = self.ix.searcher()
        return self._searcher

    def close(self) -> None:
        if self._searcher is not None:
            self._searcher.close()
            self._searcher = None

    def parse(self, text: str) -> wq.Query:
        _check_syntax(text)
        parser = MultifieldParser(list(DEFAULT_FIELDS), self.schema, group=AndGroup)
        try:
            return parser.parse(text)
        except Exception as exc:  # whoosh raises a zoo of types on odd input
            raise QuerySyntaxError(f"cannot parse {text!r}: {exc}") from None

    def _family_query(
        self, text: str, kind: str | None, framework: str | None, precision: str | None
    ) -> wq.Query:
        """The query over family documents: matches every family with a matching member."""
        try:
            fq = self._fam_parser.parse(text)
        except Exception as exc:  # parse() accepted it: should not happen
            raise QuerySyntaxError(f"cannot parse {text!r}: {exc}") from None
        fq = _relax_phrases(fq)
        # only family documents have fam_* fields, so fq never matches an entry
        flt = self._filter(kind, framework, precision, prefix="fam_")
        # Require: the filter narrows the matcher itself without adding to the scores
        return fq if flt is None else wq.Require(fq, flt)

    @staticmethod
    def _filter(
        kind: str | None, framework: str | None, precision: str | None, *, prefix: str = ""
    ) -> wq.Query | None:
        """The kind/framework/precision terms over entry fields (prefix "fam_": the same
        fields of family documents); one term alone, several ANDed, None without any."""
        terms: list[wq.Query] = []
        if kind:
            terms.append(wq.Term(f"{prefix}kind", kind))
        if framework:
            terms.append(wq.Term(f"{prefix}f_framework", framework.lower()))
        if precision:
            terms.append(wq.Term(f"{prefix}f_precision", precision.lower()))
        if not terms:
            return None
        return wq.And(terms) if len(terms) > 1 else terms[0]

    def _hits(
        self, q: wq.Query, flt: wq.Query | None, limit: int | None
    ) -> tuple[list[tuple[float, dict[str, Any]]], bool]:
        """(score, stored fields) best first, ties by id; and whether the set is exhausted."""
        # optimize=False: Whoosh's block-quality shortcut does not return the exact top K
        # (bench/search.py found 79 better docs missing at 100k), and the "certain group"
        # rule below needs the exact top K
        results = self.searcher.search(q, limit=limit, filter=flt, optimize=limit is None)
        hits = [(float(h.score or 0.0), h.fields()) for h in results]
        hits.sort(key=lambda sh: (-sh[0], sh[1]["id"]))
        exhausted = limit is None or results.scored_length() < limit
        return hits, exhausted

    def search(
        self,
        text: str,
        *,
        kind: str | None = None,
        framework: str | None = None,
        precision: str | None = None,
        limit: int | None = None,
    ) -> SearchResult:
        q = self.parse(text)
        if _has_negation(q):
            chosen = self._search_entries(q, kind, framework, precision, limit)
        else:
            fq = self._family_query(text, kind, framework, precision)
            chosen = self._search_families(q, fq, kind, framework, precision, limit)
        result = SearchResult(query=text, groups=chosen)
        if not chosen:
            result.suggestions = self.suggest(text)
        return result

    def _family_hits(self, fq: wq.Query, limit: int | None) -> tuple[list[tuple[float, str]], bool]:
        """(score, family key) best first, ties by key; and whether they are all."""
        results = self.searcher.search(fq, limit=limit, optimize=limit is None)
        if not results.top_n:  # (an empty index has no columns)
            return [], True
        # the key from its column: the stored fields hold all members' text
        keys = self.searcher.reader().column_reader("fam_family")
        hits = [(float(score or 0.0), keys[docnum]) for score, docnum in results.top_n]
        hits.sort(key=lambda h: (-h[0], h[1]))
        return hits, limit is None or results.scored_length() < limit

    def _members(
        self,
        q: wq.Query,
        families: list[str] | None,
        kind: str | None,
        framework: str | None,
        precision: str | None,
    ) -> dict[str, Group]:
        """The matching members of `families` (all families if None), grouped by family."""
        if families is None:
            hits, _ = self._hits(q, self._filter(kind, framework, precision), None)
            return {g.family: g for g in _group(hits)}
        # (no kind filter: the chosen families are of that kind, a family key holds it)
        facets = [
            (f, v.lower()) for f, v in (("f_framework", framework), ("f_precision", precision)) if v
        ]
        found: list[tuple[float, int]] = []
        for sub, offset in self.searcher.leaf_searchers():
            ids = _member_docs(sub.reader(), families, facets)
            if not ids:
                continue
            wanted = set(ids)
            m = q.matcher(_OnlyDocsSearcher(sub, ids), sub.context())
            while m.is_active():
                if (d := m.id()) in wanted:  # (a query that reads no postings visits all)
                    found.append((float(m.score()), offset + d))
                m.next()
        stored = self.searcher.stored_fields
        hits = [(score, stored(docnum)) for score, docnum in found]
        hits.sort(key=lambda sh: (-sh[0], sh[1]["id"]))
        return {g.family: g for g in _group(hits)}

    def _search_families(
        self,
        q: wq.Query,
        fq: wq.Query,
        kind: str | None,
        framework: str | None,
        precision: str | None,
        limit: int | None,
    ) -> list[Group]:
        if limit is None:
            ranked, _ = self._family_hits(fq, None)
            groups = self._members(q, None, kind, framework, precision)
            chosen = []
            for score, family in ranked:
                if g := groups.pop(family, None):
                    g.rank = score
                    chosen.append(g)
            # unreachable (a family document holds all of its members' text); kept last
            chosen.extend(sorted(groups.values(), key=lambda g: (-g.best_score, g.family)))
            return chosen
        chosen = []
        done = 0  # ranked families already looked at, in order
        k = max(limit * 2, 32)
        while True:
            ranked, exhausted = self._family_hits(fq, k)
            certain = ranked if exhausted else [h for h in ranked if h[0] > ranked[-1][0]]
            while len(chosen) < limit and done < len(certain):
                # the members of just as many families as groups are missing
                batch = certain[done : done + limit - len(chosen)]
                groups = self._members(q, [f for _, f in batch], kind, framework, precision)
                for score, family in batch:
                    if g := groups.get(family):
                        g.rank = score
                        chosen.append(g)
                done += len(batch)
            if len(chosen) >= limit or exhausted:
                return chosen[:limit]
            k *= 4

    def _search_entries(
        self,
        q: wq.Query,
        kind: str | None,
        framework: str | None,
        precision: str | None,
        limit: int | None,
    ) -> list[Group]:
        """Groups ranked by their best member, from the top K entries (negated queries)."""
        flt = self._filter(kind, framework, precision)
        k = None if limit is None else max(limit * 8, 64)
        while True:
            hits, exhausted = self._hits(q, flt, k)
            groups = _group(hits)
            if exhausted:
                chosen = groups
            else:
                kth = hits[-1][0]
                chosen = [g for g in groups if g.best_score > kth]
            if limit is None or exhausted or len(chosen) >= limit:
                break
            k = (k or 64) * 4
        if limit is not None:
            chosen = chosen[:limit]
            if not exhausted and chosen:
                full = self._members(q, [g.family for g in chosen], kind, framework, precision)
                chosen = [full.get(g.family, g) for g in chosen]
        return chosen

    def suggest(self, text: str) -> list[str]:
        """Did-you-mean: the query with each unknown word replaced by a close indexed word."""
        words = [w for w in text.split() if w.isalnum()]
        if not words:
            return []
        corrected, changed = [], False
        for w in words:
            best = self._closest(w.lower())
            if best and best != w.lower():
                corrected.append(best)
                changed = True
            else:
                corrected.append(w)
        return [" ".join(corrected)] if changed else []

    def _closest(self, word: str) -> str | None:
        """The indexed name word nearest to `word`: fewest edits, then most frequent."""
        options = self.searcher.suggest("name", word, limit=20, maxdist=2)
        if not options:
            return None
        reader = self.searcher.reader()

        def rank(candidate: str) -> tuple[int, int, str]:
            freq = reader.doc_frequency("name", candidate)
            return (_edits(word, candidate), -freq, candidate)

        return str(min(options, key=rank))

    def members_of(self, family: str) -> list[dict[str, Any]]:
        return [json.loads(f["doc"]) for f in self.searcher.documents(family=family)]

    def get(self, doc_id: str) -> dict[str, Any] | None:
        fields = self.searcher.document(id=doc_id)
        return json.loads(fields["doc"]) if fields else None

    def find_path(self, path: str) -> list[dict[str, Any]]:
        """Entries whose path is `path` (any kind)."""
        out = []
        for kind in ("model", "resource", "image", "chart"):
            doc = self.get(f"{kind}:{path}")
            if doc:
                out.append(doc)
        return out


def _member_docs(reader: Any, families: list[str], facets: list[tuple[str, str]]) -> list[int]:
    """The entries of `families` with all of `facets` (field, value): sorted document numbers
    of `reader`'s segment."""
    ids: set[int] = set()
    for family in families:
        if ("family", family) in reader:
            ids.update(reader.postings("family", family).all_ids())
    docs = sorted(ids)
    for fname, value in facets:
        if not docs or (fname, value) not in reader:
            return []
        m, kept = reader.postings(fname, value), []
        for d in docs:  # skip_to: reads just the posting blocks around the entries
            if m.is_active() and m.id() < d:
                m.skip_to(d)
            if not m.is_active():
                break
            if m.id() == d:
                kept.append(d)
        docs = kept
    return docs


class _OnlyDocs(WrappingMatcher):  # type: ignore[misc]
    """A term's postings, only at the given documents (sorted): skips to each in turn."""

    def __init__(self, child: Any, ids: list[int], boost: float = 1.0) -> None:
        super().__init__(child, boost)
        self._ids = ids
        self._done = False
        self._find_next()

    def _find_next(self) -> None:
        child, ids = self.child, self._ids
        while child.is_active():
            cid = child.id()
            i = bisect_left(ids, cid)
            if i == len(ids):
                self._done = True
                return
            if ids[i] == cid:
                return
            child.skip_to(ids[i])

    def is_active(self) -> bool:
        return not self._done and bool(self.child.is_active())

    def next(self) -> None:
        self.child.next()
        self._find_next()

    def skip_to(self, id: int) -> None:
        if self.child.id() < id:
            self.child.skip_to(id)
        self._find_next()

    def all_ids(self) -> Any:
        wanted = set(self._ids)
        return (i for i in self.child.all_ids() if i in wanted)

    def copy(self) -> _OnlyDocs:
        return _OnlyDocs(self.child.copy(), self._ids, self.boost)

    def _replacement(self, newchild: Any) -> _OnlyDocs:
        return _OnlyDocs(newchild, self._ids, self.boost)

    def supports_block_quality(self) -> bool:
        return False


class _OnlyDocsSearcher:
    """A segment searcher whose postings skip everything but some documents: a query's
    matcher from it visits just those (a phrase's would otherwise read positions in every
    document with its words until the next match), with the scores of the whole index."""

    def __init__(self, searcher: Searcher, ids: list[int]) -> None:
        self._searcher = searcher
        self._ids = ids

    def postings(self, fieldname: str, text: Any, weighting: Any = None, qf: float = 1) -> Any:
        m = self._searcher.postings(fieldname, text, weighting=weighting, qf=qf)
        return _OnlyDocs(m, self._ids)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._searcher, name)


def _relax_phrases(q: wq.Query) -> wq.Query:
    """Phrases over merged descriptions as all of their words: a family's description holds
    several members' (checking positions in all of them costs more than the rest of the
    search), and the members are matched with the phrase itself afterwards."""
    if isinstance(q, wq.Phrase) and q.fieldname == "fam_description":
        return wq.And([wq.Term(q.fieldname, w, boost=q.boost) for w in q.words])
    return q if q.is_leaf() else q.apply(_relax_phrases)


def _has_negation(q: wq.Query) -> bool:
    if isinstance(q, (wq.Not, wq.AndNot)):
        return True
    return any(_has_negation(c) for c in q.children())


def _edits(a: str, b: str) -> int:
    """Levenshtein distance (short words only: query terms)."""
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def _group(hits: list[tuple[float, dict[str, Any]]]) -> list[Group]:
    groups: dict[str, Group] = {}
    for score, fields in hits:
        doc = json.loads(fields["doc"])
        g = groups.get(fields["family"])
        if g is None:
            g = groups[fields["family"]] = Group(family=fields["family"], kind=fields["kind"])
        g.members.append(
            Member(
                path=doc["path"],
                kind=doc["kind"],
                display_name=doc["display_name"],
                score=score,
                doc=doc,
            )
        )
    return sorted(groups.values(), key=lambda g: (-g.best_score, g.family))


def search(search_root: Path, text: str, **kw: Any) -> SearchResult:
    """Open the current index, run one query, close it."""
    ix = Index(search_root)
    try:
        return ix.search(text, **kw)
    finally:
        ix.close()
