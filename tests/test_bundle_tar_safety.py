"""Hostile tar parts: every trick is refused before anything is published.

The bundles are crafted by hand with Python's tarfile, and the manifest vouches for them
(part sha256 and size, catalog digest and size all match), so only the member checks stand
between the tar and the store. A benign bundle built the same way imports (the control), so
each refusal is about its one hostile member. Nothing is ever extracted by member name, so we
also look for any file that escaped.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.test_bundle_support import (
    assert_unchanged,
    det_bytes,
    frozen,
    import_,
    mirror_inproc,
    ok,
    store_blobs,
)

OCI_LAYOUT = b'{"imageLayoutVersion": "1.0.0"}'
INDEX = b'{"schemaVersion": 2, "manifests": []}'


@dataclass
class Blob:
    data: bytes

    @property
    def hex(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    @property
    def digest(self) -> str:
        return "sha256:" + self.hex


def record(name: str, blob: Blob, file_path: str = "weights.bin") -> dict[str, Any]:
    return {
        "op": "upsert",
        "kind": "model",
        "path": f"nvidia/{name}",
        "org": "nvidia",
        "team": None,
        "name": name,
        "display_name": name,
        "description": "",
        "short_description": "",
        "labels": [],
        "framework": None,
        "precision": None,
        "application": None,
        "latest_version": "1",
        "created": None,
        "updated": None,
        "versions": [
            {
                "version": "1",
                "status": "UPLOAD_COMPLETE",
                "size": len(blob.data),
                "file_count": 1,
                "created": None,
                "updated": None,
                "description": "",
                "files_listed": True,
                "files": [
                    {
                        "path": file_path,
                        "size": len(blob.data),
                        "sha256": blob.hex,
                        "blob_digest": blob.digest,
                    }
                ],
            }
        ],
    }


def member(name: str, data: bytes = b"", kind: bytes = tarfile.REGTYPE, **kw: Any) -> Any:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.size = len(data) if kind in (tarfile.REGTYPE, tarfile.AREGTYPE) else 0
    info.mode = 0o644
    for k, v in kw.items():
        setattr(info, k, v)
    return info, (data if info.size else None)


def write_bundle(
    dest: Path,
    members: list[Any],
    blobs: list[Blob],
    catalog: bytes,
    *,
    manifest_extra: dict[str, Any] | None = None,
) -> None:
    """A one-part tar bundle whose manifest matches the part byte for byte."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    part = buf.getvalue()
    dest.mkdir(parents=True)
    (dest / "bundle.tar.000").write_bytes(part)
    doc: dict[str, Any] = {
        "bundle_id": str(uuid.uuid4()),
        "source_mirror_id": str(uuid.uuid4()),
        "base_snapshot": 0,
        "target_snapshot": 1,
        "created": "2024-01-01T00:00:00Z",
        "format": "tar",
        "catalog_sha256": hashlib.sha256(catalog).hexdigest(),
        "catalog_size": len(catalog),
        "catalog_records": catalog.count(b"\n"),
        "blobs": [{"digest": b.digest, "size": len(b.data)} for b in blobs],
        "parts": [
            {
                "name": "bundle.tar.000",
                "size": len(part),
                "sha256": hashlib.sha256(part).hexdigest(),
            }
        ],
        "totals": {},
        "site": None,
        "format_version": 1,
    }
    doc.update(manifest_extra or {})
    (dest / "mirror-bundle.json").write_text(json.dumps(doc, indent=1, sort_keys=True))


