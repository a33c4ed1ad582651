"""The web pages of `mirror serve`: search and browse the mirror like the NGC website.

A plain ASGI app, `WebApp(root)`, for every path the API apps do not answer:

    GET /                                   search box and what the mirror holds
    GET /search?q=bert[&kind=..][&limit=N]  grouped hits, exactly as `mirror search` groups them
    GET /entry/<kind>/<org>/[<team>/]<name>[?version=V]
                                            `mirror show`: versions, files, sha256, commands
    GET /static/<file>                      the stylesheet and the copy-button script

HEAD answers like GET without a body; anything else is 405. Search runs `index.search.Index`
(the CLI's ranking, grouping and did-you-mean, rendered from the same `as_dict()` document that
`mirror search --json` prints); entries come from `mirror.show.entry_detail`. Neither is
reimplemented here.

Safety: every catalog string is `html.escape`d (NGC descriptions are untrusted text and are shown
literally, never as markup); pages carry a Content-Security-Policy that allows scripts and styles
from this origin only (no inline code, no CDN); static files are served from a fixed allow-list,
so no request path ever becomes a filesystem path (STYLE.md habit 5).

Freshness: the mirror is read, never written (no migrations, no index rebuild; those are
`mirror db upgrade` and `mirror index rebuild`). The catalog engine is reopened when mirror.db is
replaced; SQLite WAL gives every request a committed view while a sync or import writes. The
search index is reopened when `search/current` points at a new generation and its searcher
refreshed when a sync commits into the current one (index/writer.py).
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlencode

from sqlalchemy import exists, func, select

from index.search import Index, IndexMissing, QuerySyntaxError
from index.writer import current_dir
from mirror.db import Database, current_revision, head_revision, make_engine, sqlite_url
from mirror.errors import DatabaseError, MirrorError, UsageError
from mirror.paths import MirrorPaths
from mirror.schema import Entry, File, Snapshot, Version
from mirror.serve.asgi import Receive, Scope, Send
from mirror.serve.web_pages import (
    KIND_TITLES,
    KINDS,
    MAX_LIMIT,
    entry_body,
    error_body,
    esc,
    results,
    search_form,
)
from mirror.serve.web_pages import (
    page as render_page,
)
from mirror.show import entry_detail

log = logging.getLogger(__name__)


DEFAULT_LIMIT = 20  # the CLI's default, so the first page equals `mirror search`
MAX_QUERY = 512
STATIC_DIR = Path(__file__).with_name("static")
STATIC_TYPES = {
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".svg": "image/svg+xml",
}
# own scripts and styles only: no inline code, no third-party origin, no framing
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
HOST_RE = re.compile(
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\])"
    r"(?::[0-9]{1,5})?"
)


@dataclass
class Response:
    status: int
    body: bytes
    content_type: str = "text/html; charset=utf-8"
    headers: list[tuple[str, str]] = field(default_factory=list)


class PageError(Exception):
    """An error page: status, a title, a message and an optional hint (a command that helps)."""

    def __init__(self, status: int, title: str, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.status, self.title, self.message, self.hint = status, title, message, hint


# -- read-only access to the mirror -------------------------------------------------------------
class _Catalog:
    """The catalog DB, opened once and reopened when mirror.db is replaced; never migrated."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._db: Database | None = None
        self._stamp: tuple[int, int] | None = None

    def get(self) -> Database:
        with self._lock:
            try:
                st = os.stat(self.path)
            except OSError:
                self._close()
                raise PageError(
                    503,
                    "No mirror yet",
                    f"there is no catalog at {self.path}",
                    "mirror sync   (or mirror import /media/usb)",
                ) from None
            stamp = (st.st_dev, st.st_ino)
            if self._db is not None and stamp == self._stamp:
                return self._db
            self._close()
            engine = make_engine(sqlite_url(self.path))
            try:
                have, want = current_revision(engine), head_revision()
            except Exception:
                engine.dispose()
                raise
            if have != want:  # not cached: the next request checks again after an upgrade
                engine.dispose()
                raise DatabaseError(
                    f"the catalog schema is at revision {have}, this server expects {want}",
                    hint="mirror db upgrade",
                )
            self._db, self._stamp = Database(engine), stamp
            return self._db

    def _close(self) -> None:
        if self._db is not None:
            self._db.engine.dispose()
        self._db, self._stamp = None, None

    def close(self) -> None:
        with self._lock:
            self._close()


