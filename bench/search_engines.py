"""SQLite FTS5 and tantivy versions of the search index, for bench/search.py to compare with
Whoosh (index/) on the same docs and query mix.

Both index what Whoosh's name/path/description/labels/framework/precision fields hold, with the
same letter/digit splitting ("ResNet18" also gives resnet, 18) done here in Python, stemming
(porter / en_stem) and name-favouring weights; both store the same `doc` JSON as Whoosh. A query
fetches the top 8 x limit hits, decodes the stored JSON and groups them by the family key that
index.writer.enrich computed (what index.search did before it ranked family documents; it now
does more per query: every matching member of the chosen families is listed).

Also the cold-process probe:  python bench/search_engines.py fts5|tantivy DIR QUERY
(imports only what a real search command would).
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from index.schema import IndexDoc

TEXT_FIELDS = ("name", "path", "description", "labels", "framework", "precision")
BOOSTS = {"name": 8.0, "path": 3.0, "description": 1.0, "labels": 1.5, "framework": 1.5,
          "precision": 1.5}
_TOK = re.compile(r"[^\W_]+")
_PARTS = re.compile(r"[A-Za-z]+|[0-9]+")
Groups = list[tuple[str, list[dict[str, Any]]]]


def expand(text: str) -> str:
    """Append the letter and digit runs of mixed tokens, as index.schema.SplitAlnumFilter."""
    extra = [p for t in _TOK.findall(text) if len(ps := _PARTS.findall(t)) > 1 for p in ps]
    return f"{text} {' '.join(extra)}" if extra else text


def _row(doc: IndexDoc) -> tuple[dict[str, str], dict[str, Any]]:
    from index.writer import enrich

    f = enrich(doc).fields()  # same family key, stored JSON and name text as Whoosh gets
    text = {k: expand(f[k]) for k in ("name", "path", "labels")}
    text |= {"description": f["description"], "framework": doc.framework or "",
             "precision": doc.precision or ""}
    meta = {"id": f["id"], "kind": doc.kind, "family": f["family"], "doc": f["doc"],
            "fw": (doc.framework or "").lower(), "prec": (doc.precision or "").lower()}
    return text, meta


def _group(hits: Iterable[tuple[str, str]], limit: int) -> Groups:
    groups: dict[str, list[dict[str, Any]]] = {}
    for family, doc in hits:
        members = groups.get(family)
        if members is None:
            if len(groups) == limit:
                continue
            members = groups[family] = []
        members.append(json.loads(doc))
    return list(groups.items())


# -- SQLite FTS5 --------------------------------------------------------------------------------
FTS_DDL = (
    "CREATE TABLE docs(rowid INTEGER PRIMARY KEY, id TEXT UNIQUE, kind TEXT, family TEXT,"
    " fw TEXT, prec TEXT, doc TEXT)",
    "CREATE VIRTUAL TABLE fts USING fts5(" + ", ".join(TEXT_FIELDS)
    + ", tokenize='porter unicode61')",
)
_FTS_COLS = ", ".join(TEXT_FIELDS)
_FTS_INS = f"INSERT INTO fts(rowid, {_FTS_COLS}) VALUES (?, {', '.join('?' * 6)})"
_DOC_INS = "INSERT INTO docs VALUES (?, ?, ?, ?, ?, ?, ?)"


def fts_build(path: Path, docs: Iterable[IndexDoc]) -> int:
    import sqlite3

    con = sqlite3.connect(path)
    n = 0
    with con:
        for stmt in FTS_DDL:
            con.execute(stmt)
        for n, doc in enumerate(docs, 1):
            text, m = _row(doc)
            con.execute(_DOC_INS, (n, m["id"], m["kind"], m["family"], m["fw"], m["prec"],
                                   m["doc"]))
            con.execute(_FTS_INS, (n, *(text[k] for k in TEXT_FIELDS)))
        con.execute("INSERT INTO fts(fts) VALUES ('optimize')")
    con.close()
    return n


def fts_update(path: Path, changed: Iterable[IndexDoc]) -> int:
    import sqlite3

    con = sqlite3.connect(path)
    n = 0
    with con:
        for doc in changed:
            text, m = _row(doc)
            (rowid,) = con.execute("SELECT rowid FROM docs WHERE id = ?", (m["id"],)).fetchone()
            con.execute("DELETE FROM fts WHERE rowid = ?", (rowid,))
            con.execute("DELETE FROM docs WHERE rowid = ?", (rowid,))
            con.execute(_DOC_INS, (rowid, m["id"], m["kind"], m["family"], m["fw"], m["prec"],
                                   m["doc"]))
            con.execute(_FTS_INS, (rowid, *(text[k] for k in TEXT_FIELDS)))
            n += 1
    con.close()
    return n


def fts_match(text: str) -> str:
    """User words -> an FTS5 query: every word quoted (no syntax surprises), ANDed; "phrases"
    stay phrases."""
    out = []
    for part in re.findall(r'"[^"]*"|\S+', text):
        words = _TOK.findall(part)
        if part.startswith('"') and words:
            out.append('"' + " ".join(words) + '"')
        else:
            out.extend(f'"{w}"' for w in words)
    return " AND ".join(out)


def fts_search(con: Any, text: str, kind: str | None = None, framework: str | None = None,
               precision: str | None = None, limit: int = 20) -> Groups:
    weights = ", ".join(str(BOOSTS[k]) for k in TEXT_FIELDS)
    sql = ("SELECT d.family, d.doc FROM fts JOIN docs d ON d.rowid = fts.rowid "
           "WHERE fts MATCH ?")
    args: list[Any] = [fts_match(text)]
    for col, value in (("kind", kind), ("fw", framework), ("prec", precision)):
        if value:
            sql += f" AND d.{col} = ?"
            args.append(value.lower())
    sql += f" ORDER BY bm25(fts, {weights}) LIMIT ?"
    args.append(limit * 8)
    return _group(con.execute(sql, args), limit)


def fts_open(path: Path) -> Any:
    import sqlite3

    return sqlite3.connect(path)


# -- tantivy ------------------------------------------------------------------------------------
def _tv_schema() -> Any:
    import tantivy

    sb = tantivy.SchemaBuilder()
    for f in TEXT_FIELDS:
        sb.add_text_field(f, tokenizer_name="en_stem")
    for f in ("id", "kind", "fw", "prec"):
        sb.add_text_field(f, tokenizer_name="raw")
    sb.add_text_field("family", stored=True, tokenizer_name="raw")
    sb.add_bytes_field("doc", stored=True, indexed=False)
    return sb.build()


def _tv_doc(doc: IndexDoc) -> Any:
    import tantivy

    text, m = _row(doc)
    return tantivy.Document(**text, id=m["id"], kind=m["kind"], fw=m["fw"], prec=m["prec"],
                            family=m["family"], doc=[m["doc"].encode()])


def tv_build(path: Path, docs: Iterable[IndexDoc]) -> int:
    import tantivy

    path.mkdir(parents=True, exist_ok=True)
    ix = tantivy.Index(_tv_schema(), path=str(path))
    writer = ix.writer(256_000_000, 1)  # one indexing thread, like Whoosh
    n = 0
    for doc in docs:
        writer.add_document(_tv_doc(doc))
        n += 1
    writer.commit()
    writer.wait_merging_threads()
    return n


def tv_update(path: Path, changed: Iterable[IndexDoc]) -> int:
    import tantivy

    ix = tantivy.Index.open(str(path))
    writer = ix.writer(64_000_000, 1)
    n = 0
    for doc in changed:
        writer.delete_documents_by_term("id", doc.id)
        writer.add_document(_tv_doc(doc))
        n += 1
    writer.commit()
    writer.wait_merging_threads()
    return n


def tv_open(path: Path) -> Any:
    import tantivy

    ix = tantivy.Index.open(str(path))
    return ix, ix.searcher()


def tv_search(handle: Any, text: str, kind: str | None = None, framework: str | None = None,
              precision: str | None = None, limit: int = 20) -> Groups:
    import tantivy

    ix, searcher = handle
    q = ix.parse_query(text, list(TEXT_FIELDS), field_boosts=BOOSTS,
                       conjunction_by_default=True)
    must = [(tantivy.Occur.Must, q)]
    for field, value in (("kind", kind), ("fw", framework), ("prec", precision)):
        if value:
            term = tantivy.Query.term_query(ix.schema, field, value.lower())
            must.append((tantivy.Occur.Must, tantivy.Query.const_score_query(term, 0.0)))
    if len(must) > 1:
        q = tantivy.Query.boolean_query(must)
    hits = searcher.search(q, limit * 8, count=False).hits

    def rows() -> Iterable[tuple[str, str]]:
        for _, addr in hits:
            d = searcher.doc(addr)
            yield d.get_first("family"), d.get_first("doc").decode()

    return _group(rows(), limit)


if __name__ == "__main__":  # cold-process probe
    engine, where, query = sys.argv[1], Path(sys.argv[2]), " ".join(sys.argv[3:])
    if engine == "fts5":
        res = fts_search(fts_open(where), query)
    else:
        res = tv_search(tv_open(where), query)
    json.dump({"query": query, "groups": [f for f, _ in res]}, sys.stdout)
