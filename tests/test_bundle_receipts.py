"""Site receipts: the next `export --site` sends exactly what the site lacks, even after a
bundle was lost on the way."""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path

from mirror.fakengc import FakeFile, FakeNGC, FakeVersion, seed_catalog
from tests.test_bundle_support import (
    assert_same_catalog,
    catalog_dump,
    det_bytes,
    export,
    import_,
    manifest,
    mirror,
    mirror_inproc,
    ok,
    store_blobs,
    sync,
)


def _new_version(cat, entry, vid: str, size: int) -> FakeFile:  # type: ignore[no-untyped-def]
    f = FakeFile(f"v{vid}/model.bin", det_bytes(size, (entry.name, vid)))
    cat.add_version(entry, FakeVersion(vid, files=[f]))
    return f


def test_receipt_makes_the_next_export_only_the_delta(tmp_path: Path) -> None:
    src, site = tmp_path / "src", tmp_path / "site"
    cat = seed_catalog(limit=3, include_resources=False, file_size=1500)
    with FakeNGC(cat) as fake:
        sync(src, fake)
        b1 = export(src, tmp_path / "b1", "--site", "lab")
        assert (b1["base_snapshot"], b1["site"]) == (0, "lab")
        assert manifest(tmp_path / "b1")["site"] == "lab"
        r1 = import_(site, tmp_path / "b1")
        receipt = Path(r1["receipt"])
        assert receipt == tmp_path / "b1" / "mirror-receipt.json" and receipt.is_file()

        models = cat.of_kind("model")
        cat.touch(models[0])  # metadata only: its blobs are at the site already
        new = _new_version(cat, models[1], "5.0", 4000)
        sync(src, fake)

    args = ("--site", "lab", "--receipt", str(receipt))
    plan = export(src, tmp_path / "b2", *args, "--dry-run", real=True)
    assert plan["base_snapshot"] == b1["target_snapshot"], "the dry run ignored the receipt"
    assert plan["bytes_saved"] > 0
    assert (plan["upserts"], plan["blobs"], plan["blob_bytes"]) == (2, 1, new.size)
    assert not (tmp_path / "b2").exists()
    # and the dry run confirmed nothing (it planned with the receipt, then rolled back)
    with contextlib.closing(sqlite3.connect(src / "mirror.db")) as c:
        sites = c.execute("SELECT name, confirmed_snapshot FROM sites").fetchall()
        confirmed = c.execute("SELECT count(*) FROM exports WHERE confirmed_at IS NOT NULL")
        assert sites == [("lab", 0)] and confirmed.fetchone()[0] == 0

    b2 = export(src, tmp_path / "b2", *args, real=True)
    for key in ("base_snapshot", "target_snapshot", "blobs", "blob_bytes", "bytes_saved"):
        assert b2[key] == plan[key], key
    m2 = manifest(tmp_path / "b2")
    assert m2["base_snapshot"] == b1["target_snapshot"]
    assert [b["digest"] for b in m2["blobs"]] == ["sha256:" + new.sha256_hex]
    assert sorted(p.name for p in (tmp_path / "b2" / "blobs" / "sha256").iterdir()) == [
        new.sha256_hex
    ]
    r2 = import_(site, tmp_path / "b2", real=True)
    assert (r2["blobs_copied"], r2["upserts"]) == (1, 2)
    assert_same_catalog(src, site)

    # carried back again: the site has everything
    done = ok(mirror(src, "export", str(tmp_path / "b3"), *args[:2], "--receipt", r2["receipt"]))
    assert "nothing to export" in done.stdout
    assert not (tmp_path / "b3" / "mirror-bundle.json").exists()


def test_lost_drive_next_bundle_carries_its_content(tmp_path: Path) -> None:
    src, site = tmp_path / "src", tmp_path / "site"
    cat = seed_catalog(limit=4, include_resources=False, file_size=1500)
    with FakeNGC(cat) as fake:
        sync(src, fake)
        export(src, tmp_path / "b1", "--site", "lab")
        r1 = import_(site, tmp_path / "b1")["receipt"]
        models = cat.of_kind("model")

        lost_file = _new_version(cat, models[0], "8.0", 3000)
        sync(src, fake)
        b2 = export(src, tmp_path / "b2", "--site", "lab", "--receipt", r1)
        assert [b["digest"] for b in manifest(tmp_path / "b2")["blobs"]] == [
            "sha256:" + lost_file.sha256_hex
        ]
        # ... the drive with b2 is lost; upstream moves on
        later_file = _new_version(cat, models[1], "9.0", 3500)
        gone = cat.remove(models[3])
        sync(src, fake)

    b3 = export(src, tmp_path / "b3", "--site", "lab", "--receipt", r1)
    assert b3["base_snapshot"] == b2["base_snapshot"]  # the site never confirmed b2
    assert b3["target_snapshot"] > b2["target_snapshot"]
    shipped = {b["digest"] for b in manifest(tmp_path / "b3")["blobs"]}
    assert shipped == {"sha256:" + lost_file.sha256_hex, "sha256:" + later_file.sha256_hex}
    assert b3["removals"] == 1

    r3 = import_(site, tmp_path / "b3")  # b3 alone, without b2
    assert r3["removals"] == 1
    seen = {("model", m.resource_id) for m in models}
    assert_same_catalog(src, site, seen=seen)
    assert ("model", gone.resource_id) in seen
    ok(mirror_inproc(site, "verify"))

    # the lost drive turns up after all: older than what the site holds, so a no-op
    before = store_blobs(site)
    late = ok(mirror_inproc(site, "import", str(tmp_path / "b2")))
    assert "already imported" in late.stdout
    assert store_blobs(site) == before
    assert_same_catalog(src, site, seen=seen)

    # and with b3's receipt back home, the site is up to date
    done = ok(
        mirror_inproc(
            src, "export", str(tmp_path / "b4"), "--site", "lab", "--receipt", r3["receipt"]
        )
    )
    assert "nothing to export" in done.stdout


def test_full_bundle_without_receipts_still_carries_removals(tmp_path: Path) -> None:
    """No receipt ever comes back: each `--site` export is a full bundle, and the site must
    still end up with the source's catalog — including what upstream removed."""
    src, site = tmp_path / "src", tmp_path / "site"
    cat = seed_catalog(limit=3, include_resources=False, file_size=1500)
    with FakeNGC(cat) as fake:
        sync(src, fake)
        export(src, tmp_path / "b1", "--site", "lab")
        import_(site, tmp_path / "b1")
        seen = {("model", m.resource_id) for m in cat.of_kind("model")}
        gone = cat.remove(cat.of_kind("model")[0])
        sync(src, fake)
    b2 = export(src, tmp_path / "b2", "--site", "lab")  # no --receipt: full again
    assert (b2["base_snapshot"], b2["removals"]) == (0, 1)
    r2 = import_(site, tmp_path / "b2", real=True)
    assert r2["removals"] == 1
    assert ("model", gone.resource_id) in catalog_dump(site)["removed"]
    assert_same_catalog(src, site, seen=seen)
    # and a fresh mirror takes the same full bundle without inventing rows for the removal
    fresh = tmp_path / "fresh"
    assert import_(fresh, tmp_path / "b2")["removals"] == 0
    assert catalog_dump(fresh)["removed"] == set()
    assert_same_catalog(src, fresh)