def standard(name: str, blob: Blob, extra: list[Any], *, file_path: str = "weights.bin") -> Any:
    """catalog.jsonl, oci-layout, index.json, the good blob, then the `extra` members."""
    catalog = (json.dumps(record(name, blob, file_path), sort_keys=True) + "\n").encode()
    members = [
        member("catalog.jsonl", catalog),
        member("oci-layout", OCI_LAYOUT),
        member("index.json", INDEX),
        member("blobs", kind=tarfile.DIRTYPE),
        member("blobs/sha256", kind=tarfile.DIRTYPE),
        member(f"blobs/sha256/{blob.hex}", blob.data),
        *extra,
    ]
    return members, catalog


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A site that already imported a benign hand-made bundle (the control)."""
    root = tmp_path_factory.mktemp("tarsafety")
    good = Blob(det_bytes(5000, "control"))
    members, catalog = standard("control", good, [])
    write_bundle(root / "control", members, [good], catalog)
    home = root / "site"
    res = import_(home, root / "control")
    assert res["blobs_copied"] == 1 and res["upserts"] == 1
    assert good.hex in store_blobs(home)
    ok(mirror_inproc(home, "verify"))
    return home


OTHER = Blob(det_bytes(3000, "other"))


def case_dotdot(b: Blob) -> Any:
    return standard("h", b, [member("../evil-dotdot", b"pwned")])


def case_absolute(b: Blob) -> Any:
    return standard("h", b, [member("/tmp/evil-absolute", b"pwned")])


def case_dotdot_dir(b: Blob) -> Any:
    return standard("h", b, [member("blobs/../../evil-dir", kind=tarfile.DIRTYPE)])


def case_symlink(b: Blob) -> Any:
    m = member(f"blobs/sha256/{OTHER.hex}", kind=tarfile.SYMTYPE, linkname="/etc/passwd")
    return standard("h", b, [m])


def case_hardlink(b: Blob) -> Any:
    m = member(f"blobs/sha256/{OTHER.hex}", kind=tarfile.LNKTYPE, linkname="catalog.jsonl")
    return standard("h", b, [m])


def case_device(b: Blob) -> Any:
    m = member(f"blobs/sha256/{OTHER.hex}", kind=tarfile.CHRTYPE, devmajor=1, devminor=3)
    return standard("h", b, [m])


def case_fifo(b: Blob) -> Any:
    return standard("h", b, [member("index.json", kind=tarfile.FIFOTYPE)])


def case_duplicate(b: Blob) -> Any:
    return standard("h", b, [member(f"blobs/sha256/{b.hex}", b.data)])


def case_duplicate_catalog(b: Blob) -> Any:
    members, catalog = standard("h", b, [])
    return [*members, member("catalog.jsonl", catalog)], catalog


def case_unlisted_blob(b: Blob) -> Any:
    return standard("h", b, [member(f"blobs/sha256/{OTHER.hex}", OTHER.data)])


def case_larger_than_manifest(b: Blob) -> Any:
    members, catalog = standard("h", b, [])
    # the blob member carries 10 bytes more than the manifest's size for that digest
    members[5] = member(f"blobs/sha256/{b.hex}", b.data + b"0123456789")
    return members, catalog


def case_hostile_catalog_path(b: Blob) -> Any:
    return standard("h", b, [], file_path="../../evil-catalog")


@dataclass
class Case:
    build: Callable[[Blob], Any]
    code: int
    message: str
    manifest_extra: dict[str, Any] | None = None


CASES = {
    "dotdot": Case(case_dotdot, 4, "unexpected tar member '../evil-dotdot'"),
    "absolute": Case(case_absolute, 4, "unexpected tar member '/tmp/evil-absolute'"),
    "dotdot-directory": Case(case_dotdot_dir, 4, "is not a regular file"),
    "symlink": Case(case_symlink, 4, "is not a regular file (links and devices are refused)"),
    "hardlink": Case(case_hardlink, 4, "is not a regular file (links and devices are refused)"),
    "char-device": Case(case_device, 4, "is not a regular file (links and devices are refused)"),
    "fifo": Case(case_fifo, 4, "'index.json' is not a regular file"),
    "duplicate-blob": Case(case_duplicate, 4, "appears twice"),
    "duplicate-catalog": Case(case_duplicate_catalog, 4, "'catalog.jsonl' appears twice"),
    "blob-not-in-manifest": Case(case_unlisted_blob, 4, "is not listed in the manifest"),
    "larger-than-manifest": Case(case_larger_than_manifest, 4, "size differs from the manifest"),
    "catalog-path-traversal": Case(case_hostile_catalog_path, 4, "invalid catalog record"),
    "unknown-format-version": Case(
        lambda b: standard("h", b, []),
        2,
        "format_version 2 is not supported",
        {"format_version": 2},
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_hostile_tar_is_refused_and_nothing_is_published(
    site: Path, tmp_path: Path, name: str
) -> None:
    case = CASES[name]
    blob = Blob(det_bytes(4000, name))
    members, catalog = case.build(blob)
    bundle = tmp_path / "media" / "bundle"
    write_bundle(bundle, members, [blob], catalog, manifest_extra=case.manifest_extra)
    before = frozen(site)
    proc = mirror_inproc(site, "import", str(bundle))
    assert proc.returncode == case.code, f"{proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    assert case.message in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr and "unexpected error" not in proc.stderr
    assert_unchanged(before, site)  # the good blob before the hostile member was not kept
    assert blob.hex not in store_blobs(site)
    escaped = [p for p in tmp_path.rglob("evil*")] + [p for p in site.parent.rglob("evil*")]
    assert escaped == [] and not Path("/tmp/evil-absolute").exists()


def test_control_a_benign_crafted_bundle_imports(site: Path, tmp_path: Path) -> None:
    """Same builder, no hostile member: imports, so the refusals above are about that member."""
    blob = Blob(det_bytes(4000, "benign"))
    members, catalog = standard("benign", blob, [])
    write_bundle(tmp_path / "bundle", members, [blob], catalog)
    res = import_(site, tmp_path / "bundle")
    assert res["blobs_copied"] == 1 and res["upserts"] == 1
    assert blob.hex in store_blobs(site)
    ok(mirror_inproc(site, "verify"))
