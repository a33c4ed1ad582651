"""The NGC catalog API, as NVIDIA's own client speaks it (shared/reference/ngc-api.md).

Guest mode (no key) uses `/v2/models/{org}[/{team}]/...`; key mode exchanges the API key for
a bearer token per org/team scope and uses `/v2/org/{org}[/team/{team}]/models/...` (§2, §4).
Listing is the search API (§8); version and file lists page with `page-number` (§3.2 style A);
the download-URL listing gives presigned URLs (§4.5, style B).

The API key is held in a `Secret` and only ever placed in an Authorization header.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from typing import Any
from urllib.parse import quote, urlencode

from mirror.config import NgcSettings
from mirror.errors import HTTPStatusError, ProtocolError, UpstreamError
from mirror.http import HttpClient
from mirror.models import ListedEntry, RemoteFile, RemoteVersion
from mirror.ngc_wire import HELD_ATTRIBUTE
from mirror.paths import safe_relpath, validate_digest

log = logging.getLogger(__name__)

# kind -> (search type, URL segment, info key, versions key, version key, files key)
KIND_SHAPES = {
    "model": ("MODEL", "models", "model", "modelVersions", "modelVersion", "modelFiles"),
    "resource": ("RECIPE", "resources", "recipe", "recipeVersions", "recipeVersion", "recipeFiles"),
    # container repositories: top-level Repository body; tags via /images (§7)
    "image": ("CONTAINER", "repos", "", "images", "", ""),
}
_KIND_OF = {"MODEL": "model", "RECIPE": "resource", "CONTAINER": "image"}
SEARCH_FIELDS = [
    "attributes",
    "createdBy",
    "dateCreated",
    "dateModified",
    "description",
    "displayName",
    "guestAccess",
    "isPublic",
    "labels",
    "latestVersionId",
    "name",
    "orgName",
    "sharedWithOrgs",
    "sharedWithTeams",
    "teamName",
]
LIST_PAGE_SIZE = 1000


def sha256_b64_to_hex(value: str, url: str) -> str:
    """NGC publishes base64 of the raw 32-byte SHA-256 (§4.4); we store hex."""
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ProtocolError(f"sha256_base64 {value[:60]!r} is not base64", url=url) from None
    if len(raw) != 32:
        raise ProtocolError(f"sha256_base64 decodes to {len(raw)} bytes, not 32", url=url)
    return raw.hex()


def _obj(value: Any, what: str, url: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ProtocolError(
            f"expected a JSON object for {what}, got {type(value).__name__}", url=url
        )
    return value


def _list(value: Any, what: str, url: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise ProtocolError(f"expected a JSON list for {what}, got {type(value).__name__}", url=url)
    return value


def _str(value: Any) -> str | None:
    if value is None:
        return None
    return str(value)


def _int(value: Any) -> int | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _segs(org: str, team: str | None) -> tuple[str, str]:
    """(guest form `org[/team]`, key form `org/ORG[/team/TEAM]`) URL segments."""
    o = quote(org, safe="")
    if team:
        t = quote(team, safe="")
        return f"{o}/{t}", f"org/{o}/team/{t}"
    return o, f"org/{o}"


class NgcAuth:
    """Headers for NGC API calls: a guest token, or a bearer token per org/team scope."""

    def __init__(self, settings: NgcSettings, http: HttpClient, guest_token: str) -> None:
        self.settings = settings
        self.http = http
        self.guest_token = guest_token
        self._tokens: dict[str, tuple[str, float]] = {}
        self._lock = threading.Lock()

    @property
    def keyed(self) -> bool:
        return self.settings.api_key is not None

    def _scope_query(self, org: str | None, team: str | None) -> str:
        scopes = []
        if org:
            scopes.append(("scope", f"group/ngc:{org}"))
            if team:
                scopes.append(("scope", f"group/ngc:{org}/{team}"))
        return urlencode([("service", "ngc"), *scopes])

    def _token(self, org: str | None, team: str | None, *, force: bool = False) -> str:
        assert self.settings.api_key is not None
        key = self.settings.api_key.reveal()
        if key.startswith("nvapi-"):
            return key  # scoped keys are sent as-is (§2.4)
        scope = f"{org or ''}/{team or ''}"
        with self._lock:
            cached = self._tokens.get(scope)
            if cached and not force and cached[1] - time.time() > 300:
                return cached[0]
            url = f"{self.settings.auth_url}/token?{self._scope_query(org, team)}"
            basic = base64.b64encode(f"$oauthtoken:{key}".encode()).decode()
            try:
                body = self.http.get_json(url, headers=lambda: {"Authorization": f"Basic {basic}"})
            except HTTPStatusError as exc:
                if exc.status == 401:
                    raise UpstreamError(
                        "the NGC token service rejected the API key",
                        url=url,
                        hint="check NGC_API_KEY (or [ngc] api_key); keys are created in the "
                        "NGC web UI under Setup > API Key",
                    ) from None
                raise
            doc = _obj(body, "token response", url)
            token = doc.get("token")
            if not isinstance(token, str) or not token:
                raise ProtocolError("token response has no token", url=url)
            expires = _int(doc.get("expires_in")) or 0
            self._tokens[scope] = (token, time.time() + expires)
            return token

    def headers(self, org: str | None = None, team: str | None = None) -> dict[str, str]:
        hdrs = {"Accept": "application/json"}
        if not self.keyed:
            hdrs["X-NGC-Guest-Token"] = self.guest_token
            return hdrs
        hdrs["Authorization"] = f"Bearer {self._token(org, team)}"
        if self.settings.org:
            hdrs["nv-ngc-org"] = self.settings.org
            if self.settings.team:
                hdrs["nv-ngc-team"] = self.settings.team
        return hdrs

    def refresh(self, org: str | None = None, team: str | None = None) -> bool:
        """Called on a 401: fetch a fresh token; False in guest mode (nothing to refresh)."""
        if not self.keyed or self.settings.api_key is None:
            return False
        if self.settings.api_key.reveal().startswith("nvapi-"):
            return False
        self._token(org, team, force=True)
        return True


class NgcSource:
    """Lists and fetches NGC models and resources."""

    def __init__(self, settings: NgcSettings, http: HttpClient, *, guest_token: str | None = None):
        self.settings = settings
        self.http = http
        self.base = settings.api_url
        self.auth = NgcAuth(settings, http, guest_token or str(uuid.uuid4()))

    # -- plumbing -------------------------------------------------------------------------
    def _get(self, path: str, org: str | None = None, team: str | None = None) -> Any:
        url = path if path.startswith("http") else f"{self.base}{path}"
        return self.http.get_json(
            url,
            headers=lambda: self.auth.headers(org, team),
            on_unauthorized=lambda: self.auth.refresh(org, team),
        )

    def _entry_base(self, kind: str, org: str, team: str | None, name: str) -> str:
        seg = KIND_SHAPES[kind][1]
        guest, keyed = _segs(org, team)
        n = quote(name, safe="")
        if self.auth.keyed:
            return f"/v2/{keyed}/{seg}/{n}"
        return f"/v2/{seg}/{guest}/{n}"

    # -- listing ---------------------------------------------------------------------------
    def list_entries(self, kind: str, pattern: str = "*") -> Iterator[ListedEntry]:
        """Every entry of `kind` whose resource id matches `pattern`, via the search API."""
        stype = KIND_SHAPES[kind][0]
        seen: set[str] = set()
        bases = [f"/v2/search/catalog/resources/{stype}"]
        if self.auth.keyed and self.settings.org:
            _, keyed = _segs(self.settings.org, self.settings.team or None)
            bases.append(f"/v2/search/{keyed}/resources/{stype}")
        for base in bases:
            for item in self._search_pages(base, stype, pattern):
                if item.path not in seen:
                    seen.add(item.path)
                    yield item

    def _search_pages(self, base: str, stype: str, pattern: str) -> Iterator[ListedEntry]:
        page = 0
        while True:
            q = {
                "fields": SEARCH_FIELDS,
                "filters": [],
                "orderBy": [{"field": "score", "value": "ASC"}],
                "page": page,
                "pageSize": self.settings.search_page_size,
                "query": f"resourceId:{pattern}",
                "queryFields": ["name", "displayName", "description", "all"],
            }
            url = f"{self.base}{base}?{urlencode({'q': json.dumps(q, sort_keys=True)})}"
            body = _obj(self._get(url), "search page", url)
            for group in _list(body.get("results"), "results", url):
                group = _obj(group, "search group", url)
                if group.get("groupValue") not in (None, stype):
                    continue
                for res in _list(group.get("resources"), "resources", url):
                    item = self._listed(_obj(res, "search hit", url), stype, url)
                    if item is not None:
                        yield item
            total = _int(body.get("resultPageTotal")) or 0
            page += 1
            if page >= total:
                return

    def _listed(self, res: dict[str, Any], stype: str, url: str) -> ListedEntry | None:
        rid = res.get("resourceId")
        if not isinstance(rid, str):
            raise ProtocolError("search hit without resourceId", url=url)
        parts = rid.split("/")
        try:
            safe_relpath(rid)
        except Exception:
            log.warning("skipping search hit with unsafe resourceId %r", rid[:200])
            return None
        if len(parts) not in (2, 3):
            log.warning("skipping search hit with unexpected resourceId %r", rid[:200])
            return None
        org, team, name = (parts[0], None, parts[1]) if len(parts) == 2 else tuple(parts)
        attrs: dict[str, str] = {}
        for a in _list(res.get("attributes"), "attributes", url):
            if isinstance(a, dict) and isinstance(a.get("key"), str):
                attrs[a["key"]] = str(a.get("value", ""))
        labels: list[str] = []
        for lab in _list(res.get("labels"), "labels", url):
            if isinstance(lab, dict) and lab.get("key") == "general":
                labels.extend(str(v) for v in _list(lab.get("values"), "label values", url))
        kind = _KIND_OF[stype]
        if kind == "image":  # containers list their newest tag and size under other keys
            attrs.setdefault("latestVersionIdStr", attrs.get("latestTag", ""))
            attrs.setdefault("latestVersionSizeInBytes", attrs.get("size", ""))
        return ListedEntry(
            kind=kind,
            org=org,
            team=team,
            name=name,
            display_name=_str(res.get("displayName")) or name,
            description=_str(res.get("description")) or "",
            created=_str(res.get("dateCreated")),
            updated=_str(res.get("dateModified")),
            latest_version=attrs.get("latestVersionIdStr") or None,
            held=attrs.get(HELD_ATTRIBUTE) or None,
            latest_size=_int(attrs.get("latestVersionSizeInBytes")),
            framework=attrs.get("framework") or None,
            precision=attrs.get("precision") or None,
            application=attrs.get("application") or None,
            labels=tuple(labels),
        )

    # -- one entry -------------------------------------------------------------------------
    def info(self, e: ListedEntry) -> dict[str, Any]:
        """The entry's info object (`model` / `recipe`; a container's body is the object)."""
        key = KIND_SHAPES[e.kind][2]
        url = f"{self._entry_base(e.kind, e.org, e.team, e.name)}?resolve-labels=false"
        body = _obj(self._get(url, e.org, e.team), "info", url)
        if not key:
            if "latestTag" in body:
                body.setdefault("latestVersionIdStr", body["latestTag"])
            return body
        return _obj(body.get(key, {}), key, url)

    def image_tags(self, e: ListedEntry) -> list[RemoteVersion]:
        """A container repository's tags, newest first (§7, pagination style B)."""
        base = f"{self._entry_base(e.kind, e.org, e.team, e.name)}/images"
        out: list[RemoteVersion] = []
        for url, body in self._pages_b(base, "images", e):
            for img in _list(body.get("images"), "images", url):
                img = _obj(img, "image", url)
                tag = img.get("tag")
                if not isinstance(tag, str) or not tag:
                    raise ProtocolError("tag entry without tag", url=url)
                digest = img.get("digest")
                if digest is not None:
                    try:
                        validate_digest(str(digest))
                    except Exception:
                        raise ProtocolError(f"tag {tag!r} has an invalid digest", url=url) from None
                out.append(
                    RemoteVersion(
                        version=tag,
                        status="UPLOAD_COMPLETE",
                        size=_int(img.get("size")),
                        created=_str(img.get("updatedDate")),
                        updated=_str(img.get("updatedDate")),
                        description=_str(img.get("description")) or "",
                        manifest_digest=_str(digest),
                    )
                )
        return out

    def _pages_b(self, path: str, key: str, e: ListedEntry) -> Iterator[tuple[str, Any]]:
        """Style B pagination (§3.2): page-number=1.. while totalResults exceeds what was
        seen; yields (url, body) and stops at a page whose `key` list is empty."""
        page = 0
        while True:
            url = f"{self.base}{path}" + (f"?page-number={page}" if page else "")
            body = _obj(self._get(url, e.org, e.team), key, url)
            yield url, body
            info = body.get("paginationInfo")
            total = _int(info.get("totalResults")) if isinstance(info, dict) else None
            size = _int(info.get("size")) if isinstance(info, dict) else None
            page += 1
            if not body.get(key) or not total or not size or page * size >= total:
                return

    def _pages(self, path: str, key: str, e: ListedEntry) -> Iterator[dict[str, Any]]:
        """Style A pagination: first page, then page-number=1.. totalPages-1 (§3.2)."""
        page = 0
        while True:
            sep = "&" if "?" in path else "?"
            url = f"{path}{sep}page-size={LIST_PAGE_SIZE}"
            if page:
                url += f"&page-number={page}"
            body = _obj(self._get(url, e.org, e.team), key, url)
            for item in _list(body.get(key), key, url):
                yield _obj(item, key, url)
            info = body.get("paginationInfo")
            total = _int(info.get("totalPages")) if isinstance(info, dict) else None
            page += 1
            if not total or page >= total:
                return

    def versions(self, e: ListedEntry) -> list[RemoteVersion]:
        key = KIND_SHAPES[e.kind][3]
        base = f"{self._entry_base(e.kind, e.org, e.team, e.name)}/versions?sort-order=SEMVER_DESC"
        out = []
        for v in self._pages(base, key, e):
            vid = v.get("versionId") or v.get("id")
            if vid is None:
                raise ProtocolError("version without versionId", url=f"{self.base}{base}")
            out.append(
                RemoteVersion(
                    version=str(vid),
                    status=_str(v.get("status")) or "",
                    size=_int(v.get("totalSizeInBytes")),
                    file_count=_int(v.get("totalFileCount")),
                    created=_str(v.get("createdDate")),
                    updated=_str(v.get("updatedDate")),
                    description=_str(v.get("description")) or "",
                )
            )
        return out

    def files(self, e: ListedEntry, version: str) -> list[RemoteFile]:
        key = KIND_SHAPES[e.kind][5]
        base = (
            f"{self._entry_base(e.kind, e.org, e.team, e.name)}/versions/"
            f"{quote(version, safe='')}/files"
        )
        out = []
        for f in self._pages(base, key, e):
            path = f.get("path")
            url = f"{self.base}{base}"
            if not isinstance(path, str):
                raise ProtocolError("file entry without path", url=url)
            try:
                safe_relpath(path)
            except Exception:
                raise ProtocolError(f"unsafe file path {path[:200]!r}", url=url) from None
            size = _int(f.get("sizeInBytes"))
            if size is None or size < 0:
                raise ProtocolError(f"file {path!r} without a valid sizeInBytes", url=url)
            b64 = f.get("sha256_base64")
            sha = sha256_b64_to_hex(b64, url) if isinstance(b64, str) and b64 else None
            out.append(RemoteFile(path=path, size=size, sha256=sha))
        return out

    def download_urls(self, e: ListedEntry, version: str) -> dict[str, str]:
        """path -> presigned URL for every file of a version (style B pagination, §4.5)."""
        seg = KIND_SHAPES[e.kind][1]
        guest, keyed = _segs(e.org, e.team)
        n, v = quote(e.name, safe=""), quote(version, safe="")
        path = (
            f"/v2/{keyed}/{seg}/{n}/{v}/files"
            if self.auth.keyed
            else f"/v2/{seg}/{keyed}/{n}/{v}/files"
        )
        out: dict[str, str] = {}
        for url, body in self._pages_b(path, "filepath", e):
            paths = _list(body.get("filepath"), "filepath", url)
            urls = _list(body.get("urls"), "urls", url)
            if len(paths) != len(urls):
                raise ProtocolError("filepath and urls differ in length", url=url)
            for p, u in zip(paths, urls, strict=True):
                if isinstance(p, str) and isinstance(u, str):
                    out[p] = u
        return out

    def download_headers(self) -> Mapping[str, str]:
        """Presigned URLs carry their own authorisation: send nothing of ours (§2.1)."""
        return {}
