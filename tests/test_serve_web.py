"""The web pages of `mirror serve` (mirror/serve/web.py) over real HTTP and in headless Chromium.

The mirror root comes from a real `mirror sync` of the whole seed catalog (models, resources,
images) from the fake NGC server, plus two entries of our own: one whose display name,
description and file name carry markup (escaping) and a canary that is renamed while the
server runs (freshness). WebApp is served by uvicorn on 127.0.0.1 in a background thread.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import httpx
import pytest

from mirror.db import Database, open_catalog_db
from mirror.fakengc import FakeEntry, FakeFile, FakeNGC, FakeVersion, seed_catalog
from mirror.show import entry_detail
from mirror.sync import run_sync
from tests.conftest import cli_env, make_settings, require_tool, run_mirror
from tests.serve_peer import ServeThread, raw_request

EVIL_NAME = 'Evil <script>alert("name")</script> & "Model"'
EVIL_DESCRIPTION = (
    '<script>window.__xss = 1</script><img src=x onerror="window.__xss = 2">\n'
    "</div></main><b>bold?</b>"
)
EVIL_FILE = "weights/<i>model</i>&1.bin"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@dataclass
class Site:
    url: str
    host: str  # 127.0.0.1:PORT
    home: Path
    env: dict[str, str]  # for `mirror` subprocesses on this root


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    home = tmp_path_factory.mktemp("web") / "mirror"
    catalog = seed_catalog(include_images=True)
    catalog.add(
        FakeEntry(
            kind="model",
            org="nvidia",
            team="xss",
            name="evil_model",
            display_name=EVIL_NAME,
            description=EVIL_DESCRIPTION,
            labels=["<b>label</b>"],
            versions=[FakeVersion("1.0", files=[FakeFile(EVIL_FILE, content=b"evil bytes\n")])],
        )
    )
    catalog.add(
        FakeEntry(
            kind="model",
            org="nvidia",
            team=None,
            name="canary_model",
            display_name="Canary Model",
            description="A canary.",
            versions=[FakeVersion("1", files=[FakeFile("canary.bin", content=b"canary\n")])],
        )
    )
    with FakeNGC(catalog) as fake:
        report = run_sync(make_settings(home, fake.url, concurrency=8))
        assert report.outcome == "ok" and report.index_error is None, report.failures
        env = cli_env(home, fake.url)
    with ServeThread(home) as srv:  # the whole `mirror serve` app: web is what's left of /v2
        yield Site(srv.url, srv.host, home, env)


@pytest.fixture(scope="module")
def client(site: Site) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=site.url, timeout=20, trust_env=False) as c:
        yield c


def _raw(site: Site, method: str, path: str, headers: dict[str, str] | None = None) -> Any:
    """http.client: the path goes out exactly as written (no dot-segment normalisation)."""
    return raw_request(site.host, method, path, headers)


class _Results(HTMLParser):
    """Groups of a search page: family, count and member paths, in page order."""

    def __init__(self) -> None:
        super().__init__()
        self.groups: list[dict[str, Any]] = []
        self.suggestions: list[str] = []
        self._in_suggest = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        classes = (a.get("class") or "").split()
        if tag == "li" and "group" in classes:
            self.groups.append(
                {"family": a["data-family"], "count": int(a["data-count"] or 0), "paths": []}
            )
        elif tag == "li" and "member" in classes:
            self.groups[-1]["paths"].append(a["data-path"])
        elif tag == "p" and "suggest" in classes:
            self._in_suggest = True
        elif tag == "a" and self._in_suggest:
            self.suggestions.append(a.get("href") or "")

    def handle_endtag(self, tag: str) -> None:
        if tag == "p":
            self._in_suggest = False


def _parse(body: str) -> _Results:
    parser = _Results()
    parser.feed(body)
    return parser


def _cli_search(site: Site, *args: str) -> dict[str, Any]:
    proc = run_mirror(["search", *args, "--json"], site.env)
    assert proc.returncode == 0, proc.stderr
    doc: dict[str, Any] = json.loads(proc.stdout)
    return doc


def _detail(site: Site, ref: str, kind: str) -> dict[str, Any]:
    db = Database(open_catalog_db(site.home / "mirror.db"))
    try:
        return entry_detail(db, ref, kind=kind)
    finally:
        db.engine.dispose()


# -- search -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("params", "cli_args"),
    [
        ({"q": "bert"}, ["bert"]),
        ({"q": "onnx resnet50"}, ["onnx", "resnet50"]),
        ({"q": "bert", "kind": "resource"}, ["bert", "--kind", "resource"]),
        ({"q": "resnet", "limit": "50"}, ["resnet", "--limit", "50"]),
    ],
)
def test_search_groups_like_the_cli(
    site: Site, client: httpx.Client, params: dict[str, str], cli_args: list[str]
) -> None:
    resp = client.get("/search", params=params)
    assert resp.status_code == 200
    web = [(g["family"], g["count"], g["paths"]) for g in _parse(resp.text).groups]
    cli = [
        (g["family"], g["count"], [m["path"] for m in g["members"]])
        for g in _cli_search(site, *cli_args)["groups"]
    ]
    assert web == cli and web
    assert any(count > 1 for _, count, _ in web) or params["q"] == "bert" and "kind" in params


def test_search_shows_variants_and_collapsed_members(client: httpx.Client) -> None:
    body = client.get("/search", params={"q": "bert squad"}).text
    assert "seqLen 128, 384" in body  # the group summary, as `mirror search` prints it
    assert '<details class="members">' in body  # several variants: collapsed until opened
    assert "4 variants" in body


def test_did_you_mean(client: httpx.Client) -> None:
    resp = client.get("/search", params={"q": "brt"})
    assert resp.status_code == 200 and "Did you mean" in resp.text
    assert any("q=bert" in href for href in _parse(resp.text).suggestions)


@pytest.mark.parametrize("q", ["(bert", "bert)", 'bert "large', "nosuchfield:bert"])
def test_query_syntax_errors_get_a_friendly_page(client: httpx.Client, q: str) -> None:
    resp = client.get("/search", params={"q": q})
    assert resp.status_code == 400
    assert "could not be read" in resp.text and "Traceback" not in resp.text
    assert resp.headers["content-type"] == "text/html; charset=utf-8"


def test_empty_query_and_bad_parameters(client: httpx.Client) -> None:
    for params in ({}, {"q": ""}, {"q": "   "}):
        resp = client.get("/search", params=params)
        assert resp.status_code == 200 and "Type a few words" in resp.text
    assert client.get("/search", params={"q": "bert", "kind": "boat"}).status_code == 400
    assert client.get("/search", params={"q": "bert", "limit": "x"}).status_code == 400
    assert client.get("/search", params={"q": "b" * 5000}).status_code == 400


def test_home_page_counts_what_is_mirrored(site: Site, client: httpx.Client) -> None:
    resp = client.get("/")
    assert resp.status_code == 200
    assert 'action="/search"' in resp.text and 'name="q"' in resp.text
    with sqlite3.connect(site.home / "mirror.db") as conn:
        counts = dict(conn.execute("SELECT kind, count(*) FROM entries GROUP BY kind").fetchall())
    rows = re.findall(
        r'kind=(\w+)">[^<]+</a></th><td class="num">(\d+)</td><td class="num">(\d+)</td>',
        resp.text,
    )
    assert {kind: int(total) for kind, total, _ in rows} == counts
    local = {kind: int(n) for kind, _, n in rows}
    assert local["model"] == counts["model"] and local["image"] == 0  # NGC images: tags only


# -- entries ------------------------------------------------------------------------------------
def test_entry_page_lists_versions_files_and_sha256(site: Site, client: httpx.Client) -> None:
    path = _cli_search(site, "onnx", "resnet50")["groups"][0]["members"][0]["path"]
    doc = _detail(site, path, "model")
    resp = client.get(f"/entry/model/{path}")
    assert resp.status_code == 200, resp.text
    body = resp.text
    assert re.findall(r'data-version="([^"]+)"', body) == [v["version"] for v in doc["versions"]]
    assert len(doc["versions"]) >= 2 and doc["files"]
    for f in doc["files"]:
        assert f["sha256"] and f["sha256"] in body and f["path"] in body
        assert f'title="{f["size"]} bytes"' in body
    shown = doc["shown_version"]
    assert f'<tr class="shown" aria-current="true" data-version="{shown}">' in body
    assert body.count('<span class="local yes">mirrored</span>') == sum(
        v["mirrored"] for v in doc["versions"]
    )
    assert f"ngc registry model download-version {path}:{shown} --dest ." in body
    assert f"export NGC_CLI_API_URL={site.url}" in body
    assert 'data-copy="ngc registry model download-version' in body

    older = doc["versions"][-1]["version"]
    old_doc = _detail(site, f"{path}:{older}", "model")
    old = client.get(f"/entry/model/{path}", params={"version": older}).text
    assert f"Files of version {older}" in old
    assert all(f["sha256"] in old for f in old_doc["files"])
    assert f"download-version {path}:{older} --dest ." in old


def test_team_entries_and_resources(site: Site, client: httpx.Client) -> None:
    resp = client.get("/entry/resource/nvidia/bert_for_pytorch")
    assert resp.status_code == 200
    assert "ngc registry resource download-version nvidia/bert_for_pytorch:" in resp.text
    assert client.get("/entry/model/nvidia/xss/evil_model").status_code == 200


def test_image_page_pull_command_uses_the_host_header(site: Site, client: httpx.Client) -> None:
    doc = _detail(site, "nvidia/pytorch", "image")
    tag = doc["shown_version"]
    resp = client.get("/entry/image/nvidia/pytorch", headers={"Host": "mirror.lab:5000"})
    assert resp.status_code == 200
    assert f"docker pull mirror.lab:5000/nvidia/pytorch:{tag}" in resp.text
    assert "Tags (" in resp.text
    assert set(re.findall(r'data-version="([^"]+)"', resp.text)) == {
        v["version"] for v in doc["versions"]
    }
    # a Host that is not host[:port] is not echoed; the server address is used instead
    status, _, body = _raw(
        site, "GET", "/entry/image/nvidia/pytorch", {"Host": 'x"><script>alert(1)</script>'}
    )
    assert status == 200 and b"<script>alert" not in body
    assert f"docker pull {site.host}/nvidia/pytorch:{tag}".encode() in body


def test_image_repositories_are_served_without_their_registry_host() -> None:
    from mirror.serve.web_pages import image_pull_command

    assert (
        image_pull_command("m:5000", "127.0.0.1:5000/test/multi", "1.0")
        == "docker pull m:5000/test/multi:1.0"
    )
    assert (
        image_pull_command("m", "nvcr.io/nvidia/pytorch", "24.01-py3")
        == "docker pull m/nvidia/pytorch:24.01-py3"
    )


@pytest.mark.parametrize(
    "path",
    [
        "/entry/model/nvidia/no_such_model",
        "/entry/image/nvidia/no_such_image",
        "/entry/resource/nvidia/onnx_resnet50_tensorrt_5_0_2_t4_fp16",  # a model, not a resource
        "/entry/boat/nvidia/pytorch",
        "/entry/model/nvidia",
        "/entry/model/",
        "/entry/",
        "/entry/model/nvidia/onnx_resnet50_tensorrt_5_0_2_t4_fp16?version=no-such",
        "/nothing-here",
        "/search/",
        "/index.html",
    ],
)
def test_unknown_pages_are_404_pages(site: Site, path: str) -> None:
    status, headers, body = _raw(site, "GET", path)
    assert status == 404, body[:300]
    assert headers["content-type"] == "text/html; charset=utf-8"
    assert b"<!doctype html>" in body and b"Traceback" not in body


# -- safety -------------------------------------------------------------------------------------
def test_catalog_text_is_escaped(site: Site, client: httpx.Client) -> None:
    page = client.get("/entry/model/nvidia/xss/evil_model")
    assert page.status_code == 200
    body = page.text
    for raw in ("<script>", "<img src=x", "<b>", "<i>model</i>", "</div></main>"):
        assert raw not in body, raw
    assert "&lt;script&gt;window.__xss = 1&lt;/script&gt;" in body
    assert (
        "Evil &lt;script&gt;alert(&quot;name&quot;)&lt;/script&gt; &amp; &quot;Model&quot;" in body
    )
    assert "weights/&lt;i&gt;model&lt;/i&gt;&amp;1.bin" in body
    assert "&lt;b&gt;label&lt;/b&gt;" in body
    found = client.get("/search", params={"q": "evil"}).text
    assert "<script>" not in found and "Evil &lt;script&gt;" in found
    # a query is reflected only escaped
    reflected = client.get("/search", params={"q": '"><script>alert(1)</script>'}).text
    assert "<script>alert(1)" not in reflected


def test_pages_carry_type_and_a_restrictive_csp(client: httpx.Client) -> None:
    for path in ("/", "/search?q=bert", "/entry/model/nvidia/canary_model", "/nope"):
        resp = client.get(path)
        assert resp.headers["content-type"] == "text/html; charset=utf-8"
        csp = resp.headers["content-security-policy"]
        assert "default-src 'none'" in csp and "script-src 'self'" in csp
        assert "unsafe-inline" not in csp and "http" not in csp
        assert resp.headers["x-content-type-options"] == "nosniff"
        assert "<script>" not in resp.text and " style=" not in resp.text  # nothing inline


def test_head_is_get_without_body_and_writes_are_405(site: Site, client: httpx.Client) -> None:
    for path in ("/", "/search?q=bert", "/entry/model/nvidia/canary_model", "/static/web.css"):
        get = client.get(path)
        head = client.head(path)
        assert head.status_code == get.status_code == 200
        assert head.content == b""
        assert head.headers["content-length"] == str(len(get.content))
        assert head.headers["content-type"] == get.headers["content-type"]
    assert client.head("/entry/model/nvidia/no_such").status_code == 404
    for method in ("POST", "PUT", "DELETE", "PATCH", "OPTIONS"):
        for path in ("/", "/search?q=bert", "/entry/model/nvidia/canary_model", "/static/web.js"):
            resp = client.request(method, path)
            assert resp.status_code == 405, (method, path)
            assert resp.headers["allow"] == "GET, HEAD"


@pytest.mark.parametrize(
    "path",
    [
        "/static/../web.py",
        "/static/%2e%2e/web.py",
        "/static/%2E%2E/%2E%2E/mirror.db",
        "/static/..%2fweb.py",
        "/static/..%2Fweb.py",
        "/static/%252e%252e/web.py",
        "/static/..\\web.py",
        "/static/.%2e/web.py",
        "/static/web.js/..",
        "/static/web.js%00",
        "/static/",
        "/static/web.py",
        "/static//etc/passwd",
        "/static/%2fetc%2fpasswd",
        "/entry/model/nvidia/..%2f..%2fmirror.db",
        "/entry/model/nvidia/../canary_model",
        "/entry/model/%2e%2e/nvidia/canary_model",
        "/entry/model/nvidia/%2e/canary_model",
    ],
)
def test_path_traversal_is_404(site: Site, path: str) -> None:
    status, _, body = _raw(site, "GET", path)
    assert status == 404, (path, body[:200])
    assert b"import " not in body and b"SQLite" not in body


def test_static_assets(client: httpx.Client) -> None:
    js = client.get("/static/web.js")
    assert js.status_code == 200 and js.headers["content-type"].startswith("text/javascript")
    assert "clipboard" in js.text
    css = client.get("/static/web.css")
    assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")
    assert "http" not in css.text  # no external fonts or images


def test_an_empty_root_gets_friendly_pages(tmp_path: Path) -> None:
    """Before the first sync or import: a page that says what to run, not a 500."""
    import asyncio

    from mirror.serve.web import WebApp

    async def fetch(paths: list[str]) -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=WebApp(tmp_path / "nothing"))
        async with httpx.AsyncClient(transport=transport, base_url="http://m") as c:
            return [await c.get(p) for p in paths]

    home, search, entry, static = asyncio.run(
        fetch(["/", "/search?q=bert", "/entry/model/nvidia/x", "/static/web.css"])
    )
    assert home.status_code == 503 and "mirror sync" in home.text
    assert search.status_code == 503 and "mirror index rebuild" in search.text
    assert entry.status_code == 503 and static.status_code == 200
    assert not (tmp_path / "nothing").exists()  # nothing was created: the app only reads


# -- freshness ----------------------------------------------------------------------------------
def test_pages_follow_catalog_and_index_changes(site: Site, client: httpx.Client) -> None:
    """A sync or import changes the DB and the index while the server runs: no restart."""
    from mirror.indexing import rebuild_index, refresh_index
    from mirror.paths import MirrorPaths

    assert "Canary Model" in client.get("/search", params={"q": "canary"}).text  # opens a reader
    db = Database(open_catalog_db(site.home / "mirror.db"))
    paths = MirrorPaths(site.home)
    try:
        with sqlite3.connect(site.home / "mirror.db") as conn:
            conn.execute(
                "UPDATE entries SET display_name = 'Canary Zebra', description = 'Striped.' "
                "WHERE path = 'nvidia/canary_model'"
            )
        page = client.get("/entry/model/nvidia/canary_model").text
        assert "Canary Zebra" in page and "Striped." in page  # the DB is read per request
        # an incremental commit into the current generation (what a sync does)
        refresh_index(paths, db, [("model", "nvidia/canary_model")], [])
        hits = _parse(client.get("/search", params={"q": "zebra"}).text).groups
        assert [g["paths"] for g in hits] == [["nvidia/canary_model"]]
        # a full rebuild swaps in a new generation (`mirror index rebuild`, an import)
        with sqlite3.connect(site.home / "mirror.db") as conn:
            conn.execute(
                "UPDATE entries SET display_name = 'Canary Okapi' "
                "WHERE path = 'nvidia/canary_model'"
            )
        rebuild_index(paths, db)
        rebuild_index(paths, db)  # twice: the generation the server had open is deleted
        hits = _parse(client.get("/search", params={"q": "okapi"}).text).groups
        assert [g["paths"] for g in hits] == [["nvidia/canary_model"]]
        assert "Canary Okapi" in client.get("/search", params={"q": "canary"}).text
    finally:
        db.engine.dispose()


# -- in a browser -------------------------------------------------------------------------------
def _browser_or_skip() -> Any:
    chromium = require_tool("chromium")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        if os.environ.get("CI") == "true":
            pytest.fail("playwright is required in CI but not installed (see .ci/run)")
        pytest.skip("playwright not installed")
    return sync_playwright, chromium


def test_browse_in_headless_chromium(site: Site) -> None:
    sync_playwright, chromium = _browser_or_skip()
    problems: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(base_url=site.url)
            context.grant_permissions(["clipboard-read", "clipboard-write"], origin=site.url)
            page = context.new_page()
            page.set_default_timeout(15_000)
            page.on(
                "console",
                lambda m: problems.append(m.text) if m.type in ("error", "warning") else None,
            )
            page.on("pageerror", lambda exc: problems.append(str(exc)))
            page.on("dialog", lambda d: (problems.append(f"dialog {d.message}"), d.dismiss()))
            page.on(
                "request",
                lambda r: None if r.url.startswith(site.url) else problems.append(f"GET {r.url}"),
            )

            page.goto("/")
            page.fill("input[name=q]", "bert")
            page.press("input[name=q]", "Enter")
            page.wait_for_url(re.compile(r"/search\?q=bert"))
            group = (
                page.locator("li.group")
                .filter(has=page.locator("details.members"))
                .filter(has_not=page.locator("details[open]"))
                .first
            )
            # pin it: the filter above stops matching once the group is opened
            family = group.get_attribute("data-family") or ""
            group = page.locator(f"li.group[data-family={json.dumps(family)}]")
            count = int(group.get_attribute("data-count") or 0)
            assert count > 1
            members = group.locator("li.member")
            assert members.count() == count
            assert not members.first.is_visible()  # collapsed: one hit per family
            group.locator("details.members > summary").click()
            assert members.first.is_visible() and members.nth(count - 1).is_visible()

            path = members.first.get_attribute("data-path")
            assert path
            members.first.locator("a").click()
            page.wait_for_url(re.compile(r"/entry/"))
            assert path in page.url
            rows = page.locator("section.versions tbody tr")
            versions = [r.get_attribute("data-version") for r in rows.all()]
            doc = _detail(site, path, page.url.split("/entry/", 1)[1].split("/", 1)[0])
            assert versions == [v["version"] for v in doc["versions"]] and versions
            assert page.locator("section.versions h2").inner_text().startswith("Versions")

            button = page.locator("button.copy").last
            command = button.get_attribute("data-copy")
            assert command and "download-version" in command
            button.click()
            # the clipboard, not the button's "Copied" (it reverts after 2 s on a slow machine)
            page.wait_for_function(
                "c => navigator.clipboard.readText().then(t => t === c)", arg=command
            )

            page.goto("/entry/model/nvidia/xss/evil_model")
            assert "<script>window.__xss = 1</script>" in page.locator(".description").inner_text()
            assert page.evaluate("window.__xss") is None
        finally:
            browser.close()
    assert not problems, problems
