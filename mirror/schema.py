"""Catalog tables as SQLAlchemy 2.0 typed models.

The schema is created and changed only by alembic migrations (migrations/versions); a test
checks that autogenerate finds no difference between these models and the migrations.

Row lifetimes follow snapshots: each sync opens a snapshot; an entry or version records the
snapshot it was first seen in and the one it vanished in, so "what changed since N" is a query.
A `files.blob_digest` is set only after that blob was published in the store (the blob before
the row); gc never deletes a blob a file row points at.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class Run(Base):
    """One invocation of a writing command (sync, import, export, gc): the cron ledger."""

    __tablename__ = "runs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    command: Mapped[str] = mapped_column(String(32))
    started_at: Mapped[datetime] = mapped_column(DateTime)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime)
    # running | ok | partial | failed | interrupted
    outcome: Mapped[str] = mapped_column(String(16), default="running")
    pid: Mapped[int] = mapped_column(Integer)
    snapshot_id: Mapped[int | None] = mapped_column(ForeignKey("snapshots.id"))
    counts: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    bytes_fetched: Mapped[int] = mapped_column(BigInteger, default=0)
    failures: Mapped[list[str]] = mapped_column(JSON, default=list)
    error: Mapped[str | None] = mapped_column(Text)


class Snapshot(Base):
    """The catalog state one sync or import produced."""

    __tablename__ = "snapshots"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    created_at: Mapped[datetime] = mapped_column(DateTime)
    complete: Mapped[bool] = mapped_column(default=False)
    source: Mapped[str] = mapped_column(String(512), default="")


class Entry(Base):
    """A catalog item: a model, a resource (model scripts), later images and charts."""

    __tablename__ = "entries"
    __table_args__ = (UniqueConstraint("kind", "path"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    path: Mapped[str] = mapped_column(String(512))  # org/[team/]name
    org: Mapped[str] = mapped_column(String(128))
    team: Mapped[str | None] = mapped_column(String(128))
    name: Mapped[str] = mapped_column(String(256))
    display_name: Mapped[str] = mapped_column(String(512), default="")
    description: Mapped[str] = mapped_column(Text, default="")
    short_description: Mapped[str] = mapped_column(Text, default="")
    labels: Mapped[list[str]] = mapped_column(JSON, default=list)
    framework: Mapped[str | None] = mapped_column(String(128))
    precision: Mapped[str | None] = mapped_column(String(64))
    application: Mapped[str | None] = mapped_column(String(128))
    latest_version: Mapped[str | None] = mapped_column(String(256))
    created: Mapped[str | None] = mapped_column(String(40))
    updated: Mapped[str | None] = mapped_column(String(40))
    # listing stamp (dateModified|latest version) at the last complete refresh; a differing
    # stamp in the next listing means "changed upstream"
    sync_stamp: Mapped[str | None] = mapped_column(String(128))
    first_snapshot_id: Mapped[int] = mapped_column(ForeignKey("snapshots.id"))
    removed_snapshot_id: Mapped[int | None] = mapped_column(ForeignKey("snapshots.id"))
    # the last snapshot in which this entry's rows (or its versions and files) changed:
    # "what changed since snapshot N" for bundles is `changed_snapshot_id > N`
    changed_snapshot_id: Mapped[int | None] = mapped_column(ForeignKey("snapshots.id"))

    versions: Mapped[list[Version]] = relationship(
        back_populates="entry", cascade="all, delete-orphan", passive_deletes=True
    )


class Version(Base):
    __tablename__ = "versions"
    __table_args__ = (UniqueConstraint("entry_id", "version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    entry_id: Mapped[int] = mapped_column(ForeignKey("entries.id", ondelete="CASCADE"))
    version: Mapped[str] = mapped_column(String(256))
    status: Mapped[str] = mapped_column(String(32), default="")
    size: Mapped[int | None] = mapped_column(BigInteger)
    file_count: Mapped[int | None] = mapped_column(Integer)
    created: Mapped[str | None] = mapped_column(String(40))
    updated: Mapped[str | None] = mapped_column(String(40))
    description: Mapped[str] = mapped_column(Text, default="")
    # the OCI manifest digest for image tags (issue 5); NULL for models and resources
    manifest_digest: Mapped[str | None] = mapped_column(String(71))
    files_listed: Mapped[bool] = mapped_column(default=False)
    first_snapshot_id: Mapped[int] = mapped_column(ForeignKey("snapshots.id"))
    removed_snapshot_id: Mapped[int | None] = mapped_column(ForeignKey("snapshots.id"))

    entry: Mapped[Entry] = relationship(back_populates="versions")
    files: Mapped[list[File]] = relationship(
        back_populates="version", cascade="all, delete-orphan", passive_deletes=True
    )


class Blob(Base):
    """A published blob in the store; rows exist only for bytes that are on disk."""

    __tablename__ = "blobs"

    digest: Mapped[str] = mapped_column(String(71), primary_key=True)
    size: Mapped[int] = mapped_column(BigInteger)
    media_type: Mapped[str | None] = mapped_column(String(255))
    stored_at: Mapped[datetime] = mapped_column(DateTime)
    verified_at: Mapped[datetime | None] = mapped_column(DateTime)


class File(Base):
    __tablename__ = "files"
    __table_args__ = (
        UniqueConstraint("version_id", "path"),
        Index("ix_files_blob_digest", "blob_digest"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    version_id: Mapped[int] = mapped_column(ForeignKey("versions.id", ondelete="CASCADE"))
    path: Mapped[str] = mapped_column(String(1024))
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str | None] = mapped_column(String(64))  # hex, from upstream
    blob_digest: Mapped[str | None] = mapped_column(ForeignKey("blobs.digest"))

    version: Mapped[Version] = relationship(back_populates="files")


class ImageDate(Base):
    """An image's creation date (its config's `created`) by manifest digest, for ranking tags
    by `latest`: a digest names its content forever, so a tag that is not mirrored is ranked
    without fetching its config again (nothing would keep that config in the store)."""

    __tablename__ = "image_dates"

    manifest_digest: Mapped[str] = mapped_column(String(71), primary_key=True)
    created: Mapped[str | None] = mapped_column(String(64))


class Meta(Base):
    """Key/value facts about this mirror (its id)."""

    __tablename__ = "meta"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class Export(Base):
    """A bundle this mirror wrote; `confirmed_at` is set when a site's receipt names it."""

    __tablename__ = "exports"

    bundle_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    site: Mapped[str | None] = mapped_column(String(128))
    base_snapshot: Mapped[int] = mapped_column(Integer)
    target_snapshot: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(DateTime)
    manifest_sha256: Mapped[str] = mapped_column(String(64))
    blob_count: Mapped[int] = mapped_column(Integer)
    bytes: Mapped[int] = mapped_column(BigInteger)
    confirmed_at: Mapped[datetime | None] = mapped_column(DateTime)


