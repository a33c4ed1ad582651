"""The search index's schema, analyzers and document shape. Whoosh is imported only in index/.

One Whoosh document per catalog entry, plus one per family (all entries with one family key,
index/normalize.py). The family document holds the merged text of its members in two fields,
`fam_description` and `fam_name` (all the other fields: a variant word is usually in the
name, the path and the framework/precision at once, and each field searched costs a posting
list per word per document), so a broad query scores ~7x fewer documents, and fewer postings
each, to rank families; the members of the chosen families are then matched on the entry
documents (index/search.py). An entry's `text` field likewise holds all its fields but the
description: a query word without a field name is looked for in `text` and `description`
(`name:x` still searches names only). Entry and family documents have no field in common
but `id`, so a query over one kind of field only ever matches that kind of document.

Everything `mirror search` prints is stored in the index itself (the `doc` field, JSON), so a
search never opens the catalog database: that keeps SQLAlchemy (~260 ms to import) off the
search path. A family document also stores its members' searchable text (`fam_src`), from
which an incremental update re-writes it.

Analysis: names are split on anything that is not a letter or digit, and every token with a
letter/digit boundary is also emitted in parts, so "BERT-Large(fine-tuning)" gives bert, large,
fine, tuning; "ResNet18" gives resnet18, resnet, 18 (found by `resnet18` and `resnet 18`);
"seqLen=128" gives seqlen, 128; "V100-16G" gives v100, v, 100, 16g, 16, g. Prose is stemmed.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

from whoosh.analysis import (
    Filter,
    LowercaseFilter,
    RegexTokenizer,
    StemFilter,
    StopFilter,
    Token,
)
from whoosh.fields import ID, KEYWORD, STORED, TEXT, Schema

# Bump when the schema or analysis changes: an index of another format is rebuilt from the DB.
FORMAT_VERSION = 4

_PARTS = re.compile(r"[a-z]+|[0-9]+")


class SplitAlnumFilter(Filter):  # type: ignore[misc]
    """Also emit the letter and digit runs of mixed tokens ("resnet18" -> resnet, 18)."""

    def __call__(self, tokens: Iterator[Token]) -> Iterator[Token]:
        for t in tokens:
            text = t.text
            yield t
            if getattr(t, "mode", "") == "query":
                # the index holds both "int8" and "int", "8": splitting the query too would
                # AND three posting lists per field for no gain (bench/search.py)
                continue
            parts = _PARTS.findall(text)
            if len(parts) > 1:
                for part in parts:
                    t.text = part
                    yield t
                t.text = text


# few stop words: "for", "with" and friends carry nothing in NGC names; digits must survive
STOP = frozenset({"a", "an", "and", "the", "for", "with", "of", "in", "on", "to", "using", "by"})


def name_analyzer() -> Any:
    return (
        RegexTokenizer(r"[^\W_]+")
        | LowercaseFilter()
        | SplitAlnumFilter()
        | StopFilter(stoplist=STOP, minsize=1)
        | StemFilter()
    )


def prose_analyzer() -> Any:
    return (
        RegexTokenizer(r"[^\W_]+")
        | LowercaseFilter()
        | SplitAlnumFilter()
        | StopFilter(minsize=1)
        | StemFilter()
    )


def build_schema() -> Schema:
    names = name_analyzer()
    return Schema(
        id=ID(stored=True, unique=True),  # "<kind>:<path>"
        kind=ID(stored=True),
        family=ID(stored=True),
        name=TEXT(analyzer=names, field_boost=8.0, spelling=True),
        path=TEXT(analyzer=names, field_boost=3.0),
        description=TEXT(analyzer=prose_analyzer()),
        labels=TEXT(analyzer=names, field_boost=1.5),
        framework=TEXT(analyzer=names, field_boost=1.5),
        precision=TEXT(analyzer=names, field_boost=1.5),
        application=TEXT(analyzer=names, field_boost=1.5),
        versions=TEXT(analyzer=names),
        # what a query without a field name searches (with description): all of the above in
        # one field, one posting list per word instead of up to seven (index/search.py)
        text=TEXT(analyzer=names, field_boost=8.0),
        # lower-case facet values for --framework / --precision filters
        f_framework=KEYWORD(lowercase=True, commas=True),
        f_precision=KEYWORD(lowercase=True, commas=True),
        doc=STORED(),
        # family documents (id "#<family key>"); the key is read from its column (cheap)
        fam_family=ID(stored=True, sortable=True),
        fam_kind=ID(stored=True),
        # {entry id: its searchable text}: an update re-builds the document from it
        fam_src=STORED(),
        fam_name=TEXT(analyzer=names, field_boost=8.0),  # every entry field but description
        fam_description=TEXT(analyzer=prose_analyzer()),
        fam_f_framework=KEYWORD(lowercase=True, commas=True),
        fam_f_precision=KEYWORD(lowercase=True, commas=True),
    )


SEARCH_FIELDS = (
    "name",
    "path",
    "description",
    "labels",
    "framework",
    "precision",
    "application",
    "versions",
)
# the fields a query word without a field name is looked for in ("name:x" still finds x in
# names only)
DEFAULT_FIELDS = ("text", "description")

# the family document's field holding the merged text of each entry field
FAMILY_FIELD = {
    "name": "fam_name",
    "path": "fam_name",
    "description": "fam_description",
    "labels": "fam_name",
    "framework": "fam_name",
    "precision": "fam_name",
    "application": "fam_name",
    "versions": "fam_name",
    "kind": "fam_kind",
    "family": "fam_family",
}
FAMILY_SEARCH_FIELDS = ("fam_name", "fam_description")
FAMILY_ID_PREFIX = "#"  # entry ids are "<kind>:<path>"


def family_fields(family: str, kind: str, sources: dict[str, dict[str, str]]) -> dict[str, Any]:
    """The Whoosh fields of a family document, from its members' searchable text by entry id
    (IndexDoc.text())."""
    members = [sources[i] for i in sorted(sources)]
    merged: dict[str, list[str]] = {}
    for m in members:
        for fname in SEARCH_FIELDS:
            bucket = merged.setdefault(FAMILY_FIELD[fname], [])
            if m[fname] and m[fname] not in bucket:
                bucket.append(m[fname])
    facets: dict[str, list[str]] = {"f_framework": [], "f_precision": []}
    for m in members:
        for facet, bucket in facets.items():
            bucket.extend(v for v in m[facet].split(",") if v and v not in bucket)
    return {
        "id": FAMILY_ID_PREFIX + family,
        "fam_family": family,
        "fam_kind": kind,
        **{fname: "\n".join(texts) for fname, texts in merged.items()},
        "fam_f_framework": ",".join(facets["f_framework"]),
        "fam_f_precision": ",".join(facets["f_precision"]),
        "fam_src": json.dumps(sources, separators=(",", ":"), sort_keys=True),
    }


@dataclass
class IndexDoc:
    """What the index knows about one entry (built from the catalog by mirror.indexing)."""

    kind: str
    path: str
    display_name: str
    name: str = ""
    description: str = ""
    labels: list[str] = field(default_factory=list)
    framework: str | None = None
    precision: str | None = None
    application: str | None = None
    latest_version: str | None = None
    versions: list[str] = field(default_factory=list)
    updated: str | None = None
    mirrored: bool = False  # every file of some version is in the local store
    family: str = ""
    variants: dict[str, list[str]] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return f"{self.kind}:{self.path}"

    def fields(self) -> dict[str, Any]:
        """The Whoosh fields for this entry (family and variants must be filled in)."""
        return {
            "id": self.id,
            "kind": self.kind,
            "family": self.family,
            **(text := self.text()),
            "text": "\n".join(text[f] for f in SEARCH_FIELDS if f != "description" and text[f]),
            "doc": json.dumps(self.stored(), separators=(",", ":")),
        }

    def text(self) -> dict[str, str]:
        """The searchable text fields (and facets) of this entry."""
        v = self.variants
        frameworks = [*v.get("framework", []), *([self.framework] if self.framework else [])]
        precisions = [*v.get("precision", []), *([self.precision] if self.precision else [])]
        return {
            "name": f"{self.display_name} {self.name}",
            "path": self.path,
            "description": self.description,
            "labels": " ".join(self.labels),
            "framework": " ".join(frameworks),
            "precision": " ".join(precisions),
            "application": self.application or "",
            "versions": " ".join(self.versions[:50]),
            "f_framework": ",".join(frameworks),
            "f_precision": ",".join(precisions),
        }

    def stored(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("description")
        d["versions"] = self.versions[:20]
        d["version_count"] = len(self.versions)
        return d
