"""The search index's schema, analyzers and document shape. Whoosh is imported only in index/.

One Whoosh document per catalog entry. Everything `mirror search` prints is stored in the
index itself (the `doc` field, JSON), so a search never opens the catalog database: that keeps
SQLAlchemy (~260 ms to import) off the search path.

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
FORMAT_VERSION = 1

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
        # lower-case facet values for --framework / --precision filters
        f_framework=KEYWORD(lowercase=True, commas=True),
        f_precision=KEYWORD(lowercase=True, commas=True),
        doc=STORED(),
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
        v = self.variants
        frameworks = [*v.get("framework", []), *([self.framework] if self.framework else [])]
        precisions = [*v.get("precision", []), *([self.precision] if self.precision else [])]
        return {
            "id": self.id,
            "kind": self.kind,
            "family": self.family,
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
            "doc": json.dumps(self.stored(), separators=(",", ":")),
        }

    def stored(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("description")
        d["versions"] = self.versions[:20]
        d["version_count"] = len(self.versions)
        return d
