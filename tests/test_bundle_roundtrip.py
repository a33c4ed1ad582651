"""Round trip: whatever the source holds, a bundle (or a chain of them) reproduces at a site.

The property test drives export and import in-process (one real process per call would cost
~1 s each and blow the time budget); the CLI path, with tar parts and site receipts, is
covered by the deterministic chain test below and by the other test_bundle_* files.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mirror.blobstore import BlobStore
from mirror.bundle.export import export_bundle
from mirror.bundle.importer import import_bundle
from mirror.db import Database, open_catalog_db
from mirror.fakengc import FakeCatalog, FakeEntry, FakeFile, FakeNGC, FakeVersion, seed_catalog
from mirror.paths import MirrorPaths
from tests.test_bundle_support import (
    MiB,
    assert_same_catalog,
    big_entry,
    det_bytes,
    export,
    import_,
    live_keys,
    manifest,
    mirror,
    ok,
    sync,
)


@contextlib.contextmanager
def opened(home: Path) -> Iterator[tuple[Database, BlobStore]]:
    paths = MirrorPaths(home)
    paths.root.mkdir(parents=True, exist_ok=True)
    store = BlobStore(paths)
    store.init_layout()
    db = Database(open_catalog_db(paths.db))
    try:
        yield db, store
    finally:
        db.engine.dispose()


# -- changes to the upstream catalog between two syncs -----------------------------------------
OPS = st.one_of(
    st.tuples(st.just("touch"), st.integers(0, 99)),
    st.tuples(st.just("add_version"), st.integers(0, 99), st.integers(0, 2), st.booleans()),
    st.tuples(st.just("rewrite"), st.integers(0, 99)),
    st.tuples(st.just("remove"), st.integers(0, 99)),
    st.tuples(st.just("readd"), st.integers(0, 99)),
    st.tuples(st.just("add_entry"), st.sampled_from([None, "hyteam"]), st.booleans()),
)


class Upstream:
    def __init__(self, cat: FakeCatalog) -> None:
        self.cat = cat
        self.removed: list[FakeEntry] = []
        self.n = 0

    def _files(self, count: int, big: bool) -> list[FakeFile]:
        self.n += 1
        files = [FakeFile(f"f{j}.bin", det_bytes(700 + 97 * j, (self.n, j))) for j in range(count)]
        if big:  # more than one 1 MiB part
            files.append(FakeFile("big/w.bin", det_bytes(MiB + MiB // 4, self.n)))
        return files

    def apply(self, op: tuple[Any, ...]) -> None:
        entries = self.cat.entries
        kind, *args = op
        if kind == "touch":
            self.cat.touch(entries[args[0] % len(entries)])
        elif kind == "add_version":
            entry = entries[args[0] % len(entries)]
            self.n += 1
            version = FakeVersion(f"h{self.n}", files=self._files(args[1], args[2]))
            self.cat.add_version(entry, version)
        elif kind == "rewrite":  # same file path, new bytes
            entry = entries[args[0] % len(entries)]
            f = next((f for f in entry.versions[0].files if f.size), None)
            if f is not None:
                self.n += 1
                f.content = det_bytes(f.size + 1, ("rw", self.n))
                self.cat.touch(entry)
        elif kind == "remove":
            if len(entries) > 1:
                self.removed.append(self.cat.remove(entries[args[0] % len(entries)]))
        elif kind == "readd":
            if self.removed:
                entry = self.removed.pop(args[0] % len(self.removed))
                self.cat.add(entry)
                self.cat.touch(entry)
        elif kind == "add_entry":
            self.n += 1
            self.cat.add(
                FakeEntry(
                    kind="model",
                    org="nvidia",
                    team=args[0],
                    name=f"hyp{self.n}",
                    display_name=f"Hypothesis {self.n}",
                    versions=[FakeVersion("1", files=self._files(2, args[1]))],
                )
            )


@settings(
    max_examples=8,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    limit=st.integers(3, 5),
    file_size=st.sampled_from([300, 2048]),
    steps=st.lists(st.lists(OPS, max_size=3), min_size=1, max_size=2),
    fmt=st.sampled_from(["dir", "tar"]),
    mode=st.sampled_from(["since", "site"]),
)
def test_chain_and_full_bundles_reproduce_the_source(
    limit: int, file_size: int, steps: list[list[tuple[Any, ...]]], fmt: str, mode: str
) -> None:
    split = MiB if fmt == "tar" else None
    cat = seed_catalog(limit=limit, file_size=file_size, include_resources=False)
    cat.add(big_entry("hypbig", MiB + MiB // 2))
    up = Upstream(cat)
    with tempfile.TemporaryDirectory() as tmp, FakeNGC(cat) as fake:
        work = Path(tmp)
        src, chain, stale = work / "src", work / "chain", work / "stale"
        seen: set[tuple[str, str]] = set()
        since, receipt = 0, None
        for n in range(len(steps) + 1):
            if n:
                for op in steps[n - 1]:
                    up.apply(op)
            sync(src, fake)
            dest = work / f"b{n}"
            with opened(src) as (db, store):
                if mode == "since":
                    res = export_bundle(db, store, dest, since=since, fmt=fmt, split=split)
                else:
                    res = export_bundle(
                        db, store, dest, site="lab", receipt=receipt, fmt=fmt, split=split
                    )
            if res.nothing_to_do:
                continue
            since = res.plan.target
            with opened(chain) as (db, store):
                receipt = work / f"receipt{n}.json"
                imp = import_bundle(db, store, dest, receipt_out=receipt)
            assert not imp.already_imported
            seen |= live_keys(chain)
            assert_same_catalog(src, chain, seen=seen)
            if n == 0:  # a site that stops at the first (full) bundle
                with opened(stale) as (db, store):
                    import_bundle(db, store, dest)
                stale_seen = live_keys(stale)
        # a full bundle of the final state into a fresh mirror
        full, fresh = work / "full", work / "fresh"
        with opened(src) as (db, store):
            res = export_bundle(db, store, full, fmt=fmt, split=split)
        if fmt == "tar" and res.plan.total_bytes > MiB:  # (unless the big entry was removed)
            assert len(res.parts) >= 2, "the tar bundle should span several parts"
            assert all(p.size == MiB for p in res.parts[:-1])
        with opened(fresh) as (db, store):
            import_bundle(db, store, full)
        assert_same_catalog(src, fresh)
        # ... and the site left at the first bundle catches up with the full one
        with opened(stale) as (db, store):
            import_bundle(db, store, full)
        assert_same_catalog(src, stale, seen=stale_seen)


def test_cli_chain_tar_parts_and_dir_reproduce_the_source(tmp_path: Path) -> None:
    """Real `mirror export`/`import` processes: a --since chain as split tar, a full dir."""
    cat = seed_catalog(limit=3, include_resources=False, file_size=1500)
    cat.add(big_entry("bigone", 2 * MiB + 1234))
    src, chain, fresh = tmp_path / "src", tmp_path / "chain", tmp_path / "fresh"
    with FakeNGC(cat) as fake:
        sync(src, fake)
        b1 = export(src, tmp_path / "b1", "--format", "tar", "--split", "1MiB", real=True)
        assert len(b1["parts_written"]) >= 3
        assert sorted(p.name for p in (tmp_path / "b1").iterdir()) == sorted(
            ["mirror-bundle.json", *b1["parts_written"]]
        )
        import_(chain, tmp_path / "b1", real=True)
        assert_same_catalog(src, chain)

        models = cat.of_kind("model")
        cat.add_version(
            models[0], FakeVersion("9.0", files=[FakeFile("new.bin", det_bytes(MiB + 5, "n"))])
        )
        cat.touch(models[1])
        gone = cat.remove(models[2])
        sync(src, fake)
        b2 = export(
            src, tmp_path / "b2", "--since", str(b1["target_snapshot"]), "--format", "tar",
            "--split", "1MiB", real=True,
        )  # fmt: skip
        assert b2["base_snapshot"] == b1["target_snapshot"]
        assert (b2["upserts"], b2["removals"]) == (2, 1)
        assert len(b2["parts_written"]) >= 2
        # --since does not know what the site holds: every blob of a changed entry travels,
        # and the import copies only the one it lacks (the new version's file)
        new = "sha256:" + models[0].versions[0].files[0].sha256_hex
        shipped = [b["digest"] for b in manifest(tmp_path / "b2")["blobs"]]
        assert new in shipped
        r2 = import_(chain, tmp_path / "b2", real=True)
        assert (r2["upserts"], r2["removals"]) == (2, 1)
        assert (r2["blobs_copied"], r2["blobs_present"]) == (1, len(shipped) - 1)
        assert_same_catalog(src, chain, seen={("model", e.resource_id) for e in [*models, gone]})

    b3 = export(src, tmp_path / "b3", real=True)  # full, dir
    assert (b3["base_snapshot"], b3["removals"]) == (0, 1)  # full bundles carry removals too
    r3 = import_(fresh, tmp_path / "b3" / "mirror-bundle.json", real=True)  # the manifest path
    assert r3["removals"] == 0  # nothing to remove in a fresh mirror
    assert_same_catalog(src, fresh)
    for home in (chain, fresh):
        ok(mirror(home, "verify"))
