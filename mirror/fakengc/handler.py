"""Request handler of the fake NGC server: routing, auth and responses.

Path families (docs: ngc-api.md §4, §5, §8, §14.2), ``{kind}`` = ``models`` | ``resources``:

* guest: ``/v2/{kind}/{org}[/{team}]/{name}[/versions[/{ver}[/files]]]`` and the download
  URL listing ``/v2/{kind}/org/{org}[/team/{team}]/{name}/{ver}/files``;
* key mode: ``/v2/org/{org}[/team/{team}]/{kind}/{name}[...]`` (same tails);
* container images (§7): guest ``/v2/repos/{org}[/{team}]/{repo}[TAIL]``, key mode
  ``/v2/org/{org}[/team/{team}]/repos/{repo}[TAIL]``, TAIL = nothing (repository info),
  ``/images`` (tag list), ``/images/{tag}`` (manifest) or ``/tags/{tag}`` (tag metadata);
* search: ``/v2/search/catalog/resources/{TYPE}``, ``/v2/search/org/...``,
  ``/v2/search/subscriber/catalog/resources/{TYPE}``;
* ``/token``, ``/v3/keys/get-caller-info``, ``/v2/products``;
* ``/_dl/{kind}/{org}/{team|_}/{name}/{ver}/{path}``: the "presigned" file URLs.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import secrets
import socket
import ssl
import time
import traceback
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, cast
from urllib.parse import parse_qs, quote, unquote, urlsplit

from mirror import ngc_wire

from . import payloads
from .catalog import FakeEntry, FakeFile, FakeVersion
from .payloads import JSON, body_key
from .search import parse_q, search_response, search_scope
from .transfer import RangeNotSatisfiable, Shaping, parse_range, send_body

if TYPE_CHECKING:
    from .server import FakeNGC, Fault

_KINDS = {"models": "model", "resources": "resource"}
_MAX_BODY = 16 << 20


class _HttpError(Exception):
    def __init__(
        self, status: int, description: str | None = None, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(status, description)
        self.status, self.description, self.headers = status, description, headers or {}


def _not_found(what: str = "Resource") -> NoReturn:
    raise _HttpError(404, f"{what} not found")


def _int_param(query: dict[str, list[str]], name: str, default: int) -> int:
    values = query.get(name)
    if not values or values[0] == "":
        return default
    try:
        return int(values[0])
    except ValueError:
        raise _HttpError(400, f"Invalid {name}: {values[0]!r}") from None


def _image_tail_ok(tail: list[str]) -> bool:
    """Whether tail is what may follow a repository: nothing, images[/TAG] or tags/TAG."""
    return tail in ([], ["images"]) or (len(tail) == 2 and tail[0] in ("images", "tags"))


class Handler(BaseHTTPRequestHandler):
    """One connection of the fake server (HTTP/1.1 keep-alive)."""

    protocol_version = "HTTP/1.1"
    server_version = "FakeNGC/1.0"
    timeout = 300  # idle keep-alive connections end eventually

    _fault: Fault | None = None
    _body: bytes = b""
    _started: bool = False  # headers sent: an error can no longer become a 500

    def setup(self) -> None:
        super().setup()
        # headers and body leave in separate writes; without NODELAY, Nagle plus the client's
        # delayed ACK stalls every keep-alive response by ~40 ms
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if isinstance(self.connection, ssl.SSLSocket):
            # TLS (FakeNGC(ssl_context=...)): the server defers the handshake to this
            # thread; a failure (client rejects the certificate) ends just this connection.
            self.connection.do_handshake()

    def version_string(self) -> str:
        return self.server_version

    @property
    def fake(self) -> FakeNGC:
        """The FakeNGC this handler serves."""
        return cast("FakeNGC", self.server.fake)  # type: ignore[attr-defined]

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - base signature
        # Requests are recorded in FakeNGC.requests; stderr stays clean (and free of keys).
        return None

    def do_GET(self) -> None:  # noqa: N802 - http.server naming
        self._handle()

    do_HEAD = do_POST = do_PUT = do_DELETE = do_PATCH = do_GET  # noqa: N815

    # -- plumbing --------------------------------------------------------------------

    def _handle(self) -> None:
        self._fault, self._started = None, False
        split = urlsplit(self.path)
        target = split.path + (f"?{split.query}" if split.query else "")
        query = parse_qs(split.query, keep_blank_values=True)
        try:
            self._body = self._read_body()
            headers = {k.lower(): v for k, v in self.headers.items()}
            self.fake.record(self.command, split.path, query, headers, target)
            fault = self._fault = self.fake.take_fault(target)
            if fault is not None and fault.delay > 0:
                time.sleep(fault.delay)
            if fault is not None and (fault.status is not None or fault.body is not None):
                self._send_fault(fault)
            else:
                self._route(split.path, query)
        except _HttpError as exc:
            envelope = payloads.error_envelope(exc.status, exc.description)
            self._send_json(envelope, exc.status, exc.headers)
        except (ConnectionError, TimeoutError):
            self.close_connection = True  # the client went away (e.g. killed mid-download)
        except Exception:
            self.fake.record_error(traceback.format_exc())
            if self._started:
                self.close_connection = True
            else:
                self._send_json(payloads.error_envelope(500), 500)

    def _read_body(self) -> bytes:
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            self.close_connection = True  # cannot tell where the next request starts
            raise _HttpError(400, "Invalid Content-Length") from None
        if length > _MAX_BODY:
            self.close_connection = True
            raise _HttpError(413)
        return self.rfile.read(length) if length > 0 else b""

    def _begin(self, status: int, headers: dict[str, str]) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        if self._fault is not None and self._fault.retry_after is not None:
            self.send_header("Retry-After", self._fault.retry_after)
        self.end_headers()
        self._started = True

    def _shaping(self) -> Shaping | None:
        fault = self._fault
        if fault is None:
            return None
        shaping = Shaping(fault.truncate_at, fault.corrupt, fault.throttle_bps)
        if shaping.truncate_at is not None:
            self.close_connection = True  # the client must see a short body, then EOF
        return shaping if shaping.active else None

    def _send_bytes(
        self,
        data: bytes,
        status: int = 200,
        ctype: str = "application/json",
        headers: dict[str, str] | None = None,
    ) -> None:
        all_headers = {"Content-Type": ctype, "Content-Length": str(len(data))}
        all_headers.update(headers or {})
        self._begin(status, all_headers)
        if self.command != "HEAD":
            send_body(self.connection, self.wfile, data, 0, len(data), self._shaping())

    def _send_json(
        self, obj: JSON, status: int = 200, headers: dict[str, str] | None = None
    ) -> None:
        self._send_bytes(json.dumps(obj).encode(), status, headers=headers)

    def _send_fault(self, fault: Fault) -> None:
        status = fault.status if fault.status is not None else 200
        body = fault.body
        if body is None:
            body = json.dumps(payloads.error_envelope(status)).encode()
        self._send_bytes(body, status)

    def _allow(self, *methods: str) -> None:
        if self.command not in methods:
            raise _HttpError(405, "Method not allowed", {"Allow": ", ".join(methods)})

    def _require_bearer(self) -> None:
        if not self.fake.auth_required:
            return
        scheme, _, token = (self.headers.get("Authorization") or "").partition(" ")
        if scheme.lower() != "bearer" or not self.fake.check_bearer(token.strip()):
            raise _HttpError(
                401,
                "Invalid or missing token",
                {"WWW-Authenticate": f'Bearer realm="{self.fake.url}/token",service="ngc"'},
            )

    # -- routing ---------------------------------------------------------------------

    def _route(self, raw_path: str, query: dict[str, list[str]]) -> None:
        segs = [unquote(s) for s in raw_path.split("/")[1:]]
        if len(segs) > 1 and segs[-1] == "":
            segs.pop()  # tolerate one trailing slash
        if segs == ["token"]:
            self._allow("GET", "HEAD")
            return self._token()
        if segs == ["v3", "keys", "get-caller-info"]:
            self._allow("POST")
            return self._caller_info()
        if segs[:1] == ["_dl"]:
            self._allow("GET", "HEAD")
            return self._download(segs[1:])
        if segs[:1] != ["v2"] or len(segs) < 2:
            _not_found()
        self._allow("GET", "HEAD")
        top, rest = segs[1], segs[2:]
        if top == "products" and not rest:
            return self._send_json({"products": []})
        if top == "search":
            return self._search(rest, query)
        if top in _KINDS:
            return self._guest(_KINDS[top], rest, query)
        if top == "repos":
            return self._guest_repos(rest, query)
        if top == "org":
            self._require_bearer()
            return self._key_mode(rest, query)
        _not_found()

    def _guest(self, kind: str, segs: list[str], query: dict[str, list[str]]) -> None:
        if (
            len(segs) in (5, 7)
            and segs[0] == "org"
            and segs[-1] == "files"
            and (len(segs) == 5 or segs[2] == "team")
        ):
            team = segs[3] if len(segs) == 7 else None
            return self._urls(kind, segs[1], team, segs[-3], segs[-2], query)
        base = next((b for b in (2, 3) if len(segs) > b and segs[b] == "versions"), len(segs))
        if base not in (2, 3):
            _not_found()
        org, team, name = (segs[0], None, segs[1]) if base == 2 else (segs[0], segs[1], segs[2])
        self._artifact(kind, org, team, name, segs[base:], query)

    def _key_mode(self, segs: list[str], query: dict[str, list[str]]) -> None:
        if len(segs) < 3:
            _not_found()
        org, rest, team = segs[0], segs[1:], None
        if rest[0] == "team":
            if len(rest) < 4:
                _not_found()
            team, rest = rest[1], rest[2:]
        if rest[0] == "repos" and len(rest) >= 2:
            return self._image(org, team, rest[1], rest[2:], query)
        if rest[0] not in _KINDS or len(rest) < 2:
            _not_found()
        kind, name, tail = _KINDS[rest[0]], rest[1], rest[2:]
        if len(tail) == 2 and tail[1] == "files" and tail[0] != "versions":
            return self._urls(kind, org, team, name, tail[0], query)
        self._artifact(kind, org, team, name, tail, query)

    def _guest_repos(self, segs: list[str], query: dict[str, list[str]]) -> None:
        # /v2/repos/{org}[/{team}]/{repo}[/images[/{tag}] | /tags/{tag}]: the team segment is
        # optional, so e.g. "o/r/images" is the tag list of o/r or the repository "images" of
        # team o/r. Read without a team first; the first reading naming an existing repository
        # wins, else the first well-formed reading answers (with a 404).
        readings = [
            (segs[0], team, segs[n_team + 1], segs[n_team + 2 :])
            for n_team, team in ((0, None), (1, segs[1] if len(segs) > 1 else None))
            if len(segs) >= n_team + 2 and _image_tail_ok(segs[n_team + 2 :])
        ]
        if not readings:
            _not_found("Repository")
        catalog = self.fake.catalog
        org, team, name, tail = next(
            (r for r in readings if catalog.get("image", r[0], r[1], r[2]) is not None),
            readings[0],
        )
        self._image(org, team, name, tail, query)

    # -- catalog lookups -------------------------------------------------------------

    def _lookup(
        self, kind: str, org: str, team: str | None, name: str, ver: str | None = None
    ) -> tuple[FakeEntry, FakeVersion | None]:
        entry = self.fake.catalog.get(kind, org, team, name)
        if entry is None:
            _not_found({"model": "Model", "image": "Repository"}.get(kind, "Resource"))
        if ver is None:
            return entry, None
        version = entry.version(ver)
        if version is None:
            _not_found("Version")
        return entry, version

    def _presigned_url(
        self, kind: str, entry: FakeEntry, version: FakeVersion, file: FakeFile
    ) -> str:
        parts = (kind, entry.org, entry.team or "_", entry.name, version.version_id)
        prefix = "/".join(quote(p, safe="") for p in parts)
        # A fresh random signature per listing, like S3; /_dl does not check it.
        return (
            f"{self.fake.url}/_dl/{prefix}/{quote(file.path, safe='/')}?sig={secrets.token_hex(8)}"
        )

    # -- endpoints -------------------------------------------------------------------

    def _artifact(
        self,
        kind: str,
        org: str,
        team: str | None,
        name: str,
        tail: list[str],
        query: dict[str, list[str]],
    ) -> None:
        p = body_key(kind)
        if not tail:
            entry, _ = self._lookup(kind, org, team, name)
            return self._send_json(
                {p: payloads.entry_doc(entry), "requestStatus": payloads.success_status()}
            )
        if tail[0] != "versions" or len(tail) == 3 and tail[2] != "files":
            _not_found()
        if len(tail) == 1:
            entry, _ = self._lookup(kind, org, team, name)
            index, size = self._style_a(query)
            versions = entry.versions[index * size : (index + 1) * size]
            return self._send_json(
                {
                    f"{p}Versions": [payloads.version_doc(v) for v in versions],
                    "paginationInfo": ngc_wire.pagination_info(index, size, len(entry.versions)),
                    "requestStatus": payloads.success_status(),
                }
            )
        entry, version = self._lookup(kind, org, team, name, tail[1])
        assert version is not None
        doc: JSON = {p: payloads.entry_doc(entry), f"{p}Version": payloads.version_doc(version)}
        if len(tail) == 2:
            return self._send_json(doc)
        if len(tail) > 3 and tail[2] == "files":  # public wget form: 302 to the file
            return self._redirect(kind, entry, version, "/".join(tail[3:]))
        index, size = self._style_a(query)
        files = version.files[index * size : (index + 1) * size]
        doc[f"{p}Files"] = [payloads.file_doc(f, version) for f in files]
        doc["paginationInfo"] = ngc_wire.pagination_info(index, size, len(version.files))
        self._send_json(doc)

    def _image(
        self,
        org: str,
        team: str | None,
        name: str,
        tail: list[str],
        query: dict[str, list[str]],
    ) -> None:
        if not _image_tail_ok(tail):
            _not_found()
        entry, _ = self._lookup("image", org, team, name)
        if not tail:
            return self._send_json(payloads.repository_doc(entry))
        if len(tail) == 2:  # /images/{tag} (manifest) or /tags/{tag} (tag metadata)
            tag = entry.version(tail[1])
            if tag is None:
                _not_found("Tag")
            if tail[0] == "tags":
                return self._send_json(payloads.image_doc(tag))
            return self._send_json(payloads.manifest_doc(entry, tag))
        # Style B (§3.2): server-chosen page size, out-of-range pages are empty.
        cap = self.fake.url_page_size
        index, size = _int_param(query, "page-number", 0), _int_param(query, "page-size", cap)
        if index < 0 or size < 1:
            raise _HttpError(400, "page-size must be >= 1 and page-number >= 0")
        size = min(size, cap)
        tags = sorted(entry.versions, key=lambda t: (t.updated, t.version_id), reverse=True)
        self._send_json(
            {
                "images": [payloads.image_doc(t) for t in tags[index * size : (index + 1) * size]],
                "paginationInfo": ngc_wire.pagination_info(index, size, len(tags), next_page=False),
            }
        )

    def _style_a(self, query: dict[str, list[str]]) -> tuple[int, int]:
        cap = self.fake.list_page_size
        size, index = _int_param(query, "page-size", cap), _int_param(query, "page-number", 0)
        if size < 1 or index < 0:
            raise _HttpError(400, "page-size must be >= 1 and page-number >= 0")
        return index, min(size, cap)

    def _redirect(self, kind: str, entry: FakeEntry, version: FakeVersion, path: str) -> None:
        file = version.file(path)
        if file is None:
            _not_found("File")
        location = self._presigned_url(kind, entry, version, file)
        self._send_bytes(b"", 302, headers={"Location": location})

    def _urls(
        self,
        kind: str,
        org: str,
        team: str | None,
        name: str,
        ver: str,
        query: dict[str, list[str]],
    ) -> None:
        entry, version = self._lookup(kind, org, team, name, ver)
        assert version is not None
        cap = self.fake.url_page_size
        if "path" in query:
            if query.get("redirect", [""])[0].lower() == "true":
                return self._redirect(kind, entry, version, query["path"][0])
            file = version.file(query["path"][0])
            if file is None:
                _not_found("File")
            index, size, total, files = 0, cap, 1, [file]
        else:
            index, size = _int_param(query, "page-number", 0), _int_param(query, "page-size", cap)
            if index < 0 or size < 1:
                raise _HttpError(400, "page-size must be >= 1 and page-number >= 0")
            size = min(size, cap)
            total, files = len(version.files), version.files[index * size : (index + 1) * size]
        self._send_json(
            {
                "filepath": [f.path for f in files],
                "urls": [self._presigned_url(kind, entry, version, f) for f in files],
                "sha256_base64": [f.sha256_b64 for f in files],
                "paginationInfo": ngc_wire.pagination_info(index, size, total, next_page=False),
            }
        )

    def _search(self, segs: list[str], query: dict[str, list[str]]) -> None:
        scope = search_scope(segs)
        if scope is None:
            _not_found()
        if scope == "keyed":
            self._require_bearer()
        try:
            q, page, page_size = parse_q(query.get("q", [None])[0])
        except ValueError as exc:  # JSONDecodeError is a ValueError
            raise _HttpError(400, f"Invalid search query: {exc}") from None
        size = min(max(page_size, 1), self.fake.search_page_size)
        # Org and subscriber searches return nothing: the catalog search lists everything.
        entries = list(self.fake.catalog.entries) if scope == "catalog" else []
        self._send_json(search_response(entries, segs[-1].upper(), q, page, size))

    def _token(self) -> None:
        if self.fake.auth_required:
            scheme, _, cred = (self.headers.get("Authorization") or "").partition(" ")
            ok = False
            if scheme.lower() == "basic":
                try:
                    user, _, key = (
                        base64.b64decode(cred.strip(), validate=True).decode("utf-8").partition(":")
                    )
                except (binascii.Error, UnicodeDecodeError):
                    user, key = "", ""
                ok = user == "$oauthtoken" and self.fake.check_api_key(key)
            elif scheme.lower() == "apikey":  # seen in third-party code (§2.3)
                ok = self.fake.check_api_key(cred.strip())
            if not ok:
                raise _HttpError(401, "Invalid apikey")
        self._send_json({"token": self.fake.issue_token(), "expires_in": 3600})

    def _caller_info(self) -> None:
        form = parse_qs(self._body.decode("utf-8", "replace"))
        if not self.fake.check_api_key(form.get("credentials", [""])[0]):
            raise _HttpError(401, "Invalid credentials")
        self._send_json(
            {"type": "SERVICE_KEY", "orgName": "nvidia", "requestStatus": payloads.success_status()}
        )

    def _download(self, segs: list[str]) -> None:
        if len(segs) < 6 or segs[0] not in _KINDS.values():
            _not_found("File")
        kind, org, team, name, ver = segs[0], segs[1], segs[2], segs[3], segs[4]
        _, version = self._lookup(kind, org, None if team == "_" else team, name, ver)
        assert version is not None
        file = version.file("/".join(segs[5:]))
        if file is None:
            _not_found("File")
        # Read content once: a test may swap it concurrently.
        content, disk_path = file.content, file.disk_path
        source: bytes | Path
        if disk_path is not None:
            source, size = disk_path, os.stat(disk_path).st_size
        else:
            source = content or b""
            size = len(source)
        try:
            rng = parse_range(self.headers.get("Range"), size)
        except RangeNotSatisfiable:
            raise _HttpError(
                416, "Range not satisfiable", {"Content-Range": f"bytes */{size}"}
            ) from None
        start, stop = rng if rng is not None else (0, size)
        headers = {
            "Content-Type": "application/octet-stream",
            "Content-Length": str(stop - start),
            "Accept-Ranges": "bytes",
        }
        if rng is not None:
            headers["Content-Range"] = f"bytes {start}-{stop - 1}/{size}"
        self._begin(206 if rng is not None else 200, headers)
        if self.command != "HEAD":
            send_body(self.connection, self.wfile, source, start, stop, self._shaping())
