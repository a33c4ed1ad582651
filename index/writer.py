"""Writing the search index: full rebuild into a new generation, swapped in atomically, and
incremental updates of changed entries.

Layout under `<root>/search/`:

    current -> gen-000007    a symlink, replaced atomically (rename over it)
    gen-000007/              a Whoosh index; FORMAT holds our format number
    gen-000006/              the previous generation, kept for readers that opened it

Readers resolve `current` once and read a consistent generation; Whoosh's own commits inside a
generation are atomic too (a new TOC is written last), so a search running during a sync sees
either the old or the new state, never a mix. Entry and family documents live in the same
index, so one commit changes both: an update re-writes the whole family document of every
family an entry joins or leaves (from the members' stored text) and deletes emptied ones.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Iterable
from pathlib import Path

from whoosh import index as windex

from index.normalize import extract_variants, family_key
from index.schema import FAMILY_ID_PREFIX, FORMAT_VERSION, IndexDoc, build_schema, family_fields

CURRENT = "current"
FORMAT_FILE = "FORMAT"


def enrich(doc: IndexDoc) -> IndexDoc:
    """Fill in the family key and variant attributes from the names and catalog attributes."""
    _, variants = extract_variants(
        doc.display_name, doc.name, framework=doc.framework, precision=doc.precision
    )
    doc.family = family_key(doc.kind, doc.display_name, doc.name)
    doc.variants = variants.as_dict()
    return doc


def current_dir(search_root: Path) -> Path | None:
    """The generation readers should open, or None if there is no usable index."""
    link = search_root / CURRENT
    try:
        target = search_root / os.readlink(link)
    except OSError:
        return None
    try:
        fmt = int((target / FORMAT_FILE).read_text().strip())
    except (OSError, ValueError):
        return None
    if fmt != FORMAT_VERSION or not windex.exists_in(str(target)):
        return None
    return target


def _generations(search_root: Path) -> list[Path]:
    return sorted(p for p in search_root.glob("gen-*") if p.is_dir())


def rebuild(search_root: Path, docs: Iterable[IndexDoc]) -> int:
    """Build a complete new generation from `docs` and swap it in; return the doc count."""
    search_root.mkdir(parents=True, exist_ok=True)
    gens = _generations(search_root)
    number = int(gens[-1].name[4:]) + 1 if gens else 1
    target = search_root / f"gen-{number:06d}"
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir()
    ix = windex.create_in(str(target), build_schema())
    n = 0
    # the members of a family get adjacent document numbers: matching the members of a few
    # families (index/search.py) then reads a few short stretches of each posting list
    families: dict[str, list[IndexDoc]] = {}
    for doc in docs:
        families.setdefault(enrich(doc).family, []).append(doc)
    # one big segment: the pool of 1 proc avoids merging costs on a 2-core machine
    writer = ix.writer(limitmb=256)
    try:
        for members in families.values():
            for doc in members:
                writer.add_document(**doc.fields())
                n += 1
        for family, members in families.items():
            sources = {doc.id: doc.text() for doc in members}
            writer.add_document(**family_fields(family, members[0].kind, sources))
        writer.commit(optimize=True)
    except BaseException:
        writer.cancel()
        raise
    (target / FORMAT_FILE).write_text(f"{FORMAT_VERSION}\n")
    tmp_link = search_root / f".{CURRENT}.tmp"
    with contextlib.suppress(FileNotFoundError):
        tmp_link.unlink()
    os.symlink(target.name, tmp_link)
    os.replace(tmp_link, search_root / CURRENT)
    for old in _generations(search_root)[:-2]:  # keep the previous one for open readers
        shutil.rmtree(old, ignore_errors=True)
    return n


def update(search_root: Path, changed: Iterable[IndexDoc], removed: Iterable[str]) -> int:
    """Replace changed entries and delete removed ids ("<kind>:<path>") in the current
    generation; return the number of documents written. Raises FileNotFoundError if there is
    no usable index (the caller rebuilds)."""
    target = current_dir(search_root)
    if target is None:
        raise FileNotFoundError(search_root / CURRENT)
    ix = windex.open_dir(str(target))
    writer = ix.writer()
    n = 0
    try:
        with ix.searcher() as s:  # the committed state, before this update
            touched: set[str] = set()  # families an entry leaves or joins
            gone: set[str] = set()
            for doc_id in removed:
                if old := s.document(id=doc_id):
                    touched.add(old["family"])
                gone.add(doc_id)
                writer.delete_by_term("id", doc_id)
            new: dict[str, dict[str, tuple[str, dict[str, str]]]] = {}
            for doc in changed:
                enrich(doc)
                if old := s.document(id=doc.id):
                    touched.add(old["family"])
                touched.add(doc.family)
                gone.add(doc.id)
                new.setdefault(doc.family, {})[doc.id] = (doc.kind, doc.text())
                writer.update_document(**doc.fields())
                n += 1
            for family in sorted(touched):
                fam_id = FAMILY_ID_PREFIX + family
                old_fam = s.document(id=fam_id) or {"fam_src": "{}", "fam_kind": ""}
                kind = old_fam["fam_kind"]  # a family key holds the kind: one per family
                sources = {
                    i: src for i, src in json.loads(old_fam["fam_src"]).items() if i not in gone
                }
                for i, (new_kind, src) in new.get(family, {}).items():
                    sources[i], kind = src, new_kind
                if sources:
                    writer.update_document(**family_fields(family, kind, sources))
                else:
                    writer.delete_by_term("id", fam_id)
        writer.commit()
    except BaseException:
        writer.cancel()
        raise
    return n