class _Search:
    """One open index generation, shared by requests (one search at a time: Whoosh searchers
    are not meant for concurrent use); reopened when `current` moves, refreshed on commits."""

    def __init__(self, search_root: Path) -> None:
        self.root = search_root
        self._lock = threading.Lock()
        self._ix: Index | None = None
        self._gen: Path | None = None

    def run(self, query: str, **kw: Any) -> dict[str, Any]:
        with self._lock:
            for attempt in (1, 2):
                try:
                    return self._current().search(query, **kw).as_dict()
                except (QuerySyntaxError, IndexMissing):
                    raise
                except Exception:
                    # a generation removed under an old reader: reopen once, then give up
                    self._close()
                    if attempt == 2:
                        raise
                    log.warning("search index changed under a reader; reopening", exc_info=True)
        raise AssertionError("unreachable")

    def _current(self) -> Index:
        gen = current_dir(self.root)
        if gen is None:
            self._close()
            raise IndexMissing(str(self.root))
        if self._ix is None or gen != self._gen:
            self._close()
            self._ix, self._gen = Index(self.root), gen
        elif not self._ix.searcher.up_to_date():
            self._ix.close()  # the next use opens a searcher on the newest commit
        return self._ix

    def _close(self) -> None:
        if self._ix is not None:
            self._ix.close()
        self._ix, self._gen = None, None

    def close(self) -> None:
        with self._lock:
            self._close()


def _summary(db: Database) -> tuple[list[tuple[str, int, int]], str | None]:
    """[(kind, entries, entries with a version whose files are all stored)], last sync date."""
    live = Entry.removed_snapshot_id.is_(None)
    complete = select(Version.entry_id).where(
        Version.removed_snapshot_id.is_(None),
        exists().where(File.version_id == Version.id),
        ~exists().where(File.version_id == Version.id, File.blob_digest.is_(None)),
    )
    with db.session() as s:
        by_kind = select(Entry.kind, func.count()).where(live).group_by(Entry.kind)
        # (a Result has .keys(): dict(result) would take it for a mapping)
        total = {kind: int(n) for kind, n in s.execute(by_kind)}
        local = {kind: int(n) for kind, n in s.execute(by_kind.where(Entry.id.in_(complete)))}
        last = s.scalar(select(func.max(Snapshot.created_at)).where(Snapshot.complete.is_(True)))
    kinds = [k for k in KINDS if k in total] + sorted(set(total) - set(KINDS))
    rows = [(k, total[k], local.get(k, 0)) for k in kinds]
    return rows, (last.strftime("%Y-%m-%d %H:%M UTC") if last else None)


