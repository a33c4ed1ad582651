"""NGC API documents (ngc-api.md §4, §5, §7, §8, §13) built from catalog rows.

JSON types are kept exact (NGC's client coerces them: a string "false" is truthy, a string
where a list belongs is split into characters). A version is `UPLOAD_COMPLETE` here only when
every one of its files is in this mirror's store: NVIDIA's client then refuses the others with
"not in state UPLOAD_COMPLETE", and a downstream `mirror sync` picks the newest version this
mirror can actually deliver.
"""

from __future__ import annotations

import base64
import hashlib
from typing import Any

from mirror import ngc_wire
from mirror.plan import newest_first
from mirror.schema import Entry, File, Version

JSON = dict[str, Any]

SEARCH_TYPES = ngc_wire.SEARCH_TYPES
KIND_OF_TYPE = {v: k for k, v in SEARCH_TYPES.items()}


def prefix(kind: str) -> str:
    """Top-level key prefix of a kind's documents: `model` or `recipe`."""
    return "model" if kind == "model" else "recipe"


def error_envelope(status: int, description: str | None = None) -> JSON:
    """NGC's error body (§12.1) from this mirror."""
    return ngc_wire.error_envelope(status, description, server_id="mirror")


def mirrored(version: Version) -> bool:
    return bool(version.files) and all(f.blob_digest for f in version.files)


def sha256_b64(file: File) -> str | None:
    return base64.b64encode(bytes.fromhex(file.sha256)).decode() if file.sha256 else None


def _live(entry: Entry) -> list[Version]:
    return [v for v in entry.versions if v.removed_snapshot_id is None]


def _team(entry: Entry) -> str | None:
    return entry.team or None


def held_versions(entry: Entry) -> list[Version]:
    """The live versions (tags) this mirror holds, newest first."""
    if entry.kind == "image":
        return served_tags(entry)
    return newest_first(v for v in _live(entry) if mirrored(v))


def latest(entry: Entry) -> tuple[str | None, int | None]:
    """(version, size) of what "latest" means here: the newest version (tag) this mirror holds,
    else upstream's latest. NVIDIA's client downloads it when no version is given."""
    held = held_versions(entry)
    if held:
        return held[0].version, held[0].size
    upstream = next((v for v in _live(entry) if v.version == entry.latest_version), None)
    return entry.latest_version, upstream.size if upstream else None


def held_fingerprint(entry: Entry) -> str:
    """Which live versions this mirror holds, as a short digest (see ngc_wire.HELD_ATTRIBUTE)."""
    held = sorted(v.version for v in held_versions(entry))
    return hashlib.sha256("\n".join(held).encode()).hexdigest()[:16]


def search_resource(entry: Entry) -> JSON:
    latest_id, latest_size = latest(entry)
    attrs: list[tuple[str, Any]]
    if entry.kind == "image":
        attrs = [("latestTag", latest_id), ("size", latest_size)]
    else:
        attrs = [
            ("latestVersionIdStr", latest_id),
            ("latestVersionSizeInBytes", latest_size),
            ("application", entry.application),
            ("framework", entry.framework),
            ("precision", entry.precision),
        ]
    attrs.append((ngc_wire.HELD_ATTRIBUTE, held_fingerprint(entry)))
    return {
        "resourceId": entry.path,
        "resourceType": SEARCH_TYPES[entry.kind],
        "name": entry.name,
        "displayName": entry.display_name or entry.name,
        "orgName": entry.org,
        "teamName": _team(entry),
        "description": entry.short_description or entry.description,
        "shortDescription": entry.short_description or entry.description,
        "dateCreated": entry.created,
        "dateModified": entry.updated,
        "isPublic": True,
        "guestAccess": True,
        "labels": [{"key": "general", "values": list(entry.labels or [])}],
        "attributes": [{"key": k, "value": str(v)} for k, v in attrs if v is not None],
    }


