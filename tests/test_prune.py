"""`mirror prune`: the store follows the config (`latest` N, deselection), never losing an
entry's old bytes before its replacement is whole, and rows before bytes."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from mirror.config import Selection
from mirror.fakengc import FakeCatalog, FakeEntry, FakeFile, FakeNGC, FakeVersion, Fault
from mirror.prune import HeldEntry, HeldVersion, decide, wanted_versions
from tests.conftest import cli_env, run_mirror, write_config

SHARED = b"tokenizer vocabulary\n" * 500  # the same file in every version: stored once


def _version(vid: str, day: int, payload: bytes) -> FakeVersion:
    when = f"2026-0{day}-01T00:00:00.000Z"
    return FakeVersion(
        vid,
        created=when,
        updated=when,
        files=[FakeFile("weights.bin", content=payload), FakeFile("vocab.txt", content=SHARED)],
    )


def _catalog() -> tuple[FakeCatalog, FakeEntry]:
    cat = FakeCatalog()
    entry = cat.add(
        FakeEntry(
            kind="model",
            org="nvidia",
            team=None,
            name="bert",
            display_name="BERT",
            updated="2026-01-01T00:00:00.000Z",
            versions=[_version("1.0", 1, b"old weights " * 4000)],
        )
    )
    cat.add(
        FakeEntry(
            kind="model",
            org="other",
            team=None,
            name="unselected",
            updated="2026-01-01T00:00:00.000Z",
            versions=[_version("1.0", 1, b"never fetched")],
        )
    )
    return cat, entry


def _blob(home: Path, data: bytes) -> Path:
    return home / "blobs" / "sha256" / hashlib.sha256(data).hexdigest()


def _json(done: object) -> dict[str, object]:
    assert getattr(done, "returncode", None) == 0, getattr(done, "stderr", "")
    return json.loads(done.stdout)  # type: ignore[attr-defined, no-any-return]


def test_prune_releases_the_version_that_left_the_window(home: Path, tmp_path: Path) -> None:
    cat, bert = _catalog()
    old, new = b"old weights " * 4000, b"new weights " * 4000
    cfg = write_config(tmp_path / "m.toml", 'pattern = "nvidia/*"\nlatest = 1\n')
    with FakeNGC(cat) as fake:
        env = cli_env(home, fake.url)
        args = ["--config", str(cfg)]
        assert run_mirror([*args, "sync"], env).returncode == 0
        cat.add_version(bert, _version("2.0", 2, new))
        assert run_mirror([*args, "sync"], env).returncode == 0
        assert _blob(home, old).exists() and _blob(home, new).exists()  # sync alone keeps 1.0

        dry = _json(run_mirror([*args, "prune", "--dry-run", "--json"], env))
        assert dry["released"] == ["model nvidia/bert:1.0"] and dry["dry_run"] is True
        assert dry["blobs_freed"] == 1 and dry["bytes_freed"] == len(old)
        assert _blob(home, old).exists()  # a dry run changes nothing
        assert _json(run_mirror([*args, "prune", "--dry-run", "--json"], env)) == dry

        partial = home / "tmp" / f"sha256-{'e' * 64}.partial"  # a killed sync's, to resume
        partial.write_bytes(b"half a download")
        done = _json(run_mirror([*args, "prune", "--json"], env))
        assert done["released"] == ["model nvidia/bert:1.0"] and done["files_released"] == 2
        assert partial.read_bytes() == b"half a download"
        partial.unlink()
        assert done["blobs_freed"] == 1 and done["bytes_freed"] == len(old)
        assert not _blob(home, old).exists()
        assert _blob(home, new).exists() and _blob(home, SHARED).exists()  # 2.0 still uses it
        verified = _json(run_mirror(["verify", "--json"], env))
        assert verified["clean"] is True

        # the catalog still knows 1.0, as not held here
        shown = _json(run_mirror(["show", "nvidia/bert", "--json"], env))
        held = {v["version"]: v for v in shown["versions"]}
        assert set(held) == {"1.0", "2.0"}
        assert held["2.0"]["mirrored"] is True and held["1.0"]["mirrored"] is False

        # nothing left to release; the next sync does not fetch 1.0 back
        again = _json(run_mirror([*args, "prune", "--json"], env))
        assert again["released"] == [] and again["blobs_freed"] == 0
        fake.clear_requests()
        synced = _json(run_mirror([*args, "sync", "--json"], env))
        assert synced["outcome"] == "ok" and synced["files_fetched"] == 0
        status = _json(run_mirror(["status", "--json"], env))
        assert "prune" in json.dumps(status)


def test_old_bytes_stay_until_the_new_version_is_whole(home: Path, tmp_path: Path) -> None:
    cat, bert = _catalog()
    old = b"old weights " * 4000
    cfg = write_config(tmp_path / "m.toml", 'pattern = "nvidia/*"\nlatest = 1\n')
    with FakeNGC(cat) as fake:
        env = cli_env(home, fake.url)
        args = ["--config", str(cfg)]
        assert run_mirror([*args, "sync"], env).returncode == 0
        cat.add_version(bert, _version("2.0", 2, b"new weights that never arrive " * 100))
        fake.add_fault(Fault(r"^/_dl/.*2\.0.*weights", corrupt=True, times=None))
        assert run_mirror([*args, "sync"], env).returncode == 6  # partial
        kept = _json(run_mirror([*args, "prune", "--json"], env))
        assert kept["released"] == [] and kept["held_back"] == ["model nvidia/bert"]
        assert _blob(home, old).exists()
        text = run_mirror([*args, "prune"], env)
        assert text.returncode == 0 and "kept     model nvidia/bert" in text.stdout

        fake.clear_faults()
        assert run_mirror([*args, "sync"], env).returncode == 0
        done = _json(run_mirror([*args, "prune", "--json"], env))
        assert done["released"] == ["model nvidia/bert:1.0"] and not _blob(home, old).exists()


def test_deselected_entries_are_released_and_an_empty_config_is_refused(
    home: Path, tmp_path: Path
) -> None:
    cat, _ = _catalog()
    wide = write_config(tmp_path / "wide.toml", 'pattern = "*"\nlatest = 1\n')
    narrow = write_config(tmp_path / "narrow.toml", 'pattern = "nvidia/*"\nlatest = 1\n')
    nothing = tmp_path / "nothing.toml"
    nothing.write_text("[ngc]\n")
    with FakeNGC(cat) as fake:
        env = cli_env(home, fake.url)
        assert run_mirror(["--config", str(wide), "sync"], env).returncode == 0
        assert _blob(home, b"never fetched").exists()
        refused = run_mirror(["--config", str(nothing), "prune"], env)
        assert refused.returncode == 2 and "selects nothing" in refused.stderr
        assert _blob(home, b"never fetched").exists()
        done = _json(run_mirror(["--config", str(narrow), "prune", "--json"], env))
        assert done["released"] == ["model other/unselected:1.0"]
        assert not _blob(home, b"never fetched").exists()
        assert _blob(home, SHARED).exists()  # nvidia/bert:1.0 holds the same vocabulary


# -- the decision itself, property-tested ---------------------------------------------------
SELECTIONS = (Selection(pattern="nvidia/*", latest=2), Selection(pattern="*/keep*", latest=None))


@st.composite
def held_entries(draw: st.DrawFn) -> list[HeldEntry]:
    entries = []
    paths = ["nvidia/a", "nvidia/keep", "x/keep", "x/b", "r.io/img", "gone.io/keep"]
    names = draw(st.lists(st.sampled_from(paths)))
    vid = 0
    for path in dict.fromkeys(names):
        versions = []
        for n in range(draw(st.integers(0, 5))):
            files = draw(st.integers(0, 3))
            vid += 1
            versions.append(
                HeldVersion(
                    id=vid,
                    version=f"{n}.0",
                    status=draw(st.sampled_from(["UPLOAD_COMPLETE", "UPLOAD_PENDING"])),
                    size=draw(st.sampled_from([None, 10])),
                    created=f"2026-01-{draw(st.integers(1, 28)):02d}",
                    removed=draw(st.booleans()),
                    listed=draw(st.booleans()),
                    files=files,
                    stored=draw(st.integers(0, files)),
                )
            )
        kind = "image" if "." in path else "model"
        entries.append(HeldEntry(kind, path, draw(st.booleans()), tuple(versions)))
    return entries


def _after(entries: list[HeldEntry], released: set[int]) -> list[HeldEntry]:
    return [
        HeldEntry(
            e.kind,
            e.path,
            e.removed,
            tuple(
                HeldVersion(**{**v.__dict__, "stored": 0}) if v.id in released else v
                for v in e.versions
            ),
        )
        for e in entries
    ]


@given(held_entries())
def test_decide_releases_only_unwanted_bytes_and_only_when_the_wanted_are_whole(
    entries: list[HeldEntry],
) -> None:
    registry = {"r.io/img"}  # gone.io/keep: a [[registry]] repository no longer configured
    decision = decide(entries, SELECTIONS, registry)
    released = {v.id for _, v in decision.release}
    for entry in entries:
        wanted = wanted_versions(entry, SELECTIONS, registry)
        if entry.path == "gone.io/keep" or entry.removed:
            assert wanted == set()  # matches "*/keep*", but nothing configures it any more
        if entry.path == "r.io/img" and not entry.removed:
            assert wanted == {v.version for v in entry.versions if not v.removed}
        mine = {v.id for v in entry.versions} & released
        for v in entry.versions:
            if v.id in mine:
                assert v.stored > 0 and v.version not in wanted
        live = {v.version: v for v in entry.versions if not v.removed}
        whole = all(
            w in live and live[w].listed and live[w].files == live[w].stored for w in wanted
        )
        extra = [v for v in entry.versions if v.stored and v.version not in wanted]
        if extra:
            # either everything extra goes, or (a wanted version lacks bytes) nothing does
            assert (mine == {v.id for v in extra}) == whole
            assert (f"{entry.kind} {entry.path}" in decision.held_back) == (not whole)
    # applying the decision leaves nothing more to release: prune is idempotent
    assert decide(_after(entries, released), SELECTIONS, registry).release == []


def test_a_site_keeps_what_its_source_pruned(tmp_path: Path) -> None:
    """A bundle from a mirror that pruned 1.0 updates the entry at the site without taking
    away the 1.0 bytes the site has: a site's retention is its own `mirror prune`'s."""
    from tests.test_bundle_support import export, import_, mirror, sync

    src, site = tmp_path / "src", tmp_path / "site"
    cat, bert = _catalog()
    old = b"old weights " * 4000
    select = (Selection(pattern="nvidia/*", latest=1),)
    with FakeNGC(cat) as fake:
        sync(src, fake, select=select)
        export(src, tmp_path / "b1", "--site", "lab")
        receipt = import_(site, tmp_path / "b1")["receipt"]
        cat.add_version(bert, _version("2.0", 2, b"new weights " * 4000))
        sync(src, fake, select=select)
    cfg = write_config(tmp_path / "m.toml", 'pattern = "nvidia/*"\nlatest = 1\n')
    pruned = _json(mirror(src, "--config", str(cfg), "prune", "--json"))
    assert pruned["released"] == ["model nvidia/bert:1.0"] and not _blob(src, old).exists()

    export(src, tmp_path / "b2", "--site", "lab", "--receipt", receipt)
    import_(site, tmp_path / "b2")
    assert _blob(site, old).exists()
    assert _json(mirror(site, "gc", "--json"))["removed"] == 0  # still referenced at the site
    shown = _json(mirror(site, "show", "nvidia/bert", "--json"))
    assert {v["version"]: v["mirrored"] for v in shown["versions"]} == {"1.0": True, "2.0": True}


def test_a_damaged_store_is_refused_and_orphans_count_in_the_dry_run(
    home: Path, tmp_path: Path
) -> None:
    cat, bert = _catalog()
    old, new = b"old weights " * 4000, b"new weights " * 4000
    cfg = write_config(tmp_path / "m.toml", 'pattern = "nvidia/*"\nlatest = 1\n')
    with FakeNGC(cat) as fake:
        env = cli_env(home, fake.url)
        args = ["--config", str(cfg)]
        assert run_mirror([*args, "sync"], env).returncode == 0
        cat.add_version(bert, _version("2.0", 2, new))
        assert run_mirror([*args, "sync"], env).returncode == 0

        # 2.0 looks whole in the catalog but its weights are gone: releasing 1.0 now would
        # leave nothing; prune refuses before changing anything, dry run or not
        _blob(home, new).rename(tmp_path / "aside")
        for extra in (["--dry-run"], []):
            refused = run_mirror([*args, "prune", *extra], env)
            assert refused.returncode == 4, refused.stdout + refused.stderr
            assert (
                "prune released nothing" in refused.stderr and "verify --repair" in refused.stderr
            )
        assert _blob(home, old).exists()
        shown = _json(run_mirror(["show", "nvidia/bert", "--json"], env))
        assert {v["version"]: v["mirrored"] for v in shown["versions"]}["1.0"] is True
        (tmp_path / "aside").rename(_blob(home, new))

        # an orphan (a blob no row references) is freed too, and the dry run says so
        orphan = b"left behind by a killed run"
        _blob(home, orphan).write_bytes(orphan)
        dry = _json(run_mirror([*args, "prune", "--dry-run", "--json"], env))
        assert dry["blobs_freed"] == 2 and dry["bytes_freed"] == len(old) + len(orphan)
        done = _json(run_mirror([*args, "prune", "--json"], env))
        assert {k: v for k, v in done.items() if k != "dry_run"} == {
            k: v for k, v in dry.items() if k != "dry_run"
        }
        assert not _blob(home, orphan).exists() and not _blob(home, old).exists()


def test_bulk_statements_stay_under_the_sqlite_variable_cap(tmp_path: Path) -> None:
    """1500 digests unlinked at once under a 999-variable cap (older SQLite builds): the
    IN lists are chunked (one list failed with 'too many SQL variables' at 33k blobs)."""
    import sqlite3
    from datetime import datetime

    from sqlalchemy import event, func, insert, select

    from mirror import catalog
    from mirror.db import Database, open_catalog_db
    from mirror.schema import Blob, Entry, File, Snapshot, Version

    db = Database(open_catalog_db(tmp_path / "mirror.db"))

    @event.listens_for(db.engine, "connect")
    def _cap(dbapi_conn: sqlite3.Connection, _record: object) -> None:
        dbapi_conn.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, 999)

    db.engine.dispose()  # reconnect with the cap
    digests = [f"sha256:{n:064x}" for n in range(1500)]
    now = datetime(2026, 1, 1)
    with db.session() as s:
        s.add(Snapshot(id=1, created_at=now, complete=True))
        s.flush()
        s.execute(
            insert(Entry),
            [dict(id=1, kind="model", path="o/m", org="o", name="m", first_snapshot_id=1)],
        )
        s.execute(insert(Version), [dict(id=1, entry_id=1, version="1", first_snapshot_id=1)])
        s.execute(insert(Blob), [dict(digest=d, size=1, stored_at=now) for d in digests])
        s.execute(
            insert(File),
            [
                dict(version_id=1, path=f"f{n}", size=1, blob_digest=d)
                for n, d in enumerate(digests)
            ],
        )
    with db.session() as s:
        catalog.forget_blobs(s, digests)
    with db.session() as s:
        assert s.scalar(select(func.count()).select_from(Blob)) == 0
        assert s.scalar(select(func.count()).where(File.blob_digest.is_not(None))) == 0