# -- the app ------------------------------------------------------------------------------------
class WebApp:
    """The ASGI callable serving the web pages of one mirror root."""

    def __init__(self, root: Path | str) -> None:
        self.paths = MirrorPaths(Path(root))
        self._catalog = _Catalog(self.paths.db)
        self._search = _Search(self.paths.search)
        self._static = {
            p.name: p for p in STATIC_DIR.glob("*") if p.is_file() and p.suffix in STATIC_TYPES
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # lifespan belongs to the app that mounts this one (close())
            return
        method = str(scope.get("method", "GET")).upper()
        response = await asyncio.to_thread(self.handle, scope)
        headers = [
            ("content-type", response.content_type),
            ("content-length", str(len(response.body))),
            ("x-content-type-options", "nosniff"),
            ("referrer-policy", "no-referrer"),
            *response.headers,
        ]
        if response.content_type.startswith("text/html"):
            headers += [
                ("content-security-policy", CSP),
                ("x-frame-options", "DENY"),
                ("cache-control", "no-cache"),
            ]
        await send(
            {
                "type": "http.response.start",
                "status": response.status,
                "headers": [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers],
            }
        )
        await send(
            {"type": "http.response.body", "body": b"" if method == "HEAD" else response.body}
        )

    def close(self) -> None:
        self._search.close()
        self._catalog.close()

    def handle(self, scope: Scope) -> Response:
        """Answer one request (blocking: DB and index reads); never raises."""
        method = str(scope.get("method", "GET")).upper()
        if method not in ("GET", "HEAD"):
            page = render_page(
                "Method not allowed",
                error_body(
                    "Method not allowed",
                    f"{method} is not supported: this mirror is read-only.",
                    None,
                ),
            )
            return Response(405, page, headers=[("allow", "GET, HEAD")])
        raw = scope.get("raw_path")
        path = raw.decode("latin-1") if isinstance(raw, bytes) else quote(str(scope["path"]))
        path = path.split("?", 1)[0]
        query = parse_qs(
            bytes(scope.get("query_string", b"")).decode("latin-1"),
            encoding="utf-8",
            errors="replace",
        )
        try:
            if path == "/":
                return Response(200, self._home())
            if path == "/search":
                return self._search_page(query)
            if path.startswith("/entry/"):
                return Response(200, self._entry_page(path[len("/entry/") :], query, scope))
            if path.startswith("/static/"):
                return self._static_file(path[len("/static/") :])
            raise PageError(404, "Not found", "There is no page at this address.")
        except PageError as err:
            return Response(
                err.status,
                render_page(err.title, error_body(err.title, err.message, err.hint)),
            )
        except MirrorError as err:  # catalog locked for too long, schema mismatch...
            log.warning("web page %s: %s", path[:200], err)
            body = error_body("Mirror unavailable", err.message, err.hint)
            return Response(503, render_page("Mirror unavailable", body))
        except Exception:
            log.exception("web page %s failed", path[:200])
            body = error_body(
                "Server error", "Something went wrong; the server log has details.", None
            )
            return Response(500, render_page("Server error", body))

    # -- pages ----------------------------------------------------------------------------------
    def _home(self) -> bytes:
        rows, last = _summary(self._catalog.get())
        stats = (
            "".join(
                f'<tr><th scope="row"><a href="/search?{esc(urlencode({"q": "*", "kind": kind}))}">'
                f"{esc(KIND_TITLES.get(kind, kind))}</a></th>"
                f'<td class="num">{total}</td><td class="num">{local}</td></tr>'
                for kind, total, local in rows
            )
            or '<tr><td colspan="3">The catalog is empty: run <code>mirror sync</code>.</td></tr>'
        )
        examples = " ".join(
            f'<a href="/search?{urlencode({"q": q})}">{esc(q)}</a>'
            for q in ("bert", "resnet50", "pytorch", "tensorrt")
        )
        body = (
            '<section class="hero"><h1>NGC catalog mirror</h1>'
            "<p>Search the models, resources and containers mirrored on this server.</p>"
            f"{search_form('', None, big=True)}"
            f'<p class="examples">Try: {examples}</p></section>'
            '<section class="summary"><h2>In this mirror</h2>'
            '<table class="stats"><thead><tr><th scope="col">Kind</th>'
            '<th scope="col" class="num">In the catalog</th>'
            '<th scope="col" class="num">With files mirrored here</th></tr></thead>'
            f"<tbody>{stats}</tbody></table>"
            + (f'<p class="muted">Last sync or import: {esc(last)}</p>' if last else "")
            + "</section>"
        )
        return render_page("NGC catalog mirror", body, header_form=False)

    def _search_page(self, query: dict[str, list[str]]) -> Response:
        text = query.get("q", [""])[0].strip()
        kind = query.get("kind", [""])[0] or None
        if kind is not None and kind not in KINDS:
            raise PageError(400, "Unknown kind", f"kind must be one of {', '.join(KINDS)}.")
        limit = _int_param(query, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
        filters = {k: query.get(k, [""])[0] or None for k in ("framework", "precision")}
        form = search_form(text, kind)
        if not text:
            body = (
                f'{form}<p class="notice">Type a few words to search, e.g. '
                f'<a href="/search?q=bert">bert</a>.</p>'
            )
            return Response(200, render_page("Search", body, header_form=False))
        if len(text) > MAX_QUERY:
            body = f'{form}<p class="notice error">That query is too long.</p>'
            return Response(400, render_page("Search", body, header_form=False))
        try:
            doc = self._search.run(text, kind=kind, limit=limit, **filters)
        except QuerySyntaxError as exc:
            body = (
                f'{form}<div class="notice error"><p>The query could not be read: '
                f"{esc(exc)}</p><p>Quote special characters, e.g. "
                f"<code>&quot;seqLen=128&quot;</code>, or use plain words.</p></div>"
            )
            return Response(400, render_page("Search", body, header_form=False))
        except IndexMissing:
            raise PageError(
                503,
                "Search index missing",
                "The search index is missing or from another version of mirror.",
                "mirror index rebuild",
            ) from None
        body = form + results(doc, kind, limit, filters)
        title = f"All {KIND_TITLES[kind].lower()}" if text == "*" and kind else f"{text} - search"
        return Response(200, render_page(title, body, header_form=False))

    def _entry_page(self, raw: str, query: dict[str, list[str]], scope: Scope) -> bytes:
        kind, ref_path = _entry_ref(raw)
        version = query.get("version", [""])[0] or None
        ref = f"{ref_path}:{version}" if version else ref_path
        try:
            doc = entry_detail(self._catalog.get(), ref, kind=kind)
        except UsageError as err:
            raise PageError(404, "Not in this mirror", err.message, err.hint) from None
        return render_page(
            doc["entry"]["display_name"] or doc["entry"]["path"],
            entry_body(doc, _host(scope), str(scope.get("scheme") or "http")),
        )

    def _static_file(self, raw: str) -> Response:
        # an allow-list of names: '..', '%2e%2e', '%2f' and friends can never match one
        found = self._static.get(raw) if re.fullmatch(r"[A-Za-z0-9_-]+\.[a-z]+", raw) else None
        if found is None:
            raise PageError(404, "Not found", "There is no such file.")
        try:
            data = found.read_bytes()
        except OSError:
            raise PageError(404, "Not found", "There is no such file.") from None
        return Response(200, data, STATIC_TYPES[found.suffix], [("cache-control", "max-age=300")])


# -- request helpers ----------------------------------------------------------------------------
def _int_param(query: dict[str, list[str]], name: str, default: int, lo: int, hi: int) -> int:
    raw = query.get(name, [""])[0]
    if not raw:
        return default
    if not raw.isdigit():
        raise PageError(400, "Bad request", f"{name} must be a number.")
    return max(lo, min(hi, int(raw)))


def _entry_ref(raw: str) -> tuple[str, str]:
    """'<kind>/<org>/[<team>/]<name>' (percent-encoded) -> (kind, path); 404 otherwise."""
    missing = PageError(404, "Not found", "There is no page at this address.")
    try:
        text = unquote(raw, encoding="utf-8", errors="strict")
    except UnicodeDecodeError:
        raise missing from None
    kind, _, path = text.partition("/")
    parts = path.split("/")
    if (
        kind not in KINDS
        or len(parts) < 2
        or any(p in ("", ".", "..") or "\\" in p or "\x00" in p or "%" in p for p in parts)
    ):
        raise missing
    return kind, path


def _host(scope: Scope) -> str:
    """The Host the client used (for commands to copy); the server address when it is odd."""
    for key, value in scope.get("headers", []):
        if key.lower() == b"host":
            host = bytes(value).decode("latin-1").strip()
            if HOST_RE.fullmatch(host):
                return host
            break
    server = scope.get("server")
    if not server:
        return "localhost"
    name = f"[{server[0]}]" if ":" in str(server[0]) else str(server[0])
    return name if server[1] is None else f"{name}:{server[1]}"
