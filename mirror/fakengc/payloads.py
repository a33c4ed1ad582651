"""JSON documents of the fake NGC API, built from catalog objects.

Field names and JSON types follow docs/ngc-api.md §4, §5, §7, §8 and §13 exactly: the real
client coerces types (a string "false" is truthy, a string where a list is expected is
split into characters), so booleans stay booleans and sizes stay integers, except in
search ``attributes`` whose values are always strings.
"""

from __future__ import annotations

import hashlib
import uuid
from typing import Any

from mirror import ngc_wire

from .catalog import FakeEntry, FakeFile, FakeVersion

JSON = dict[str, Any]

SEARCH_TYPES = ngc_wire.SEARCH_TYPES


def body_key(kind: str) -> str:
    """Top-level key prefix of a kind's documents: ``model`` or ``recipe``."""
    return "model" if kind == "model" else "recipe"


def error_envelope(status: int, description: str | None = None) -> JSON:
    """An NGC error body (§12.1) from the fake server."""
    return ngc_wire.error_envelope(status, description, server_id="fakengc")


def success_status() -> JSON:
    """The ``requestStatus`` object of a successful response."""
    return {"statusCode": "SUCCESS", "requestId": uuid.uuid4().hex, "serverId": "fakengc"}


def search_resource(entry: FakeEntry) -> JSON:
    """One ``SearchResource`` of a search response (§8.2, §13.1)."""
    latest = entry.latest
    attrs: list[tuple[str, str | None]]
    if entry.kind == "image":
        attrs = [
            ("latestTag", latest.version_id if latest else None),
            ("size", str(image_size(latest)) if latest else None),
        ]
    else:
        attrs = [
            ("latestVersionIdStr", latest.version_id if latest else None),
            ("latestVersionSizeInBytes", str(latest.total_size) if latest else None),
            ("application", entry.application),
            ("framework", entry.framework),
            ("precision", entry.precision),
        ]
    return {
        "resourceId": entry.resource_id,
        "resourceType": SEARCH_TYPES[entry.kind],
        "name": entry.name,
        "displayName": entry.display_name,
        "orgName": entry.org,
        "teamName": entry.team,
        "description": entry.description,
        "shortDescription": entry.description,
        "dateCreated": entry.created,
        "dateModified": entry.updated,
        "createdBy": "NVIDIA",
        "isPublic": True,
        "guestAccess": True,
        "labels": [{"key": "general", "values": list(entry.labels)}],
        "attributes": [{"key": k, "value": v} for k, v in attrs if v is not None],
    }


def entry_doc(entry: FakeEntry) -> JSON:
    """The ``Model`` (§4.1) or ``Recipe`` (§5) object of an entry; absent values are omitted."""
    latest = entry.latest
    doc: JSON = {
        "name": entry.name,
        "orgName": entry.org,
        "displayName": entry.display_name,
        "shortDescription": entry.description,
        "description": f"## {entry.display_name}\n\n{entry.description}\n",
        "labels": list(entry.labels),
        "productNames": [],
        "publisher": "NVIDIA",
        "builtBy": "NVIDIA",
        "createdDate": entry.created,
        "updatedDate": entry.updated,
        "isPublic": True,
        "canGuestDownload": True,
        "accessType": "LISTED",
        "hasSignedVersion": False,
        "isReadOnly": False,
        "licenseTerms": [],
    }
    if entry.team is not None:
        doc["teamName"] = entry.team
    framework_key = "framework" if entry.kind == "model" else "trainingFramework"
    for key, value in (
        ("application", entry.application),
        (framework_key, entry.framework),
        ("precision", entry.precision),
    ):
        if value is not None:
            doc[key] = value
    if latest is not None:
        doc["latestVersionIdStr"] = latest.version_id
        doc["latestVersionSizeInBytes"] = latest.total_size
    return doc


def version_doc(version: FakeVersion) -> JSON:
    """A ``ModelVersion``/``RecipeVersion`` object (§4.3)."""
    return {
        "versionId": version.version_id,
        "status": version.status,
        "description": version.description,
        "createdDate": version.created,
        "updatedDate": version.updated,
        "createdByUser": "NVIDIA",
        "totalFileCount": version.file_count,
        "totalSizeInBytes": version.total_size,
        "storageVersion": "V2",
        "isSigned": False,
        "malwareScanStatus": "CLEAN",
    }


