"""Data model of the fake NGC catalog.

The model is deliberately plain (mutable dataclasses) because tests change it between two
syncs of the client under test: touch an entry, add a version, swap a file's content. The
server reads it on every request, so such changes are visible immediately.

The deterministic seed catalog built from the 2019 NGC listing lives in :mod:`.seed` and is
re-exported here as :func:`seed_catalog`.
"""

from __future__ import annotations

import base64
import hashlib
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

#: Entry kinds; "resource" is what the API calls a "recipe" (model scripts) and "image" a
#: container image repository (whose versions are its tags).
KINDS = ("model", "resource", "image")

#: Date used when a test builds an entry without giving one.
DEFAULT_DATE = "2019-03-01T10:00:00.000Z"

_HASH_CHUNK = 1 << 20  # disk files are hashed in 1 MiB reads to keep memory flat


def iso_date(when: datetime) -> str:
    """Format a datetime the way NGC does (``2019-03-01T10:00:00.000Z``, UTC, milliseconds).

    Args:
        when: An aware datetime (naive ones are taken as UTC).

    Returns:
        The ISO-8601 string with millisecond precision and a ``Z`` suffix.
    """
    if when.tzinfo is not None:
        when = when.astimezone(UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


def parse_iso_date(text: str) -> datetime:
    """Parse an NGC date string (``...T10:00:00.000Z`` or any ISO-8601 form) as aware UTC.

    Args:
        text: The date string.

    Returns:
        An aware datetime in UTC.
    """
    parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def _check_segment(value: str, what: str) -> None:
    # Names end up as single URL path segments; a "/" would make routing ambiguous.
    if not value or "/" in value:
        raise ValueError(f"invalid {what}: {value!r}")


@dataclass
class FakeFile:
    """One file of a version, held in memory or served from disk.

    Attributes:
        path: Relative "/"-separated path, e.g. ``weights/model.bin``.
        content: The bytes of a small file. If neither content nor disk_path is given the
            file is empty.
        disk_path: A file on disk, served with ``socket.sendfile``.
        listed_sha256_b64: If set, the API advertises this ``sha256_base64`` instead of the
            true one (simulates a wrong hash upstream).
    """

    path: str
    content: bytes | None = None
    disk_path: Path | None = None
    listed_sha256_b64: str | None = None
    # Digest cache; the key remembers what it was computed from (the content object, or the
    # disk file's size and mtime) so a test that swaps content never sees a stale hash.
    _digest: bytes | None = field(default=None, init=False, repr=False, compare=False)
    _digest_key: object = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.content is not None and self.disk_path is not None:
            raise ValueError(f"{self.path}: give content or disk_path, not both")
        if self.disk_path is not None and not isinstance(self.disk_path, Path):
            self.disk_path = Path(self.disk_path)
        parts = self.path.split("/")
        # The client joins path under its destination directory: anything that could
        # escape it (absolute, "..", empty segments, backslashes) is refused up front.
        if not self.path or "\\" in self.path or any(p in ("", ".", "..") for p in parts):
            raise ValueError(f"invalid file path: {self.path!r}")

    @property
    def size(self) -> int:
        """Size in bytes (stat'ed on every call for disk files)."""
        if self.disk_path is not None:
            return os.stat(self.disk_path).st_size
        return len(self.content or b"")

    def _cache_key(self) -> object:
        if self.disk_path is not None:
            st = os.stat(self.disk_path)
            return (str(self.disk_path), st.st_size, st.st_mtime_ns)
        # bytes equality short-circuits on identity, so the common case costs nothing.
        return self.content or b""

    @property
    def sha256_digest(self) -> bytes:
        """The true raw 32-byte SHA-256 digest of the content (cached)."""
        key = self._cache_key()
        if self._digest is not None and self._digest_key == key:
            return self._digest
        hasher = hashlib.sha256()
        if self.disk_path is not None:
            with open(self.disk_path, "rb") as fh:
                while chunk := fh.read(_HASH_CHUNK):
                    hasher.update(chunk)
        else:
            hasher.update(self.content or b"")
        self._digest, self._digest_key = hasher.digest(), key
        return self._digest

    def set_known_digest(self, digest: bytes) -> None:
        """Prime the digest cache with a digest computed elsewhere.

        Used for multi-GiB benchmark files whose digest is computed while writing them, so
        the first file listing does not stall on hashing.

        Args:
            digest: The raw 32-byte SHA-256 digest of the current content.
        """
        if len(digest) != 32:
            raise ValueError("a SHA-256 digest has 32 bytes")
        self._digest, self._digest_key = digest, self._cache_key()

    @property
    def sha256_hex(self) -> str:
        """The true SHA-256 digest as lower-case hex."""
        return self.sha256_digest.hex()

    @property
    def sha256_b64(self) -> str:
        """What the API lists as ``sha256_base64``: the override, or the true base64 digest."""
        if self.listed_sha256_b64 is not None:
            return self.listed_sha256_b64
        return base64.b64encode(self.sha256_digest).decode("ascii")


@dataclass
class FakeVersion:
    """One version of an entry (for an image entry: one tag).

    Attributes:
        version_id: The version string (``versionId``), e.g. ``"1"`` or ``"v2.1"``; for an
            image, the tag, e.g. ``"19.10-py3"``.
        status: ``UPLOAD_COMPLETE`` or ``UPLOAD_PENDING``.
        created: ISO creation date.
        updated: ISO last-update date.
        files: The files, in listing order (none for an image tag).
        description: Free text shown as the version description.
        digest: Image tags only: the manifest digest ``sha256:<64 hex>`` (derived from the
            tag when None).
        image_size: Image tags only: the image size in bytes (0 when None).
        architectures: Image tags only: the architecture variants, first one primary.
    """

    version_id: str
    status: str = "UPLOAD_COMPLETE"
    created: str = DEFAULT_DATE
    updated: str = DEFAULT_DATE
    files: list[FakeFile] = field(default_factory=list)
    description: str = ""
    digest: str | None = None
    image_size: int | None = None
    architectures: list[str] = field(default_factory=lambda: ["amd64"])

    @property
    def total_size(self) -> int:
        """Sum of the file sizes in bytes."""
        return sum(f.size for f in self.files)

    @property
    def file_count(self) -> int:
        """Number of files."""
        return len(self.files)

    def file(self, path: str) -> FakeFile | None:
        """Return the file with this exact path, or None."""
        return next((f for f in self.files if f.path == path), None)


@dataclass
class FakeEntry:
    """A model, resource (model script) or image repository of the catalog.

    Attributes:
        kind: ``"model"``, ``"resource"`` or ``"image"``.
        org: Organisation, e.g. ``"nvidia"``.
        team: Team or None.
        name: Machine name, e.g. ``"bert_tf_ckpt_large_qa_squad11_amp_384"``.
        display_name: Human name (defaults to name).
        description: A short description (also used as ``shortDescription``).
        framework: Framework (``trainingFramework`` for resources) or None.
        precision: Precision (FP16, FP32, INT8, AMP, ...) or None.
        application: Application (Classification, ...) or None.
        labels: Display labels (the search ``general`` label group).
        created: ISO creation date.
        updated: ISO last-update date (bumped by :meth:`FakeCatalog.touch`).
        versions: Versions (tags for an image), newest first.
    """

    kind: str
    org: str
    team: str | None
    name: str
    display_name: str = ""
    description: str = ""
    framework: str | None = None
    precision: str | None = None
    application: str | None = None
    labels: list[str] = field(default_factory=list)
    created: str = DEFAULT_DATE
    updated: str = DEFAULT_DATE
    versions: list[FakeVersion] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, not {self.kind!r}")
        _check_segment(self.org, "org")
        _check_segment(self.name, "name")
        if self.team is not None:
            _check_segment(self.team, "team")
        if not self.display_name:
            self.display_name = self.name

    @property
    def resource_id(self) -> str:
        """``org/team/name`` or ``org/name``."""
        return "/".join(p for p in (self.org, self.team, self.name) if p)

    @property
    def latest(self) -> FakeVersion | None:
        """The newest version (first of :attr:`versions`), or None."""
        return self.versions[0] if self.versions else None

    def version(self, version_id: str) -> FakeVersion | None:
        """Return the version with this id, or None."""
        return next((v for v in self.versions if v.version_id == version_id), None)


@dataclass
class FakeCatalog:
    """The mutable set of entries a :class:`~mirror.fakengc.FakeNGC` serves."""

    entries: list[FakeEntry] = field(default_factory=list)

    def add(self, entry: FakeEntry) -> FakeEntry:
        """Add an entry.

        Args:
            entry: The entry; its (kind, org, team, name) must be new.

        Returns:
            The entry, for chaining.

        Raises:
            ValueError: An entry with the same identity exists.
        """
        if self.get(entry.kind, entry.org, entry.team, entry.name) is not None:
            raise ValueError(f"duplicate {entry.kind} {entry.resource_id}")
        self.entries.append(entry)
        return entry

    def get(self, kind: str, org: str, team: str | None, name: str) -> FakeEntry | None:
        """Find an entry by identity, or return None."""
        for entry in self.entries:
            if (entry.kind, entry.org, entry.team, entry.name) == (kind, org, team, name):
                return entry
        return None

    def lookup(self, kind: str, resource_id: str) -> FakeEntry | None:
        """Find an entry by kind and ``org/[team/]name``, or return None."""
        return next(
            (e for e in self.entries if e.kind == kind and e.resource_id == resource_id), None
        )

    def of_kind(self, kind: str) -> list[FakeEntry]:
        """All entries of one kind, in catalog order."""
        return [e for e in self.entries if e.kind == kind]

    def remove(
        self,
        kind_or_entry: str | FakeEntry,
        org: str | None = None,
        team: str | None = None,
        name: str | None = None,
    ) -> FakeEntry:
        """Remove an entry given as an object or as (kind, org, team, name).

        Returns:
            The removed entry.

        Raises:
            KeyError: No such entry.
        """
        if isinstance(kind_or_entry, FakeEntry):
            found: FakeEntry | None = kind_or_entry if kind_or_entry in self.entries else None
        else:
            found = self.get(kind_or_entry, org or "", team, name or "")
        if found is None:
            raise KeyError(f"no such entry: {kind_or_entry!r} {org}/{team}/{name}")
        # Remove by identity: dataclass equality would also match an equal twin.
        self.entries = [e for e in self.entries if e is not found]
        return found

    def touch(self, entry: FakeEntry, when: str | None = None) -> str:
        """Bump an entry's updated date, simulating an upstream change.

        Args:
            entry: The entry.
            when: The new date; by default now, but always strictly later than the
                previous value so that two quick touches are still distinguishable.

        Returns:
            The new updated date.
        """
        if when is None:
            floor = parse_iso_date(entry.updated) + timedelta(milliseconds=1)
            when = iso_date(max(datetime.now(UTC), floor))
        entry.updated = when
        return when

    def add_version(
        self, entry: FakeEntry, version: FakeVersion, when: str | None = None
    ) -> FakeVersion:
        """Publish a new newest version and touch the entry.

        Args:
            entry: The entry.
            version: The version; its id must be new for this entry.
            when: Passed to :meth:`touch`.

        Returns:
            The version.
        """
        if entry.version(version.version_id) is not None:
            raise ValueError(f"{entry.resource_id} already has version {version.version_id}")
        entry.versions.insert(0, version)
        self.touch(entry, when)
        return version


def seed_catalog(
    *,
    versions_per_entry: int = 2,
    file_size: int = 2048,
    limit: int | None = None,
    include_resources: bool = True,
    include_images: bool = False,
) -> FakeCatalog:
    """Build the deterministic seed catalog from the 2019 NGC model listing.

    Every line of ``data/ngc-2019-models.txt`` becomes one model entry (duplicate display
    names get distinct machine names, e.g. ``_tf``/``_pyt`` or ``_2`` suffixes); with
    include_resources a few model-script ("resource") entries are added, and with
    include_images one image repository per line of ``data/ngc-2019-images.txt`` (org
    ``nvidia``, 1-3 tags with fake digests and sizes). File contents are
    pseudo-random bytes derived from resource id, version and path, and all dates are fixed,
    so two calls return equal catalogs.

    Args:
        versions_per_entry: Versions per entry (newest first).
        file_size: Approximate size of each file in bytes (sizes vary by up to +-12%).
        limit: Keep only the first ``limit`` models of the listing (resources are separate).
        include_resources: Also add the resource entries.
        include_images: Also add the image repository entries (not affected by limit or
            versions_per_entry).

    Returns:
        A new catalog.
    """
    from .seed import build_seed  # seed imports this module; import late to avoid a cycle

    return build_seed(
        versions_per_entry=versions_per_entry,
        file_size=file_size,
        limit=limit,
        include_resources=include_resources,
        include_images=include_images,
    )
