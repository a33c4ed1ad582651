"""The bundle manifest, its version check, and ed25519 signing."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mirror.errors import IntegrityError, UsageError
from mirror.fsutil import atomic_write
from mirror.paths import is_hex64, validate_digest

FORMAT_VERSION = 1
MANIFEST = "mirror-bundle.json"
SIGNATURE = "mirror-bundle.json.sig"
CATALOG = "catalog.jsonl"
PART_PREFIX = "bundle.tar."


@dataclass
class Part:
    name: str
    size: int
    sha256: str


@dataclass
class Manifest:
    bundle_id: str
    source_mirror_id: str
    base_snapshot: int  # 0 = full bundle
    target_snapshot: int
    created: str
    format: str  # dir | tar
    catalog_sha256: str
    catalog_size: int
    catalog_records: int
    blobs: list[dict[str, Any]] = field(default_factory=list)  # {"digest", "size"}
    parts: list[Part] = field(default_factory=list)
    totals: dict[str, int] = field(default_factory=dict)
    site: str | None = None
    format_version: int = FORMAT_VERSION

    def to_bytes(self) -> bytes:
        doc = asdict(self)
        return (json.dumps(doc, indent=1, sort_keys=True) + "\n").encode()

    @classmethod
    def from_bytes(cls, raw: bytes, where: str) -> Manifest:
        try:
            doc = json.loads(raw)
        except ValueError:
            raise IntegrityError("manifest is not valid JSON", subject=where) from None
        if not isinstance(doc, dict):
            raise IntegrityError("manifest is not a JSON object", subject=where)
        version = doc.get("format_version")
        if version != FORMAT_VERSION:
            raise UsageError(
                f"{where}: bundle format_version {version!r} is not supported "
                f"(this mirror reads {FORMAT_VERSION})",
                hint="import it with the mirror version that wrote it, or re-export",
            )
        try:
            parts = [Part(**p) for p in doc.pop("parts", [])]
            m = cls(**doc, parts=parts)
        except TypeError as exc:
            raise IntegrityError(f"manifest has unexpected fields: {exc}", subject=where) from None
        m.check(where)
        return m

    def check(self, where: str) -> None:
        """Refuse anything that could later be used to build a path or fool a size check."""
        if self.format not in ("dir", "tar"):
            raise IntegrityError(f"unknown bundle format {self.format!r}", subject=where)
        if not isinstance(self.catalog_sha256, str) or not is_hex64(self.catalog_sha256):
            raise IntegrityError("bad catalog digest", subject=where)
        # a tampered manifest is an integrity failure (exit 4), never a crash on a wrong type
        for name in ("base_snapshot", "target_snapshot", "catalog_size", "catalog_records"):
            if not _count(getattr(self, name)):
                raise IntegrityError(f"bad {name}", subject=where)
        for name in ("bundle_id", "source_mirror_id"):
            if not isinstance(getattr(self, name), str):
                raise IntegrityError(f"bad {name}", subject=where)
        if not isinstance(self.blobs, list) or not isinstance(self.parts, list):
            raise IntegrityError("bad blob or part list", subject=where)
        seen = set()
        for b in self.blobs:
            if not isinstance(b, dict):
                raise IntegrityError("bad blob entry", subject=where)
            digest = b.get("digest")
            try:
                validate_digest(digest)  # type: ignore[arg-type]
            except UsageError:
                raise IntegrityError(
                    f"invalid digest {digest!r} in the manifest", subject=where
                ) from None
            if not _count(b.get("size")):
                raise IntegrityError(f"bad size for blob {digest}", subject=where)
            if digest in seen:
                raise IntegrityError(f"blob {digest} listed twice", subject=where)
            seen.add(digest)
        for i, p in enumerate(self.parts):
            if (
                p.name != f"{PART_PREFIX}{i:03d}"
                or not isinstance(p.sha256, str)
                or not is_hex64(p.sha256)
                or not _count(p.size)
            ):
                raise IntegrityError(f"bad part entry {p.name!r}", subject=where)

    @property
    def blob_bytes(self) -> int:
        return sum(int(b["size"]) for b in self.blobs)


def _count(value: object) -> bool:
    """A non-negative int (JSON true/false are not counts)."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


# -- signatures -------------------------------------------------------------------------------
def generate_keypair(private_path: Path) -> Path:
    """Write an ed25519 private key (PEM, mode 0600) and `<path>.pub`; return the .pub path."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    if private_path.exists():
        raise UsageError(f"{private_path} exists; refusing to overwrite a key")
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    pub = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    fd_path = private_path
    fd_path.parent.mkdir(parents=True, exist_ok=True)
    import os

    fd = os.open(fd_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)
    pub_path = private_path.with_name(private_path.name + ".pub")
    atomic_write(pub_path, pub)
    return pub_path


def sign(manifest_bytes: bytes, private_path: Path) -> bytes:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    try:
        key = serialization.load_pem_private_key(private_path.read_bytes(), password=None)
    except (OSError, ValueError) as exc:
        raise UsageError(
            f"cannot read signing key {private_path}: {exc}",
            hint="create one with `mirror keys generate KEYFILE`",
        ) from None
    if not isinstance(key, Ed25519PrivateKey):
        raise UsageError(f"{private_path} is not an ed25519 private key")
    return key.sign(manifest_bytes)


def verify_signature(manifest_bytes: bytes, signature: bytes | None, public_path: Path) -> None:
    """Raise IntegrityError unless `signature` is a valid signature of the manifest."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        key = serialization.load_pem_public_key(public_path.read_bytes())
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot read verify key {public_path}: {exc}") from None
    if not isinstance(key, Ed25519PublicKey):
        raise UsageError(f"{public_path} is not an ed25519 public key")
    if signature is None:
        raise IntegrityError(
            "bundle is unsigned but a signature is required",
            hint="ask the exporter to use `mirror export --sign KEYFILE`",
        )
    try:
        key.verify(signature, manifest_bytes)
    except InvalidSignature:
        raise IntegrityError(
            "bundle signature does not verify with "
            f"{public_path.name}: manifest tampered or wrong key"
        ) from None