def file_doc(file: FakeFile, version: FakeVersion) -> JSON:
    """A ``ModelFile``/``RecipeFile`` object (§4.4)."""
    return {
        "path": file.path,
        "sizeInBytes": file.size,
        "sha256_base64": file.sha256_b64,
        "createdDate": version.created,
    }


# -- container images (§7, §13.7-13.10) --------------------------------------------------


def image_size(tag: FakeVersion) -> int:
    """Size in bytes of an image tag (0 when the tag has none)."""
    return tag.image_size or 0


def image_digest(tag: FakeVersion) -> str:
    """The tag's digest, or one derived from its tag name when it has none."""
    if tag.digest is not None:
        return tag.digest
    return "sha256:" + hashlib.sha256(f"tag:{tag.version_id}".encode()).hexdigest()


def architecture_variants(tag: FakeVersion) -> list[JSON]:
    """``ImageArchitectureVariant`` objects of a tag; the first one carries the tag digest."""
    digest = image_digest(tag)
    variants: list[JSON] = []
    for i, arch in enumerate(tag.architectures):
        v_digest = (
            digest
            if i == 0
            else "sha256:" + hashlib.sha256(f"{digest}:{arch}".encode()).hexdigest()
        )
        variants.append(
            {
                "architecture": arch,
                "os": "linux",
                "digest": v_digest,
                "compressedSize": max(0, image_size(tag) * 11 // 25 - i * 1000),  # ~44%
                "createdDate": tag.created,
            }
        )
    return variants


def repository_doc(entry: FakeEntry) -> JSON:
    """The top-level ``Repository`` object of an image entry (§7, §13.8)."""
    latest = entry.latest
    doc: JSON = {
        "name": entry.name,
        "namespace": "/".join(p for p in (entry.org, entry.team) if p),
        "displayName": entry.display_name,
        "shortDescription": entry.description,
        "description": f"# {entry.display_name}\n\n{entry.description}\n",
        "updatedDate": entry.updated,
        "tags": [t.version_id for t in entry.versions],
        "labels": list(entry.labels),
        "productNames": [],
        "isPublic": True,
        "canGuestPull": True,
        "canPublicList": True,
        "isMultiArchitecture": latest is not None and len(latest.architectures) > 1,
        "hasSignedTag": False,
        "isReadOnly": False,
        "accessType": "LISTED",
        "publisher": "NVIDIA",
        "builtBy": "NVIDIA",
    }
    if latest is not None:
        doc["latestTag"] = latest.version_id
        doc["latestImageSize"] = image_size(latest)
        doc["latestArchitectureVariants"] = architecture_variants(latest)
    return doc


def image_doc(tag: FakeVersion) -> JSON:
    """One ``RepositoryImageDetails`` entry of a tag list (§7, §13.9)."""
    return {
        "tag": tag.version_id,
        "size": image_size(tag),
        "updatedDate": tag.updated,
        "pushedDate": tag.created,
        "digest": image_digest(tag),
        "description": tag.description,
        "isSigned": False,
        "isMultiArchitecture": len(tag.architectures) > 1,
        "architectureVariants": architecture_variants(tag),
    }


def manifest_doc(entry: FakeEntry, tag: FakeVersion) -> JSON:
    """A ``GetManifestByTagResponse`` (§7, ``/repos/{repo}/images/{tag}``) of a tag.

    The fake knows no layers (the registry serves those), so ``fsLayers`` and ``history``
    are empty. ngcsdk's ``image info repo:tag`` returns this document but reads none of its
    fields (an empty object works as well).
    """
    return {
        "name": "/".join(p for p in (entry.org, entry.team, entry.name) if p),
        "tag": tag.version_id,
        "architecture": tag.architectures[0] if tag.architectures else "amd64",
        "schemaVersion": 1,
        "fsLayers": [],
        "history": [],
    }