class ExportBlob(Base):
    __tablename__ = "export_blobs"

    bundle_id: Mapped[str] = mapped_column(
        ForeignKey("exports.bundle_id", ondelete="CASCADE"), primary_key=True
    )
    digest: Mapped[str] = mapped_column(String(71), primary_key=True)


class Site(Base):
    """A site this mirror exports to, with the newest snapshot it confirmed having."""

    __tablename__ = "sites"

    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    mirror_id: Mapped[str | None] = mapped_column(String(36))
    confirmed_snapshot: Mapped[int] = mapped_column(Integer, default=0)
    confirmed_at: Mapped[datetime | None] = mapped_column(DateTime)
    lacking: Mapped[str | None] = mapped_column(Text)  # JSON digests its last receipt lacked


class Import(Base):
    """A bundle this mirror imported (re-importing it is a no-op)."""

    __tablename__ = "imports"

    bundle_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    source_mirror_id: Mapped[str] = mapped_column(String(36))
    base_snapshot: Mapped[int] = mapped_column(Integer)
    target_snapshot: Mapped[int] = mapped_column(Integer)
    catalog_sha256: Mapped[str] = mapped_column(String(64))
    imported_at: Mapped[datetime] = mapped_column(DateTime)
    snapshot_id: Mapped[int] = mapped_column(ForeignKey("snapshots.id"))
