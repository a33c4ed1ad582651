"""Helpers shared by the tests/test_bundle_*.py files (this module holds no tests).

A *mirror* here is a MIRROR_HOME directory. The source is filled by an in-process `run_sync`
against the fake NGC server; targets are filled only by `mirror import`. Catalogs are compared
through a normalized dump read with the stdlib sqlite3 module (independent of the ORM), and a
whole mirror's state (blobs, tmp/, mirror.db bytes and SQL dump) can be frozen and compared.

`mirror()` runs a real `python -m mirror` process; `mirror_inproc()` runs the same entry point
(`mirror.cli.main`: argument parsing, error-to-exit-code mapping, messages) in this process,
which keeps the large refusal matrices fast. Kill, lock and environment tests use real ones.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import random
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mirror.fakengc import FakeEntry, FakeFile, FakeNGC, FakeVersion
from mirror.sync import run_sync
from tests.conftest import cli_env, make_settings, run_mirror

NOWHERE = "http://127.0.0.1:9"  # export/import never talk to upstream
MiB = 1024 * 1024


def det_bytes(n: int, seed: object) -> bytes:
    """n pseudo-random bytes, the same for the same seed (hypothesis must replay examples)."""
    return random.Random(str(seed)).randbytes(n)


def big_entry(name: str, size: int, seed: object = None, version: str = "1.0") -> FakeEntry:
    """A model with one file of `size` bytes (so tar bundles span several 1 MiB parts)."""
    return FakeEntry(
        kind="model",
        org="nvidia",
        team=None,
        name=name,
        display_name=f"Big {name}",
        updated="2024-01-01T00:00:00.000Z",
        versions=[
            FakeVersion(version, files=[FakeFile("w/big.bin", det_bytes(size, seed or name))])
        ],
    )


def sync(home: Path, fake: FakeNGC, **kw: Any) -> None:
    report = run_sync(make_settings(home, fake.url, **kw))
    assert report.outcome == "ok", report.failures


def env(home: Path, **extra: str) -> dict[str, str]:
    return cli_env(home, NOWHERE, **extra)


def mirror(home: Path, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
    """Run `mirror ARGS` as a real process with MIRROR_HOME=home."""
    return run_mirror(list(args), env(home, **extra))


def mirror_inproc(home: Path, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
    """`mirror ARGS` through the same entry point (`mirror.cli.main`: parsing, error to exit
    code mapping, messages) but inside this process: ~0.05 s instead of ~0.6 s of interpreter
    and import start-up. Used for the large refusal matrices; everything about processes
    (kill -9, locks, the environment of a real run) uses `mirror()`."""
    import io
    import os
    import sys

    from mirror.cli import main

    saved_env = dict(os.environ)
    saved_out, saved_err = sys.stdout, sys.stderr
    out, err = io.StringIO(), io.StringIO()
    os.environ.update(env(home, **extra))
    sys.stdout, sys.stderr = out, err
    try:
        main(list(args))
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        sys.stdout, sys.stderr = saved_out, saved_err
        os.environ.clear()
        os.environ.update(saved_env)
    return subprocess.CompletedProcess(["mirror", *args], code, out.getvalue(), err.getvalue())


def ok(proc: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    assert "Traceback" not in proc.stderr
    return proc


def export(home: Path, dest: Path, *args: str, real: bool = False) -> dict[str, Any]:
    """`mirror export DEST ARGS --json` (in-process unless `real`): the JSON report."""
    run = mirror if real else mirror_inproc
    out: dict[str, Any] = json.loads(ok(run(home, "export", str(dest), *args, "--json")).stdout)
    return out


def import_(home: Path, src: Path, *args: str, real: bool = False) -> dict[str, Any]:
    """`mirror import SRC ARGS --json` (in-process unless `real`): the JSON report."""
    run = mirror if real else mirror_inproc
    out: dict[str, Any] = json.loads(ok(run(home, "import", str(src), *args, "--json")).stdout)
    return out


def manifest(bundle: Path) -> dict[str, Any]:
    out: dict[str, Any] = json.loads((bundle / "mirror-bundle.json").read_bytes())
    return out


# -- the catalog, read with plain sqlite3 --------------------------------------------------------
@contextlib.contextmanager
def _db(path: Path) -> Iterator[sqlite3.Connection]:
    conn = sqlite3.connect(path)
    try:
        yield conn
    finally:
        conn.close()


ENTRY_COLS = (
    "org, team, name, display_name, description, short_description, labels, framework, "
    "precision, application, latest_version, created, updated"
)


def catalog_dump(home: Path) -> dict[str, Any]:
    """Live entries with their live versions and files, plus the keys of removed entries.

    Ids, snapshot numbers and sync stamps are left out: they are local to each mirror.
    """
    live: dict[str, Any] = {}
    removed: set[tuple[str, str]] = set()
    with _db(home / "mirror.db") as c:
        entries = c.execute(
            f"SELECT id, kind, path, removed_snapshot_id IS NOT NULL, {ENTRY_COLS} FROM entries"
        ).fetchall()
        for eid, kind, path, is_removed, *fields in entries:
            if is_removed:
                removed.add((kind, path))
                continue
            rec = dict(zip([f.strip() for f in ENTRY_COLS.split(",")], fields, strict=True))
            rec["labels"] = json.loads(rec["labels"]) if rec["labels"] else []
            versions = {}
            for vid, ver, *vf in c.execute(
                "SELECT id, version, status, size, file_count, created, updated, description, "
                "files_listed FROM versions WHERE entry_id = ? AND removed_snapshot_id IS NULL",
                (eid,),
            ):
                files = sorted(
                    c.execute(
                        "SELECT path, size, sha256, blob_digest FROM files WHERE version_id = ?",
                        (vid,),
                    ).fetchall()
                )
                versions[ver] = {"fields": tuple(vf), "files": files}
            rec["versions"] = versions
            live[f"{kind}:{path}"] = rec
    return {"live": live, "removed": removed}


def referenced_blobs(home: Path) -> set[str]:
    """Blob digests that live files of live entries point at."""
    with _db(home / "mirror.db") as c:
        rows = c.execute(
            "SELECT DISTINCT f.blob_digest FROM files f JOIN versions v ON f.version_id = v.id "
            "JOIN entries e ON v.entry_id = e.id WHERE f.blob_digest IS NOT NULL "
            "AND v.removed_snapshot_id IS NULL AND e.removed_snapshot_id IS NULL"
        ).fetchall()
    return {r[0] for r in rows}


def table_count(home: Path, table: str) -> int:
    with _db(home / "mirror.db") as c:
        return int(c.execute(f"SELECT count(*) FROM {table}").fetchone()[0])


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(MiB):
            h.update(chunk)
    return h.hexdigest()


def store_blobs(home: Path) -> dict[str, str]:
    """blobs/sha256: name -> sha256 of the content."""
    d = home / "blobs" / "sha256"
    return {p.name: sha256_file(p) for p in d.iterdir()} if d.is_dir() else {}


def assert_same_catalog(
    source: Path, target: Path, *, seen: set[tuple[str, str]] | None = None
) -> None:
    """The target's live catalog equals the source's, and it holds every referenced blob.

    `seen`: (kind, path) of every entry the target ever had live (a chain of bundles); those
    the source removed since must be marked removed at the target, too.
    """
    src, tgt = catalog_dump(source), catalog_dump(target)
    assert sorted(tgt["live"]) == sorted(src["live"])
    for key, rec in src["live"].items():
        assert tgt["live"][key] == rec, key
    # a fresh target never heard of removed entries; a chained one marks them removed
    assert tgt["removed"] <= src["removed"]
    if seen is not None:
        assert tgt["removed"] == src["removed"] & seen
    refs = referenced_blobs(source)
    assert referenced_blobs(target) == refs
    held = store_blobs(target)
    for digest in refs:
        hexd = digest.removeprefix("sha256:")
        assert held.get(hexd) == hexd, f"{digest} missing or wrong in the target store"


def live_keys(home: Path) -> set[tuple[str, str]]:
    return {tuple(k.split(":", 1)) for k in catalog_dump(home)["live"]}  # type: ignore[misc]


# -- freezing a mirror's on-disk state -----------------------------------------------------------
def db_dump(home: Path) -> str:
    with _db(home / "mirror.db") as c:
        return "\n".join(c.iterdump())


def tree(root: Path) -> dict[str, str]:
    """Relative path -> sha256 of every file under root (dirs as '<dir>')."""
    if not root.exists():
        return {}
    out = {}
    for p in sorted(root.rglob("*")):
        out[str(p.relative_to(root))] = "<dir>" if p.is_dir() else sha256_file(p)
    return out


def frozen(home: Path) -> dict[str, Any]:
    """Everything a failed import must leave alone: store, staging area, receipts, DB."""
    db_bytes = (home / "mirror.db").read_bytes()  # before any reader opens it
    return {
        "blobs": tree(home / "blobs"),
        "tmp": tree(home / "tmp"),
        "receipts": tree(home / "receipts"),
        "search": tree(home / "search"),
        "db_sha256": hashlib.sha256(db_bytes).hexdigest(),
        "db_dump": db_dump(home),
    }


def assert_unchanged(before: dict[str, Any], home: Path) -> None:
    after = frozen(home)
    for key in ("blobs", "tmp", "receipts", "search", "db_dump", "db_sha256"):
        assert after[key] == before[key], f"{key} changed by a refused import"
