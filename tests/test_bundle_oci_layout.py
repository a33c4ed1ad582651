"""Interop: a bundle directory is a valid OCI image layout (image-spec image-layout.md), and
a tar bundle's parts, joined, are a tar of the same layout."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path

from mirror.fakengc import FakeNGC, seed_catalog
from tests.test_bundle_support import MiB, big_entry, export, manifest, sync

INDEX_MEDIA_TYPE = "application/vnd.oci.image.index.v1+json"


def _check_layout_docs(oci_layout: bytes, index: bytes) -> None:
    assert json.loads(oci_layout) == {"imageLayoutVersion": "1.0.0"}
    doc = json.loads(index)
    assert doc["schemaVersion"] == 2
    assert doc.get("mediaType", INDEX_MEDIA_TYPE) == INDEX_MEDIA_TYPE
    assert isinstance(doc["manifests"], list)
    for desc in doc["manifests"]:  # (none yet: models are plain blobs)
        assert {"mediaType", "digest", "size"} <= set(desc)


def test_dir_and_tar_bundles_are_oci_image_layouts(tmp_path: Path) -> None:
    src = tmp_path / "src"
    cat = seed_catalog(limit=3, include_resources=False, file_size=1500)
    cat.add(big_entry("bigone", MiB + 99))
    with FakeNGC(cat) as fake:
        sync(src, fake)
    d, t = tmp_path / "dir", tmp_path / "tar"
    export(src, d)
    export(src, t, "--format", "tar", "--split", "1MiB")

    # directory: oci-layout, index.json, blobs/<alg>/<hex> whose content hashes to the name
    _check_layout_docs((d / "oci-layout").read_bytes(), (d / "index.json").read_bytes())
    assert [p.name for p in (d / "blobs").iterdir()] == ["sha256"]
    listed = {b["digest"]: b["size"] for b in manifest(d)["blobs"]}
    on_disk = {}
    for p in (d / "blobs" / "sha256").iterdir():
        assert p.is_file() and not p.is_symlink()
        assert hashlib.sha256(p.read_bytes()).hexdigest() == p.name
        on_disk["sha256:" + p.name] = p.stat().st_size
    assert on_disk == listed and len(listed) >= 5

    # tar: the parts joined in manifest order are one tar holding the same layout
    m = manifest(t)
    stream = b"".join((t / p["name"]).read_bytes() for p in m["parts"])
    assert len(m["parts"]) >= 2
    seen = {}
    with tarfile.open(fileobj=io.BytesIO(stream), mode="r:") as tar:
        files = {i.name: tar.extractfile(i).read() for i in tar if i.isreg()}  # type: ignore[union-attr]
    _check_layout_docs(files.pop("oci-layout"), files.pop("index.json"))
    assert hashlib.sha256(files.pop("catalog.jsonl")).hexdigest() == m["catalog_sha256"]
    for name, data in files.items():
        assert name.startswith("blobs/sha256/")
        assert hashlib.sha256(data).hexdigest() == name.rsplit("/", 1)[1]
        seen["sha256:" + name.rsplit("/", 1)[1]] = len(data)
    assert seen == {b["digest"]: b["size"] for b in m["blobs"]} == listed
