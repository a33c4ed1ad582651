"""Writing the search index: full rebuild into a new generation, swapped in atomically, and
incremental updates of changed entries.

Layout under `<root>/search/`:

    current -> gen-000007    a symlink, replaced atomically (rename over it)
    gen-000007/              a Whoosh index; FORMAT holds our format number
    gen-000006/              the previous generation, kept for readers that opened it

Readers resolve `current` once and read a consistent generation; Whoosh's own commits inside a
generation are atomic too (a new TOC is written last), so a search running during a sync sees
either the old or the new state, never a mix.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterable
from pathlib import Path

from whoosh import index as windex

from index.normalize import extract_variants, family_key
from index.schema import FORMAT_VERSION, IndexDoc, build_schema

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
    # one big segment: the pool of 1 proc avoids merging costs on a 2-core machine
    writer = ix.writer(limitmb=256)
    try:
        for doc in docs:
            writer.add_document(**enrich(doc).fields())
            n += 1
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
        for doc_id in removed:
            writer.delete_by_term("id", doc_id)
        for doc in changed:
            writer.update_document(**enrich(doc).fields())
            n += 1
        writer.commit()
    except BaseException:
        writer.cancel()
        raise
    return n
