"""A read-only OCI distribution (pull) API over a mirror root, as a plain ASGI app.

Endpoints (oci.md §1.2): `GET/HEAD /v2/`, `GET/HEAD /v2/<name>/manifests/<tag|digest>`,
`GET/HEAD /v2/<name>/blobs/<digest>` (with single `Range`), `GET /v2/<name>/tags/list` (paginated
with `n`/`last` and a `Link` header) and `GET /v2/_catalog` (same pagination). Everything else
that would write is 405 `UNSUPPORTED`. Repository names are the stripped form described in
repo_index.py (`test/multi`, `nvidia/pytorch`), never `<host>/<repository>`.

Manifests are served byte for byte with their stored media type and never converted; Accept
negotiation follows distribution: served when Accept is absent, has `*/*` or names the type,
otherwise 404 `MANIFEST_UNKNOWN`. Blobs go through blobs.BlobServer (re-verified). index.json is
re-read whenever its mtime, size or inode changes, so a sync or import running alongside shows
up on the next request.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode

from mirror.errors import DigestError
from mirror.paths import validate_digest
from mirror.serve.asgi import Receive, Scope, Send, encode_headers
from mirror.serve.blobs import (
    BlobCorrupt,
    BlobMissing,
    BlobServer,
    ResponseAborted,
    Unsatisfiable,
)
from mirror.serve.repo_index import NAME_RE, TAG_RE, RepoIndex, Repository, Snapshot

log = logging.getLogger(__name__)


API_VERSION = ("docker-distribution-api-version", "registry/2.0")
READ_METHODS = ("GET", "HEAD")
DEFAULT_PAGE = 1000
MAX_PAGE = 10_000
# any well-formed digest (image-spec descriptor.md); only sha256 is stored
DIGEST_GRAMMAR = re.compile(r"[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+")
ROUTE = re.compile(r"/v2/(?P<name>.+)/(?P<kind>manifests|blobs)/(?P<ref>[^/]+)")
TAGS_ROUTE = re.compile(r"/v2/(?P<name>.+)/tags/list")


class HttpError(Exception):
    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        detail: Any = None,
        headers: list[tuple[str, str]] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.detail = status, code, message, detail
        self.headers = headers or []


class RegistryApp:
    """The ASGI callable; one per mirror root."""

    def __init__(self, root: Path | str, blobs: BlobServer | None = None) -> None:
        self.index = RepoIndex(root)
        self.blobs = blobs or BlobServer(self.index.store)
        self._lock = asyncio.Lock()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # lifespan belongs to the app that mounts this one
            return
        method = str(scope.get("method", "GET")).upper()
        try:
            await self._dispatch(scope, method, send)
        except HttpError as err:
            await self._error(send, method, err)
        except ResponseAborted:
            return  # the server closes the connection: the client sees a short body

    async def refresh(self) -> Snapshot:
        """Re-read index.json if a sync or import changed it."""
        return await self._snapshot()

    async def _snapshot(self) -> Snapshot:
        if not self.index.stale():
            return self.index.snapshot
        async with self._lock:
            return await asyncio.to_thread(self.index.refresh)

    # -- routing ---------------------------------------------------------------------------
    async def _dispatch(self, scope: Scope, method: str, send: Send) -> None:
        raw = scope.get("raw_path")
        path = raw.decode("latin-1") if isinstance(raw, bytes) else str(scope["path"])
        path = path.split("?", 1)[0]
        if "%" in path:
            # names, tags and digests need no escapes but a ':' some clients encode; refusing
            # the rest rules out escaped '/', '.' and NUL tricks
            path = re.sub("%3[aA]", ":", path)
            if "%" in path:
                raise HttpError(400, "NAME_INVALID", "percent-escapes are not allowed in the path")
        if not path.startswith("/v2"):
            raise HttpError(404, "NAME_UNKNOWN", "not a registry API path", {"path": path[:200]})
        if method not in READ_METHODS:
            raise HttpError(
                405,
                "UNSUPPORTED",
                "this mirror is read-only",
                {"method": method},
                [("Allow", "GET, HEAD")],
            )
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        accept = [
            v.decode("latin-1")
            for k, v in scope["headers"]
            if k.decode("latin-1").lower() == "accept"
        ]
        if path in ("/v2", "/v2/"):
            await self._json(send, method, 200, {})
            return
        if path == "/v2/_catalog":
            await self._catalog(send, method, query)
            return
        tags = TAGS_ROUTE.fullmatch(path)
        if tags:
            await self._tags(send, method, self._name(tags["name"]), query)
            return
        match = ROUTE.fullmatch(path)
        if match is None:
            raise HttpError(404, "NAME_UNKNOWN", "no such endpoint", {"path": path[:200]})
        name = self._name(match["name"])
        if match["kind"] == "manifests":
            await self._manifest(send, method, name, match["ref"], accept)
        else:
            await self._blob(send, method, name, match["ref"], headers.get("range"))

    @staticmethod
    def _name(name: str) -> str:
        if len(name) > 255 or not NAME_RE.fullmatch(name):
            raise HttpError(400, "NAME_INVALID", "invalid repository name", {"name": name[:256]})
        return name

    @staticmethod
    def _digest(ref: str, unknown: str) -> str:
        try:
            return validate_digest(ref)
        except DigestError:
            if DIGEST_GRAMMAR.fullmatch(ref) and not ref.startswith("sha256:"):
                raise HttpError(
                    404, unknown, "unsupported digest algorithm", {"digest": ref}
                ) from None
            raise HttpError(
                400, "DIGEST_INVALID", "invalid digest", {"digest": ref[:200]}
            ) from None

    async def _repo(self, name: str) -> Repository:
        snap = await self._snapshot()
        repo = snap.repositories.get(name)
        if repo is None:
            raise HttpError(
                404, "NAME_UNKNOWN", "repository name not known to registry", {"name": name}
            )
        return repo

    # -- handlers --------------------------------------------------------------------------
    async def _manifest(
        self, send: Send, method: str, name: str, ref: str, accept: list[str]
    ) -> None:
        repo = await self._repo(name)
        if ":" in ref:
            digest = self._digest(ref, "MANIFEST_UNKNOWN")
            detail: dict[str, str] = {"Digest": digest}
        else:
            if not TAG_RE.fullmatch(ref):
                raise HttpError(400, "TAG_INVALID", "invalid tag", {"Tag": ref[:200]})
            detail = {"Tag": ref}
            tagged = repo.tags.get(ref)
            if tagged is None:
                raise HttpError(404, "MANIFEST_UNKNOWN", "manifest unknown", detail)
            digest = tagged
        media_type = repo.manifests.get(digest)
        found = None if media_type is None else self.index.manifest(digest, media_type)
        if found is None:
            raise HttpError(404, "MANIFEST_UNKNOWN", "manifest unknown", detail)
        if not _accepts(accept, found.media_type):
            raise HttpError(
                404,
                "MANIFEST_UNKNOWN",
                f"manifest is {found.media_type}, which the Accept header does not allow",
                detail,
            )
        headers = [
            ("Content-Type", found.media_type),
            ("Content-Length", str(len(found.body))),
            ("Docker-Content-Digest", digest),
            ("Etag", f'"{digest}"'),
        ]
        await self._respond(send, method, 200, headers, found.body)

    async def _blob(
        self, send: Send, method: str, name: str, ref: str, range_header: str | None
    ) -> None:
        repo = await self._repo(name)
        digest = self._digest(ref, "BLOB_UNKNOWN")
        unknown = HttpError(404, "BLOB_UNKNOWN", "blob unknown to registry", digest)
        if digest not in repo.blobs:
            raise unknown
        corrupt = HttpError(500, "BLOB_UNKNOWN", "blob failed verification on this mirror", digest)
        try:
            blob = await asyncio.to_thread(self.blobs.open, digest)
        except BlobMissing:
            raise unknown from None
        except BlobCorrupt:
            raise corrupt from None
        common = [
            ("Docker-Content-Digest", digest),
            ("Etag", f'"{digest}"'),
            ("Cache-Control", "max-age=31536000"),
        ]
        try:
            await self.blobs.send(
                send,
                method,
                blob,
                range_header,
                [API_VERSION, ("Content-Type", "application/octet-stream"), *common],
            )
        except Unsatisfiable as exc:
            raise HttpError(
                416,
                "RANGE_INVALID",
                "requested range not satisfiable",
                {"range": range_header, "size": exc.size},
                [("Content-Range", f"bytes */{exc.size}"), ("Accept-Ranges", "bytes"), *common],
            ) from None
        except BlobCorrupt:
            raise corrupt from None

    async def _tags(self, send: Send, method: str, name: str, query: dict[str, list[str]]) -> None:
        repo = await self._repo(name)
        page, link = _paginate(sorted(repo.tags), query, f"/v2/{name}/tags/list")
        extra = [("Link", link)] if link else []
        await self._json(send, method, 200, {"name": name, "tags": page}, extra)

    async def _catalog(self, send: Send, method: str, query: dict[str, list[str]]) -> None:
        snap = await self._snapshot()
        page, link = _paginate(sorted(snap.repositories), query, "/v2/_catalog")
        extra = [("Link", link)] if link else []
        await self._json(send, method, 200, {"repositories": page}, extra)

    # -- responses -------------------------------------------------------------------------
    async def _respond(
        self, send: Send, method: str, status: int, headers: list[tuple[str, str]], body: bytes
    ) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": encode_headers([API_VERSION, *headers]),
            }
        )
        await send({"type": "http.response.body", "body": b"" if method == "HEAD" else body})

    async def _json(
        self,
        send: Send,
        method: str,
        status: int,
        doc: Any,
        extra: list[tuple[str, str]] | None = None,
    ) -> None:
        body = json.dumps(doc).encode()
        headers = [
            ("Content-Type", "application/json"),
            ("Content-Length", str(len(body))),
            *(extra or []),
        ]
        await self._respond(send, method, status, headers, body)

    async def _error(self, send: Send, method: str, err: HttpError) -> None:
        doc = {"errors": [{"code": err.code, "message": err.message, "detail": err.detail}]}
        await self._json(send, method, err.status, doc, err.headers)


def _accepts(accept: list[str], media_type: str) -> bool:
    wanted = {
        part.split(";", 1)[0].strip().lower() for header in accept for part in header.split(",")
    }
    wanted.discard("")
    return not wanted or "*/*" in wanted or media_type.lower() in wanted


def _paginate(
    items: list[str], query: dict[str, list[str]], path: str
) -> tuple[list[str], str | None]:
    last = query.get("last", [""])[0]
    raw_n = query.get("n", [""])[0]
    if raw_n:
        if not raw_n.isdigit():
            raise HttpError(400, "PAGINATION_NUMBER_INVALID", "invalid n", {"n": raw_n[:40]})
        n = min(int(raw_n), MAX_PAGE)
    else:
        n = DEFAULT_PAGE
    rest = [item for item in items if item > last] if last else items
    page = rest[:n]
    if n == 0 or len(rest) <= n:
        return page, None
    return page, f'<{path}?{urlencode({"n": n, "last": page[-1]})}>; rel="next"'
