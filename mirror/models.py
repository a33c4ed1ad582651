"""Plain data passed between the source, the planner, the sync engine and the catalog.

Sources translate upstream JSON into these; nothing outside `mirror/sources` sees upstream
shapes.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class ListedEntry:
    """One catalog entry as the cheap listing (search) shows it."""

    kind: str  # model | resource
    org: str
    team: str | None
    name: str
    display_name: str = ""
    description: str = ""
    created: str | None = None
    updated: str | None = None
    latest_version: str | None = None
    latest_size: int | None = None
    framework: str | None = None
    precision: str | None = None
    application: str | None = None
    labels: tuple[str, ...] = ()
    held: str | None = None  # a `mirror serve` upstream: fingerprint of what it holds

    @property
    def path(self) -> str:
        return "/".join(p for p in (self.org, self.team, self.name) if p)

    @property
    def stamp(self) -> str:
        """Changes whenever upstream says the entry changed (dateModified or latest version),
        and, with another mirror as upstream, whenever what that mirror holds changes (it
        fetched or pruned a version: NGC's dates say nothing of that)."""
        base = f"{self.updated or ''}|{self.latest_version or ''}"
        return f"{base}|{self.held}" if self.held else base


@dataclass(frozen=True)
class RemoteFile:
    path: str
    size: int
    sha256: str | None  # hex; None when upstream publishes no hash

    @property
    def digest(self) -> str | None:
        return f"sha256:{self.sha256}" if self.sha256 else None


@dataclass
class RemoteVersion:
    version: str
    status: str = ""
    size: int | None = None
    file_count: int | None = None
    created: str | None = None
    updated: str | None = None
    description: str = ""
    files: list[RemoteFile] | None = None  # None = not listed (not selected, not latest)
    manifest_digest: str | None = None  # image tags: the tag's top manifest or index


@dataclass
class RemoteEntry:
    """Full metadata of one entry: the listing plus info and versions."""

    listed: ListedEntry
    description: str = ""
    short_description: str = ""
    versions: list[RemoteVersion] = field(default_factory=list)
