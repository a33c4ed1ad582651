"""The layout of a mirror root and safe handling of names that come from outside.

A mirror root is a valid OCI image layout (image-spec image-layout.md): `oci-layout`,
`index.json`, `blobs/sha256/<hex>`; beside those live our own files (`mirror.db`, `search/`,
`tmp/`, `lock`). `tmp/` is on the same filesystem as `blobs/` so publishing is one rename.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from mirror.errors import DigestError, UsageError

_SHA256 = re.compile(r"sha256:[0-9a-f]{64}")
_HEX64 = re.compile(r"[0-9a-f]{64}")


def validate_digest(digest: str) -> str:
    """Return `digest` if it is `sha256:<64 lowercase hex>`, else raise DigestError.

    Every digest is checked here before it is used to build a path (STYLE.md habit 5).
    """
    if not isinstance(digest, str) or not _SHA256.fullmatch(digest):
        raise DigestError(str(digest))
    return digest


def digest_hex(digest: str) -> str:
    return validate_digest(digest)[len("sha256:") :]


def is_hex64(text: str) -> bool:
    return bool(_HEX64.fullmatch(text))


def safe_relpath(path: str) -> PurePosixPath:
    """Validate a relative '/'-separated path from upstream or a bundle.

    Refuses absolute paths, drive letters, backslashes, `..`, empty or `.` segments and NULs,
    so the result can be joined under a directory without escaping it.
    """
    if not path or "\x00" in path or "\\" in path:
        raise UsageError(f"unsafe path {path!r}: empty, NUL or backslash")
    if path.startswith("/") or re.match(r"^[A-Za-z]:", path):
        raise UsageError(f"unsafe path {path!r}: absolute")
    parts = path.split("/")
    for part in parts:
        if part in ("", ".", ".."):
            raise UsageError(f"unsafe path {path!r}: empty, '.' or '..' segment")
    return PurePosixPath(*parts)


@dataclass(frozen=True)
class MirrorPaths:
    """Where everything lives under one mirror root."""

    root: Path

    @property
    def db(self) -> Path:
        return self.root / "mirror.db"

    @property
    def oci_layout(self) -> Path:
        return self.root / "oci-layout"

    @property
    def index_json(self) -> Path:
        return self.root / "index.json"

    @property
    def blobs(self) -> Path:
        return self.root / "blobs" / "sha256"

    @property
    def tmp(self) -> Path:
        return self.root / "tmp"

    @property
    def search(self) -> Path:
        return self.root / "search"

    @property
    def lock(self) -> Path:
        return self.root / "lock"

    def blob(self, digest: str) -> Path:
        return self.blobs / digest_hex(digest)

    def staged(self, digest: str) -> Path:
        """A verified blob waiting for its bundle to verify completely before publishing."""
        return self.tmp / f"sha256-{digest_hex(digest)}.verified"

    def partial(self, digest: str) -> Path:
        """Where a resumable partial download of `digest` lives (same filesystem as blobs/)."""
        return self.tmp / f"sha256-{digest_hex(digest)}.partial"


def names_a_registry(path: str) -> bool:
    """Docker's rule: a first component with '.' or ':' (or `localhost`) is a registry host.
    NGC's paths (org/[team/]name) never look like that; `[[registry]]` entries always do."""
    first = path.split("/", 1)[0]
    return "." in first or ":" in first or first == "localhost"


def default_home(environ: Mapping[str, str]) -> Path:
    """MIRROR_HOME, else the platform's user data dir + /mirror."""
    home = environ.get("MIRROR_HOME")
    if home:
        return Path(home).expanduser()
    import platformdirs

    return Path(platformdirs.user_data_dir("mirror", appauthor=False))
