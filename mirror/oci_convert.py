"""Docker schema2 → OCI conversion, for the OCI-layout *view* of Docker-format images only.

containers/image (skopeo, podman) ignores index.json descriptors that are not OCI manifests or
indexes, so a Docker schema2 image in the mirror root's index.json would be invisible to
`skopeo copy oci:$MIRROR_HOME:<ref>`. For such tags we store, beside the byte-exact Docker
manifest (what registries and `mirror serve` hand out), an OCI manifest with the same config
and layers and OCI media types — exactly what `skopeo copy docker://… oci:…` writes. Its digest
differs from upstream's; the upstream digest stays the tag's `manifest_digest`.
"""

from __future__ import annotations

import json
from typing import Any

from mirror.sources.registry import DOCKER_LIST, DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST

OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
_DOCKER_LAYER = "application/vnd.docker.image.rootfs."
_OCI_LAYER = "application/vnd.oci.image.layer."
LAYER_TYPES = {
    _DOCKER_LAYER + "diff.tar.gzip": _OCI_LAYER + "v1.tar+gzip",
    _DOCKER_LAYER + "diff.tar": _OCI_LAYER + "v1.tar",
    _DOCKER_LAYER + "foreign.diff.tar.gzip": _OCI_LAYER + "nondistributable.v1.tar+gzip",
}


def _desc(d: dict[str, Any], media_type: str) -> dict[str, Any]:
    out = {"mediaType": media_type, "digest": d["digest"], "size": d["size"]}
    for key in ("urls", "annotations", "platform"):
        if key in d:
            out[key] = d[key]
    return out


def docker_to_oci_manifest(data: bytes) -> bytes:
    doc = json.loads(data)
    out = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": _desc(doc["config"], OCI_CONFIG),
        "layers": [
            _desc(
                layer,
                LAYER_TYPES.get(
                    layer.get("mediaType", ""),
                    layer.get("mediaType", "application/vnd.oci.image.layer.v1.tar+gzip"),
                ),
            )
            for layer in doc["layers"]
        ],
    }
    return json.dumps(out, separators=(",", ":")).encode()


def oci_index(children: list[dict[str, Any]]) -> bytes:
    """An OCI index over (already OCI) child descriptors with their platforms."""
    return json.dumps(
        {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": children}, separators=(",", ":")
    ).encode()


def needs_view(media_type: str) -> bool:
    return media_type in (DOCKER_MANIFEST, DOCKER_LIST)
