"""The NGC catalog API subset that NVIDIA's client and `mirror sync` use, from the catalog DB.

Paths (ngc-api.md §4, §5, §7, §8, §10, §14.2), `{k}` = `models` | `resources`, `{o_t}` =
`org[/team]`, `{ot}` = `org/ORG[/team/TEAM]`:

- `/v2/products`; `/token` (key exchange); `/v3/keys/get-caller-info` (`nvapi-` keys);
- search: `/v2/search/catalog/resources/{TYPE}` (+ the org and subscriber forms, empty);
- guest: `/v2/{k}/{o_t}/{name}[/versions[/{v}[/files[/{path}]]]]`, download URLs
  `/v2/{k}/{ot}/{name}/{v}/files[?path=|redirect=true]`; images `/v2/repos/{o_t}/{repo}[/images
  [/{tag}]|/tags/{tag}]`;
- key mode: the same under `/v2/{ot}/{k|repos}/{name}...` and `/v2/{ot}/{k}/{name}/{v}/files`;
- `/_dl/sha256/{hex}/{filename}`: the "presigned" URLs the listings hand out (signed when reads
  need a token, since NGC clients send no credentials there).

Everything is read-only and comes from the catalog DB and the blob store of the mirror root.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
from collections.abc import Callable
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qs, quote, unquote

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from mirror import ngc_wire
from mirror.db import Database, make_engine, sqlite_url
from mirror.errors import DigestError
from mirror.paths import MirrorPaths, names_a_registry, validate_digest
from mirror.plan import newest_first
from mirror.schema import Entry, Version
from mirror.serve import ngc_docs as docs
from mirror.serve.asgi import Receive, Scope, Send, base_url, headers_of, query_of, respond_json
from mirror.serve.auth import ReadAuth, basic_password
from mirror.serve.blobs import BlobCorrupt, BlobMissing, BlobServer, ResponseAborted, Unsatisfiable

log = logging.getLogger(__name__)

T = TypeVar("T")
_KINDS = {"models": "model", "resources": "resource"}
LIST_PAGE_CAP = 1000
URL_PAGE_SIZE = 25
SEARCH_PAGE_CAP = 100
_MAX_BODY = 64 * 1024
# (org, team, name, rest of the path): one way to read a path that may or may not name a team
Candidate = tuple[str, str | None, str, list[str]]


class NgcError(Exception):
    def __init__(
        self, status: int, description: str, headers: list[tuple[str, str]] | None = None
    ) -> None:
        super().__init__(description)
        self.status, self.description, self.headers = status, description, headers or []


def _not_found(what: str) -> NgcError:
    return NgcError(404, f"{what} not found")


def _int_param(query: dict[str, list[str]], name: str, default: int) -> int:
    raw = query.get(name, [""])[0]
    if raw == "":
        return default
    if not raw.isdigit():
        raise NgcError(400, f"invalid {name}: {raw[:40]!r}")
    return int(raw)


def is_ngc_path(path: str) -> bool:
    """Whether `path` belongs to this API (the rest of /v2 is the registry API).

    A registry manifest or blob path (`.../manifests/<ref>`, `.../blobs/<digest>`) never is, so
    registry repositories named `models/...` or `org/...` stay pullable; `.../tags/list` is the
    registry's unless it is NGC's tag-metadata form (`/v2/repos/...`, `/v2/org/...`).
    """
    if path in ("/token", "/v3/keys/get-caller-info") or path.startswith("/_dl/"):
        return True
    parts = path.split("/")
    if len(parts) < 3 or parts[1] != "v2":
        return False
    head = parts[2]
    if head not in ("products", "search", "models", "resources", "repos", "org"):
        return False
    rest = parts[3:]
    if "versions" in rest and "files" in rest[rest.index("versions") :]:
        return True  # /versions/{v}/files/{path}: a file path may end in "manifests/x"
    if len(parts) >= 5 and parts[-2] in ("manifests", "blobs"):
        return False
    return not (parts[-2:] == ["tags", "list"] and head not in ("repos", "org"))


class NgcApi:
    """ASGI app for the NGC paths of one mirror root."""

    def __init__(self, root: Path, auth: ReadAuth, blobs: BlobServer) -> None:
        self.paths = MirrorPaths(Path(root))
        self.auth, self.blobs = auth, blobs
        self._db: Database | None = None
        # search hits by (kind, query) for the DB state they were computed on: a client walks
        # hundreds of pages of the same query, which must not rescan the catalog each time
        self._hits: dict[tuple[str, str], tuple[tuple[int, ...], list[int]]] = {}
        self._hits_lock = threading.Lock()

    @property
    def db(self) -> Database:
        if self._db is None:
            self._db = Database(make_engine(sqlite_url(self.paths.db)))
        return self._db

    async def _query(self, fn: Callable[[Session], T]) -> T:
        def run() -> T:
            with self.db.session() as s:
                return fn(s)

        return await asyncio.to_thread(run)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        method = str(scope.get("method", "GET")).upper()
        try:
            await self._dispatch(scope, receive, send, method)
        except NgcError as err:
            await respond_json(
                send,
                method,
                err.status,
                docs.error_envelope(err.status, err.description),
                err.headers,
            )
        except ResponseAborted:
            return  # the server closes the connection: the client sees a short body

    # -- routing ---------------------------------------------------------------------------
    async def _dispatch(self, scope: Scope, receive: Receive, send: Send, method: str) -> None:
        path = str(scope.get("path", "/"))
        query = query_of(scope)
        headers = headers_of(scope)
        if path == "/v3/keys/get-caller-info":
            return await self._caller_info(scope, receive, send)
        if method not in ("GET", "HEAD"):
            raise NgcError(405, "this mirror is read-only", [("Allow", "GET, HEAD")])
        if path == "/token":
            return await self._token(send, method, headers)
        if path.startswith("/_dl/"):
            return await self._download(scope, send, method, path, query, headers)
        if not self.auth.allowed(headers):
            raise NgcError(
                401,
                "a token is required to read this mirror",
                [("WWW-Authenticate", f'Bearer realm="{base_url(scope)}/token",service="ngc"')],
            )
        segs = [unquote(s) for s in path.split("/")[1:]]
        if len(segs) > 2 and segs[-1] == "":
            segs.pop()
        if any(s in ("", ".", "..") or "/" in s or "\x00" in s for s in segs):
            raise NgcError(400, "malformed path")
        top, rest = segs[1], segs[2:]
        if top == "products" and not rest:
            return await respond_json(send, method, 200, {"products": []})
        if top == "search":
            return await self._search(send, method, rest, query)
        ctx = _Ctx(scope, method, send, query)
        if top in _KINDS:
            return await self._guest(ctx, _KINDS[top], rest)
        if top == "repos":
            return await self._repos(ctx, rest)
        if top == "org":
            return await self._key_mode(ctx, rest)
        raise _not_found("Resource")

    async def _guest(self, ctx: _Ctx, kind: str, segs: list[str]) -> None:
        # download-URL listing: /v2/{k}/org/{org}[/team/{team}]/{name}/{ver}/files
        if segs and segs[0] == "org" and segs[-1] == "files":
            if len(segs) == 5:
                return await self._urls(ctx, kind, segs[1], None, segs[2], segs[3])
            if len(segs) == 7 and segs[2] == "team":
                return await self._urls(ctx, kind, segs[1], segs[3], segs[4], segs[5])
        candidates: list[Candidate] = []
        if len(segs) >= 2:
            candidates.append((segs[0], None, segs[1], segs[2:]))
        if len(segs) >= 3:
            candidates.append((segs[0], segs[1], segs[2], segs[3:]))
        await self._artifact(ctx, kind, candidates)

    async def _key_mode(self, ctx: _Ctx, segs: list[str]) -> None:
        if len(segs) < 3:
            raise _not_found("Resource")
        org, rest, team = segs[0], segs[1:], None
        if rest[0] == "team":
            if len(rest) < 4:
                raise _not_found("Resource")
            team, rest = rest[1], rest[2:]
        if len(rest) < 2:
            raise _not_found("Resource")
        if rest[0] == "repos":
            return await self._image(ctx, [(org, team, rest[1], rest[2:])])
        if rest[0] not in _KINDS:
            raise _not_found("Resource")
        kind, name, tail = _KINDS[rest[0]], rest[1], rest[2:]
        if len(tail) == 2 and tail[1] == "files" and tail[0] != "versions":
            return await self._urls(ctx, kind, org, team, name, tail[0])
        await self._artifact(ctx, kind, [(org, team, name, tail)])

    async def _repos(self, ctx: _Ctx, segs: list[str]) -> None:
        candidates: list[Candidate] = []
        if len(segs) >= 2:
            candidates.append((segs[0], None, segs[1], segs[2:]))
        if len(segs) >= 3:
            candidates.append((segs[0], segs[1], segs[2], segs[3:]))
        await self._image(ctx, candidates)

    # -- lookups ---------------------------------------------------------------------------
    async def _find(
        self, kind: str, candidates: list[Candidate], shape: Any
    ) -> tuple[Entry, list[str]]:
        """The first (org, team, name, tail) candidate whose tail fits and whose entry exists."""
        wanted = [(f"{o}/{t}/{n}" if t else f"{o}/{n}", tail) for o, t, n, tail in candidates]
        wanted = [(p, tail) for p, tail in wanted if shape(tail)]
        if not wanted:
            raise _not_found("Resource")

        def load(s: Session) -> tuple[Entry, list[str]] | None:
            for path, tail in wanted:
                entry = s.scalars(
                    select(Entry)
                    .where(Entry.kind == kind, Entry.path == path)
                    .where(Entry.removed_snapshot_id.is_(None))
                    .options(selectinload(Entry.versions).selectinload(Version.files))
                ).first()
                if entry is not None:
                    return entry, tail
            return None

        found = await self._query(load)
        if found is None:
            raise _not_found({"model": "Model", "image": "Repository"}.get(kind, "Resource"))
        return found

    # -- models and resources --------------------------------------------------------------
    async def _artifact(self, ctx: _Ctx, kind: str, candidates: list[Candidate]) -> None:
        def shape(tail: list[str]) -> bool:
            return not tail or (tail[0] == "versions" and (len(tail) <= 3 or tail[2] == "files"))

        entry, tail = await self._find(kind, candidates, shape)
        p = docs.prefix(kind)
        if not tail:
            return await ctx.json({p: docs.entry_doc(entry)})
        versions = newest_first(_live(entry))
        if len(tail) == 1:
            index, size = _style_a(ctx.query)
            page = versions[index * size : (index + 1) * size]
            return await ctx.json(
                {
                    f"{p}Versions": [docs.version_doc(v) for v in page],
                    "paginationInfo": ngc_wire.pagination_info(index, size, len(versions)),
                }
            )
        version = next((v for v in versions if v.version == tail[1]), None)
        if version is None:
            raise _not_found("Version")
        doc: dict[str, Any] = {p: docs.entry_doc(entry), f"{p}Version": docs.version_doc(version)}
        if len(tail) == 2:
            return await ctx.json(doc)
        if len(tail) > 3:  # public wget form: /versions/{v}/files/{path} -> the file itself
            return await self._redirect(ctx, version, "/".join(tail[3:]))
        index, size = _style_a(ctx.query)
        files = version.files[index * size : (index + 1) * size]
        doc[f"{p}Files"] = [docs.file_doc(f, version) for f in files]
        doc["paginationInfo"] = ngc_wire.pagination_info(index, size, len(version.files))
        await ctx.json(doc)

    async def _urls(
        self, ctx: _Ctx, kind: str, org: str, team: str | None, name: str, ver: str
    ) -> None:
        entry, _ = await self._find(kind, [(org, team, name, [])], lambda t: True)
        version = next((v for v in _live(entry) if v.version == ver), None)
        if version is None:
            raise _not_found("Version")
        stored = [f for f in version.files if f.blob_digest]
        if not stored:
            raise NgcError(
                404,
                f"{entry.path}:{ver} is not mirrored here (its files are not in this mirror's "
                "store); ask the mirror's operator to select it",
            )
        if "path" in ctx.query:
            wanted = ctx.query["path"][0]
            if ctx.query.get("redirect", [""])[0].lower() == "true":
                return await self._redirect(ctx, version, wanted)
            files = [f for f in stored if f.path == wanted]
            if not files:
                raise _not_found("File")
            index, size, total = 0, URL_PAGE_SIZE, 1
        else:
            index = _int_param(ctx.query, "page-number", 0)
            size = min(max(_int_param(ctx.query, "page-size", URL_PAGE_SIZE), 1), URL_PAGE_SIZE)
            total, files = len(stored), stored[index * size : (index + 1) * size]
        info = ngc_wire.pagination_info(index, size, total, next_page=False)
        await ctx.json(
            {
                "filepath": [f.path for f in files],
                "urls": [self._file_url(ctx, str(f.blob_digest), f.path) for f in files],
                "sha256_base64": [docs.sha256_b64(f) or "" for f in files],
                "paginationInfo": info,
            }
        )

    async def _redirect(self, ctx: _Ctx, version: Version, path: str) -> None:
        file = next((f for f in version.files if f.path == path and f.blob_digest), None)
        if file is None:
            raise _not_found("File")
        location = self._file_url(ctx, str(file.blob_digest), file.path)
        await respond_json(ctx.send, ctx.method, 302, {}, [("Location", location)])

    def _file_url(self, ctx: _Ctx, digest: str, path: str) -> str:
        algo, _, hexd = digest.partition(":")
        name = quote(path.rsplit("/", 1)[-1], safe="") or "file"
        url_path = f"/_dl/{algo}/{hexd}/{name}"
        query = f"?{self.auth.sign(url_path)}" if self.auth.enabled else ""
        return f"{base_url(ctx.scope)}{url_path}{query}"

    async def _download(
        self,
        scope: Scope,
        send: Send,
        method: str,
        path: str,
        query: dict[str, list[str]],
        headers: dict[str, str],
    ) -> None:
        raw = scope.get("raw_path")
        raw_path = raw.decode("latin-1").split("?", 1)[0] if isinstance(raw, bytes) else path
        segs = raw_path.split("/")
        if len(segs) != 5 or segs[2] != "sha256":
            raise _not_found("File")
        if self.auth.enabled and not (
            self.auth.signed(raw_path, query) or self.auth.allowed(headers)
        ):
            raise NgcError(403, "this download link is not valid (expired or altered)")
        digest = f"sha256:{segs[3]}"
        try:
            validate_digest(digest)
            blob = await asyncio.to_thread(self.blobs.open, digest)
        except (DigestError, BlobMissing):
            raise _not_found("File") from None
        except BlobCorrupt:
            raise NgcError(500, f"{digest} failed verification on this mirror") from None
        try:
            await self.blobs.send(
                send,
                method,
                blob,
                headers.get("range"),
                [("Content-Type", "application/octet-stream"), ("Etag", f'"{digest}"')],
            )
        except Unsatisfiable as exc:
            raise NgcError(
                416, "range not satisfiable", [("Content-Range", f"bytes */{exc.size}")]
            ) from None
        except BlobCorrupt:
            raise NgcError(500, f"{digest} failed verification on this mirror") from None

    # -- images ----------------------------------------------------------------------------
    async def _image(self, ctx: _Ctx, candidates: list[Candidate]) -> None:
        def shape(tail: list[str]) -> bool:
            return tail in ([], ["images"]) or (len(tail) == 2 and tail[0] in ("images", "tags"))

        entry, tail = await self._find("image", candidates, shape)
        if not tail:
            return await ctx.json(docs.repository_doc(entry))
        tags = docs.served_tags(entry)
        if len(tail) == 2:
            tag = next((t for t in tags if t.version == tail[1]), None)
            if tag is None:
                raise _not_found("Tag")
            doc = docs.tag_doc(tag)
            if tail[0] == "images":  # GetManifestByTagResponse: a few names suffice
                doc = {"name": entry.path, "tag": tag.version, "schemaVersion": 2}
            return await ctx.json(doc)
        index = _int_param(ctx.query, "page-number", 0)
        size = min(max(_int_param(ctx.query, "page-size", URL_PAGE_SIZE), 1), URL_PAGE_SIZE)
        info = ngc_wire.pagination_info(index, size, len(tags), next_page=False)
        await ctx.json(
            {
                "images": [docs.tag_doc(t) for t in tags[index * size : (index + 1) * size]],
                "paginationInfo": info,
            }
        )

    # -- search ----------------------------------------------------------------------------
    async def _search(
        self, send: Send, method: str, segs: list[str], query: dict[str, list[str]]
    ) -> None:
        catalog = len(segs) == 3 and segs[:2] == ["catalog", "resources"]
        keyed = (
            (len(segs) == 4 and segs[:3] == ["subscriber", "catalog", "resources"])
            or (len(segs) == 4 and segs[0] == "org" and segs[2] == "resources")
            or (
                len(segs) == 6 and segs[0] == "org" and segs[2] == "team" and segs[4] == "resources"
            )
        )
        if not (catalog or keyed):
            raise _not_found("Resource")
        rtype = segs[-1].upper()
        try:
            q = json.loads(query.get("q", ["{}"])[0] or "{}")
            if not isinstance(q, dict):
                raise ValueError("q must be a JSON object")
            page, page_size = int(q.get("page", 0)), int(q.get("pageSize", SEARCH_PAGE_CAP))
            if page < 0:
                raise ValueError("page must be >= 0")
        except (ValueError, TypeError) as exc:
            raise NgcError(400, f"invalid search query: {exc}") from None
        size = min(max(page_size, 1), SEARCH_PAGE_CAP)
        kind = docs.KIND_OF_TYPE.get(rtype)
        text = str(q.get("query", "")).strip()

        def run(s: Session) -> tuple[int, list[dict[str, Any]]]:
            if kind is None or not catalog:  # org/subscriber searches: the catalog has it all
                return 0, []
            ids = self._matching_ids(s, kind, text)
            chunk = ids[page * size : (page + 1) * size]
            if not chunk:
                return len(ids), []
            entries = {
                e.id: e
                for e in s.scalars(
                    select(Entry)
                    .where(Entry.id.in_(chunk))
                    .options(selectinload(Entry.versions).selectinload(Version.files))
                )
            }
            return len(ids), [docs.search_resource(entries[i]) for i in chunk]

        total, resources = await self._query(run)
        results = (
            [{"groupValue": rtype, "totalCount": total, "resources": resources}] if total else []
        )
        await respond_json(
            send,
            method,
            200,
            {
                "resultTotal": total,
                "resultPageTotal": -(-total // size),
                "params": {**q, "page": page, "pageSize": size},
                "results": results,
            },
        )

    def _db_stamp(self) -> tuple[int, ...]:
        out: list[int] = []
        for path in (self.paths.db, self.paths.db.with_name(self.paths.db.name + "-wal")):
            try:
                st = os.stat(path)
                out += [st.st_ino, st.st_size, st.st_mtime_ns]
            except OSError:
                out += [0, 0, 0]
        return tuple(out)

    def _matching_ids(self, s: Session, kind: str, text: str) -> list[int]:
        stamp = self._db_stamp()
        with self._hits_lock:
            cached = self._hits.get((kind, text))
        if cached is not None and cached[0] == stamp:
            return cached[1]
        rows = s.execute(
            select(Entry.id, Entry.path, Entry.name, Entry.display_name, Entry.description)
            .where(Entry.kind == kind, Entry.removed_snapshot_id.is_(None))
            .order_by(Entry.path)
        ).all()
        ids = [
            r.id
            for r in rows
            # [[registry]] repositories are served by the registry API, not listed as NGC's
            if not names_a_registry(r.path)
            and _matches(text, r.path, r.name, r.display_name, r.description)
        ]
        with self._hits_lock:
            if len(self._hits) >= 64:
                self._hits.clear()
            self._hits[(kind, text)] = (stamp, ids)
        return ids

    # -- credentials -----------------------------------------------------------------------
    async def _token(self, send: Send, method: str, headers: dict[str, str]) -> None:
        scheme, _, cred = headers.get("authorization", "").partition(" ")
        key: str | None = None
        if scheme.lower() == "basic":
            key = basic_password(cred.strip())
        elif scheme.lower() in ("apikey", "bearer"):
            key = cred.strip()
        if self.auth.enabled and (key is None or not self.auth.valid_token(key)):
            raise NgcError(401, "Invalid apikey")
        token, ttl = self.auth.issue()
        await respond_json(send, method, 200, {"token": token, "expires_in": ttl})

    async def _caller_info(self, scope: Scope, receive: Receive, send: Send) -> None:
        method = str(scope.get("method", "GET")).upper()
        if method != "POST":
            raise NgcError(405, "use POST", [("Allow", "POST")])
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if len(body) > _MAX_BODY:
                raise NgcError(413, "request body too large")
            if not message.get("more_body"):
                break
        form = parse_qs(body.decode("utf-8", "replace"))
        key = form.get("credentials", [""])[0]
        if self.auth.enabled and not self.auth.valid_token(key):
            raise NgcError(401, "Invalid credentials")
        await respond_json(send, method, 200, {"type": "SERVICE_KEY", "orgName": "nvidia"})


class _Ctx:
    def __init__(self, scope: Scope, method: str, send: Send, query: dict[str, list[str]]) -> None:
        self.scope, self.method, self.send, self.query = scope, method, send, query

    async def json(self, doc: Any) -> None:
        await respond_json(self.send, self.method, 200, doc)


def _live(entry: Entry) -> list[Version]:
    return [v for v in entry.versions if v.removed_snapshot_id is None]


def _style_a(query: dict[str, list[str]]) -> tuple[int, int]:
    size = _int_param(query, "page-size", LIST_PAGE_CAP)
    index = _int_param(query, "page-number", 0)
    return index, min(max(size, 1), LIST_PAGE_CAP)


def _matches(text: str, path: str, name: str, display: str, description: str) -> bool:
    """NGC's `query`: `resourceId:GLOB` (and other field:GLOB), `*`, or words."""
    if not text or text == "*":
        return True
    field, sep, pattern = text.partition(":")
    fields = {"resourceId": path, "name": name, "displayName": display}
    if sep and field in fields:
        return fnmatchcase(fields[field].lower(), pattern.strip().lower())
    if sep and field == "orgName":
        return fnmatchcase(path.split("/", 1)[0].lower(), pattern.strip().lower())
    needle = text.lower()
    hay = (path.lower(), (display or "").lower(), (description or "").lower())
    if any(c in needle for c in "*?["):
        return any(fnmatchcase(h, needle) for h in hay)
    return any(needle in h for h in hay)