def entry_doc(entry: Entry) -> JSON:
    """A Model (§4.1) or Recipe (§5) object."""
    latest_id, latest_size = latest(entry)
    doc: JSON = {
        "name": entry.name,
        "orgName": entry.org,
        "displayName": entry.display_name or entry.name,
        "shortDescription": entry.short_description or entry.description,
        "description": entry.description,
        "labels": list(entry.labels or []),
        "productNames": [],
        "createdDate": entry.created,
        "updatedDate": entry.updated,
        "isPublic": True,
        "canGuestDownload": True,
        "accessType": "LISTED",
        "isReadOnly": True,
        "licenseTerms": [],
    }
    if entry.team:
        doc["teamName"] = entry.team
    framework_key = "framework" if entry.kind == "model" else "trainingFramework"
    for key, value in (
        ("application", entry.application),
        (framework_key, entry.framework),
        ("precision", entry.precision),
        ("latestVersionIdStr", latest_id),
    ):
        if value:
            doc[key] = value
    if latest_size is not None:
        doc["latestVersionSizeInBytes"] = latest_size
    return {k: v for k, v in doc.items() if v is not None}


def version_doc(version: Version) -> JSON:
    doc: JSON = {
        "versionId": version.version,
        "status": "UPLOAD_COMPLETE" if mirrored(version) else "UPLOAD_PENDING",
        "description": version.description or "",
        "createdDate": version.created,
        "updatedDate": version.updated or version.created,
        "totalFileCount": version.file_count
        if version.file_count is not None
        else len(version.files),
        "totalSizeInBytes": version.size
        if version.size is not None
        else sum(f.size for f in version.files),
        "storageVersion": "V2",
        "isSigned": False,
    }
    return {k: v for k, v in doc.items() if v is not None}


def file_doc(file: File, version: Version) -> JSON:
    doc: JSON = {"path": file.path, "sizeInBytes": file.size, "createdDate": version.created}
    b64 = sha256_b64(file)
    if b64:
        doc["sha256_base64"] = b64
    return {k: v for k, v in doc.items() if v is not None}


# -- container images (§7, §13.7-13.10) -------------------------------------------------------
def tag_doc(tag: Version) -> JSON:
    variant = {
        "architecture": "amd64",
        "os": "linux",
        "digest": tag.manifest_digest,
        "compressedSize": tag.size or 0,
    }
    doc: JSON = {
        "tag": tag.version,
        "size": tag.size or 0,
        "updatedDate": tag.updated or tag.created,
        "digest": tag.manifest_digest,
        "description": tag.description or "",
        "isSigned": False,
        "architectureVariants": [variant] if tag.manifest_digest else [],
    }
    return {k: v for k, v in doc.items() if v is not None}


def served_tags(entry: Entry) -> list[Version]:
    """The tags this mirror can serve (manifest and blobs stored), newest first."""
    tags = [v for v in _live(entry) if v.manifest_digest and mirrored(v)]
    return sorted(tags, key=lambda t: (t.updated or t.created or "", t.version), reverse=True)


def repository_doc(entry: Entry) -> JSON:
    tags = served_tags(entry)
    doc: JSON = {
        "name": entry.name,
        "namespace": "/".join(p for p in (entry.org, entry.team) if p),
        "displayName": entry.display_name or entry.name,
        "shortDescription": entry.short_description or entry.description,
        "description": entry.description,
        "updatedDate": entry.updated,
        "tags": [t.version for t in tags],
        "labels": list(entry.labels or []),
        "productNames": [],
        "isPublic": True,
        "canGuestPull": True,
        "canPublicList": True,
        "isReadOnly": True,
        "accessType": "LISTED",
    }
    if tags:
        doc["latestTag"] = tags[0].version
        doc["latestImageSize"] = tags[0].size or 0
        doc["latestArchitectureVariants"] = tag_doc(tags[0])["architectureVariants"]
    return {k: v for k, v in doc.items() if v is not None}
