"""`mirror bundle inspect`: what a bundle holds and whether its signature verifies.

Inspect only reads, so these runs go through the CLI entry point in-process (fast); the
exports that make the bundles are real processes.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from mirror.fakengc import FakeFile, FakeNGC, FakeVersion, seed_catalog
from tests.test_bundle_support import (
    MiB,
    det_bytes,
    export,
    manifest,
    mirror_inproc,
    ok,
    sync,
)


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("inspect")
    src = root / "src"
    cat = seed_catalog(limit=3, include_resources=False, file_size=1500)
    for k in ("k1", "k2"):
        ok(mirror_inproc(src, "keys", "generate", str(root / k)))
    with FakeNGC(cat) as fake:
        sync(src, fake)
        full = export(src, root / "full")
        models = cat.of_kind("model")
        new = FakeFile("big.bin", det_bytes(MiB + MiB // 3, "inspect"))
        cat.add_version(models[0], FakeVersion("4.2", files=[new]))
        gone = cat.remove(models[2])
        sync(src, fake)
    inc = export(
        src, root / "inc", "--since", str(full["target_snapshot"]), "--format", "tar",
        "--split", "1MiB", "--sign", str(root / "k1"),
    )  # fmt: skip
    return {
        "root": root,
        "src": src,
        "full": full,
        "inc": inc,
        "changed": models[0],
        "gone": gone,
        "k1": root / "k1.pub",
        "k2": root / "k2.pub",
    }


def inspect_json(bundle: Path, *args: str, code: int = 0) -> dict[str, Any]:
    """The --json document; a bundle that does not verify still prints it, then exits 4."""
    proc = mirror_inproc(bundle, "bundle", "inspect", str(bundle), *args, "--json")
    assert proc.returncode == code, proc.stdout + proc.stderr
    doc: dict[str, Any] = json.loads(proc.stdout)
    return doc


def test_inspect_json_lists_entries_snapshots_blobs_and_parts(bundles: dict[str, Any]) -> None:
    b = bundles["root"] / "inc"
    doc = inspect_json(b)
    m = manifest(b)
    assert (doc["base_snapshot"], doc["target_snapshot"]) == (
        bundles["full"]["target_snapshot"],
        bundles["inc"]["target_snapshot"],
    )
    assert doc["format"] == "tar" and doc["catalog_ok"] is True
    assert doc["bundle_id"] == m["bundle_id"] == bundles["inc"]["bundle_id"]
    changed, gone = bundles["changed"], bundles["gone"]
    assert doc["entries"] == sorted(  # catalog.jsonl is sorted by (kind, path)
        [
            {
                "op": "upsert",
                "kind": "model",
                "path": changed.resource_id,
                "display_name": changed.display_name,
                "versions": sorted(v.version_id for v in changed.versions),
            },
            {
                "op": "remove",
                "kind": "model",
                "path": gone.resource_id,
                "display_name": None,
                "versions": [],
            },
        ],
        key=lambda e: (e["kind"], e["path"]),
    )
    assert doc["blobs"] == len(m["blobs"]) and doc["blob_bytes"] == sum(
        x["size"] for x in m["blobs"]
    )
    assert doc["parts"] == m["parts"] and len(doc["parts"]) >= 2
    assert doc["signature"] == "signed (not verified)"


def test_inspect_signature_status(bundles: dict[str, Any]) -> None:
    inc, full = bundles["root"] / "inc", bundles["root"] / "full"
    assert inspect_json(inc, "--verify-key", str(bundles["k1"]))["signature"] == "verified"
    wrong = inspect_json(inc, "--verify-key", str(bundles["k2"]), code=4)["signature"]
    assert wrong.startswith("INVALID: ") and "does not verify with k2.pub" in wrong
    assert inspect_json(full)["signature"] == "unsigned"
    demanded = inspect_json(full, "--verify-key", str(bundles["k1"]), code=4)["signature"]
    assert demanded == "INVALID: bundle is unsigned but a signature is required"


def test_inspect_text(bundles: dict[str, Any]) -> None:
    b = bundles["root"] / "inc"
    out = ok(mirror_inproc(b, "bundle", "inspect", str(b), "--verify-key", str(bundles["k1"])))
    text = out.stdout
    base, target = bundles["full"]["target_snapshot"], bundles["inc"]["target_snapshot"]
    assert f"bundle {bundles['inc']['bundle_id']} (tar, format 1)" in text
    assert f"snapshots {base} -> {target}" in text
    assert "signature verified" in text
    assert "catalog   2 records (ok)" in text
    assert f"blobs     {bundles['inc']['blobs']} (" in text
    for p in manifest(b)["parts"]:
        assert f"part      {p['name']}" in text and f"sha256:{p['sha256']}" in text
    assert f"upsert  model    {bundles['changed'].resource_id}  " in text
    assert f"remove  model    {bundles['gone'].resource_id}" in text
    wrong = mirror_inproc(b, "bundle", "inspect", str(b), "--verify-key", str(bundles["k2"]))
    assert "signature INVALID: bundle signature does not verify" in wrong.stdout
    assert wrong.returncode == 4 and "does not verify" in wrong.stderr


def test_inspect_flags_a_damaged_catalog(bundles: dict[str, Any], tmp_path: Path) -> None:
    b = tmp_path / "full"
    shutil.copytree(bundles["root"] / "full", b)
    data = (b / "catalog.jsonl").read_bytes()
    name = bundles["changed"].display_name.encode()
    (b / "catalog.jsonl").write_bytes(data.replace(name, name.swapcase(), 1))  # still JSON
    doc = inspect_json(b, code=4)
    assert doc["catalog_ok"] is False
    proc = mirror_inproc(b, "bundle", "inspect", str(b))
    assert proc.returncode == 4 and "(DAMAGED)" in proc.stdout
