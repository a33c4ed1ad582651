"""A tampered, damaged or wrongly signed bundle is refused and changes nothing at the site.

One source and one target (which already imported a full bundle, so it has content to lose)
are shared by every case: a refused import must leave the target exactly as it was, so the
cases cannot disturb each other — and if one does, its own assert_unchanged fails. Each case
copies a pristine incremental bundle, damages the copy, imports it with a real `mirror import`
and checks the exit code, the message and that the store, tmp/, receipts/ and mirror.db
(bytes and SQL dump) did not change.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from mirror.fakengc import FakeFile, FakeNGC, FakeVersion, seed_catalog
from tests.test_bundle_support import (
    MiB,
    assert_unchanged,
    big_entry,
    det_bytes,
    export,
    frozen,
    import_,
    mirror_inproc,
    ok,
    store_blobs,
    sync,
)


@dataclass
class World:
    root: Path
    src: Path
    target: Path
    bundles: dict[str, Path]  # pristine: dir, tar, signed
    new_blob: str  # hex of a blob the target lacks (so the import must read it)
    key: Path  # the signing key's .pub
    other_key: Path  # a different .pub


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    root = tmp_path_factory.mktemp("tamper")
    src, target = root / "src", root / "target"
    cat = seed_catalog(limit=3, include_resources=False, file_size=1500)
    cat.add(big_entry("bigone", 2 * MiB + 777))
    ok(mirror_inproc(src, "keys", "generate", str(root / "k1")))
    ok(mirror_inproc(src, "keys", "generate", str(root / "k2")))
    with FakeNGC(cat) as fake:
        sync(src, fake)
        b1 = export(src, root / "b1")
        import_(target, root / "b1")
        entry = cat.of_kind("model")[0]
        new = FakeFile("new/weights.bin", det_bytes(2 * MiB + 999, "tamper-new"))
        cat.add_version(entry, FakeVersion("7.0", files=[new]))
        cat.touch(cat.of_kind("model")[1])
        sync(src, fake)
    since = ("--since", str(b1["target_snapshot"]))
    export(src, root / "dir", *since)
    parts = export(src, root / "tar", *since, "--format", "tar", "--split", "1MiB")
    assert len(parts["parts_written"]) >= 3
    export(src, root / "signed", *since, "--sign", str(root / "k1"))
    assert new.sha256_hex not in store_blobs(target)
    return World(
        root=root,
        src=src,
        target=target,
        bundles={n: root / n for n in ("dir", "tar", "signed")},
        new_blob=new.sha256_hex,
        key=root / "k1.pub",
        other_key=root / "k2.pub",
    )


# -- damage ------------------------------------------------------------------------------------
def flip(path: Path, offset: int = 0) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def edit_manifest(b: Path, change: Callable[[dict[str, Any]], None]) -> None:
    doc = json.loads((b / "mirror-bundle.json").read_bytes())
    change(doc)
    (b / "mirror-bundle.json").write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")


def blob_entry(doc: dict[str, Any], hexd: str) -> dict[str, Any]:
    return next(x for x in doc["blobs"] if x["digest"] == "sha256:" + hexd)


def _flip_new_blob(b: Path, w: World) -> None:
    flip(b / "blobs" / "sha256" / w.new_blob, 12345)


def _flip_catalog(b: Path, w: World) -> None:
    flip(b / "catalog.jsonl", 40)


def _manifest_size(b: Path, w: World) -> None:
    edit_manifest(b, lambda d: blob_entry(d, w.new_blob).update(size=2 * MiB + 998))


def _manifest_catalog_digest(b: Path, w: World) -> None:
    edit_manifest(b, lambda d: d.update(catalog_sha256="0" * 64))


def _manifest_bad_digest(b: Path, w: World) -> None:
    edit_manifest(b, lambda d: blob_entry(d, w.new_blob).update(digest="sha256:../../etc"))


def _manifest_garbage_types(b: Path, w: World) -> None:
    edit_manifest(b, lambda d: d.update(blobs="everything", catalog_size="12"))


def _missing_blob(b: Path, w: World) -> None:
    (b / "blobs" / "sha256" / w.new_blob).unlink()


def _part(b: Path, n: int) -> Path:
    return b / f"bundle.tar.{n:03d}"


def _truncate_part(b: Path, w: World) -> None:
    p = _part(b, 1)
    p.write_bytes(p.read_bytes()[:-1000])


def _missing_part(b: Path, w: World) -> None:
    _part(b, 2).unlink()


def _swap_parts(b: Path, w: World) -> None:
    a, c = _part(b, 0), _part(b, 1)
    assert a.stat().st_size == c.stat().st_size  # equal sizes: only the digests tell
    a.rename(b / "tmp")
    c.rename(a)
    (b / "tmp").rename(c)


def _flip_part(b: Path, w: World) -> None:
    flip(_part(b, 1), MiB // 2)


def _manifest_part_size_type(b: Path, w: World) -> None:
    edit_manifest(b, lambda d: d["parts"][1].update(size="1048576"))


@dataclass
class Case:
    bundle: str
    damage: Callable[[Path, World], None] | None
    code: int
    message: str
    args: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()


CASES = {
    "blob-byte-flipped": Case("dir", _flip_new_blob, 4, "digest mismatch"),
    "catalog-byte-flipped": Case("dir", _flip_catalog, 4, "catalog digest mismatch"),
    "manifest-blob-size": Case("dir", _manifest_size, 4, "more bytes than expected"),
    "manifest-catalog-digest": Case("dir", _manifest_catalog_digest, 4, "catalog digest mismatch"),
    "manifest-malformed-digest": Case("dir", _manifest_bad_digest, 4, "invalid digest"),
    "manifest-garbage-types": Case("dir", _manifest_garbage_types, 4, "mirror-bundle.json"),
    "blob-missing": Case("dir", _missing_blob, 4, "missing from the bundle"),
    "part-truncated": Case("tar", _truncate_part, 4, "bundle.tar.001"),
    "part-missing": Case("tar", _missing_part, 4, "part bundle.tar.002 is missing"),
    "parts-swapped": Case("tar", _swap_parts, 4, "bundle.tar.000"),
    "part-byte-flipped": Case("tar", _flip_part, 4, "bundle.tar.001"),
    "manifest-part-size-type": Case("tar", _manifest_part_size_type, 4, "bad part entry"),
    "wrong-verify-key": Case("signed", None, 4, "does not verify with k2.pub", ("--verify-key",)),
    "signed-manifest-edited": Case(
        "signed", _manifest_size, 4, "manifest tampered or wrong key", ("--verify-key",)
    ),
    "signature-garbage": Case(
        "signed",
        lambda b, w: (b / "mirror-bundle.json.sig").write_bytes(os.urandom(64)),
        4,
        "does not verify",
        ("--verify-key",),
    ),
    "unsigned-with-verify-key": Case(
        "dir", None, 4, "bundle is unsigned but a signature is required", ("--verify-key",)
    ),
    "unsigned-config-verify-key": Case(
        "dir", None, 4, "bundle is unsigned but a signature is required", ("--config",)
    ),
    # require_signature without a key to verify with: a configuration problem, exit 2
    "unsigned-env-require-signature": Case(
        "dir",
        None,
        2,
        "a signed bundle is required but no verify key was given",
        env=(("MIRROR_BUNDLE_REQUIRE_SIGNATURE", "true"),),
    ),
    "signed-config-require-signature-no-key": Case(
        "signed", None, 2, "no verify key was given", ("--config-require",)
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_damaged_bundle_is_refused_and_changes_nothing(
    world: World, tmp_path: Path, name: str
) -> None:
    case = CASES[name]
    bundle = tmp_path / "bundle"
    shutil.copytree(world.bundles[case.bundle], bundle)
    if case.damage is not None:
        case.damage(bundle, world)
    args: list[str] = []
    if case.args == ("--verify-key",):
        key = world.other_key if name == "wrong-verify-key" else world.key
        args = ["--verify-key", str(key)]
    elif case.args == ("--config",):
        cfg = tmp_path / "m.toml"
        cfg.write_text(f'[bundle]\nverify_key = "{world.key}"\n')
        args = ["--config", str(cfg)]
    elif case.args == ("--config-require",):
        cfg = tmp_path / "m.toml"
        cfg.write_text("[bundle]\nrequire_signature = true\n")
        args = ["--config", str(cfg)]
    before = frozen(world.target)
    opts, rest = (args, []) if args[:1] == ["--config"] else ([], args)
    proc = mirror_inproc(world.target, *opts, "import", str(bundle), *rest, **dict(case.env))
    assert proc.returncode == case.code, f"{proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    assert case.message in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr and "unexpected error" not in proc.stderr
    assert_unchanged(before, world.target)
    if "signature" in case.message or "verify key" in case.message:
        assert "hint:" in proc.stderr  # says what to do: --verify-key / --sign


def test_pristine_bundles_import_after_all_that(world: World, tmp_path: Path) -> None:
    """The controls: the undamaged bundles do import (so the refusals above mean something)."""
    key = str(world.key)
    signed = import_(world.target, world.bundles["signed"], "--verify-key", key)
    assert signed["signature_verified"] and signed["blobs_copied"] >= 1
    assert world.new_blob in store_blobs(world.target)
    # same snapshots from the same source: the dir and tar twins are now "already imported"
    for name in ("dir", "tar"):
        again = ok(mirror_inproc(world.target, "import", str(world.bundles[name])))
        assert "nothing to do" in again.stdout
    ok(mirror_inproc(world.target, "verify"))
