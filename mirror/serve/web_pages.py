"""HTML of the web pages (web.py serves them): every catalog string goes through `esc`."""

from __future__ import annotations

import html
from typing import Any
from urllib.parse import quote, urlencode

from index.search import Group, Member
from mirror.render import download_command, human_bytes
from mirror.serve.repo_index import split_reference

KINDS = ("model", "resource", "image", "chart")
KIND_TITLES = {"model": "Models", "resource": "Resources", "image": "Containers", "chart": "Charts"}
MAX_LIMIT = 500


def esc(text: object) -> str:
    return html.escape("" if text is None else str(text), quote=True)


def entry_url(kind: str, path: str, version: str | None = None) -> str:
    url = f"/entry/{quote(kind, safe='')}/{quote(path, safe='/:')}"
    return url + (f"?{urlencode({'version': version})}" if version else "")


def image_pull_command(host: str, path: str, tag: str) -> str:
    """`docker pull <this server>/<repository>:<tag>`; repositories are served without their
    registry host (repo_index.py): 127.0.0.1:5000/test/multi -> test/multi."""
    split = split_reference(f"{path}:{tag}")
    repo = split[0] if split else path
    return f"docker pull {host}/{repo}:{tag}"


# -- HTML ---------------------------------------------------------------------------------------
def page(title: str, body: str, *, header_form: bool = True) -> bytes:
    header = '<header class="top"><a class="brand" href="/">NGC mirror</a>'
    if header_form:
        header += search_form("", None)
    header += "</header>"
    return (
        "<!doctype html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(title)}</title>"
        '<link rel="icon" href="/static/favicon.svg" type="image/svg+xml">'
        '<link rel="stylesheet" href="/static/web.css">'
        '<script src="/static/web.js" defer></script>'
        f"</head><body>{header}<main>{body}</main></body></html>\n"
    ).encode()


def error_body(title: str, message: str, hint: str | None) -> str:
    out = f'<h1>{esc(title)}</h1><p class="message">{esc(message)}</p>'
    if hint:
        out += f'<p class="hint">Try: <code>{esc(hint)}</code></p>'
    return out + '<p><a href="/">Back to the search page</a></p>'


def search_form(text: str, kind: str | None, *, big: bool = False) -> str:
    options = '<option value="">All kinds</option>' + "".join(
        f'<option value="{k}"{" selected" if k == kind else ""}>{KIND_TITLES[k]}</option>'
        for k in KINDS[:3]
    )
    return (
        f'<form class="search{" big" if big else ""}" action="/search" method="get" '
        'role="search">'
        f'<input type="search" name="q" value="{esc(text)}" aria-label="Search the mirror" '
        'placeholder="Search models, resources, containers" autocomplete="off">'
        f'<select name="kind" aria-label="Kind">{options}</select>'
        '<button type="submit">Search</button></form>'
    )


def member_summary(member: dict[str, Any]) -> str:
    """One member's variant attributes, formatted like the group summary (index.search)."""
    single = Group(family="", kind=str(member.get("kind", "")))
    single.members.append(Member("", "", "", 0.0, {"variants": member.get("variants", {})}))
    return single.summary()


def results(
    doc: dict[str, Any], kind: str | None, limit: int, filters: dict[str, str | None]
) -> str:
    groups = doc["groups"]
    if not groups:
        out = f'<p class="notice">No match for <q>{esc(doc["query"])}</q>.</p>'
        for s in doc.get("suggestions", []):
            params = {"q": s, **({"kind": kind} if kind else {})}
            out += (
                f'<p class="suggest">Did you mean <a href="/search?{esc(urlencode(params))}">'
                f"{esc(s)}</a>?</p>"
            )
        return out
    items = []
    for g in groups:
        members = g["members"]
        first_url = entry_url(members[0]["kind"], members[0]["path"])
        count = g["count"]
        facts = [esc(g["summary"])] if g["summary"] else []
        if g.get("latest_version"):
            facts.append(f"latest {esc(g['latest_version'])}")
        facts.append(
            '<span class="local yes">mirrored</span>'
            if g["mirrored"]
            else '<span class="local no">metadata only</span>'
        )
        rows = "".join(
            f'<li class="member" data-path="{esc(m["path"])}">'
            f'<a href="{esc(entry_url(m["kind"], m["path"]))}">{esc(m["display_name"])}</a> '
            f"<code>{esc(m['path'])}</code> "
            f'<span class="variant">{esc(member_summary(m))}</span>'
            + (
                ' <span class="local yes" title="files mirrored here">&#10003;</span>'
                if m.get("mirrored")
                else ""
            )
            + "</li>"
            for m in members
        )
        label = f"{count} variants" if count > 1 else "1 entry"
        items.append(
            f'<li class="group" data-family="{esc(g["family"])}" data-count="{count}">'
            f'<div class="head"><a class="title" href="{esc(first_url)}">'
            f'{esc(g["title"])}</a> <span class="kind">{esc(g["kind"])}</span>'
            + (f' <span class="count">{count} variants</span>' if count > 1 else "")
            + f'</div><p class="facts">{" · ".join(facts)}</p>'
            f'<details class="members"{" open" if count == 1 else ""}>'
            f"<summary>{label}</summary><ul>{rows}</ul></details></li>"
        )
    out = (
        f'<p class="count">{len(groups)} groups, {doc["total_members"]} entries '
        "(repeated entries are collapsed; open a group to see every variant)</p>"
        f'<ol class="results">{"".join(items)}</ol>'
    )
    if len(groups) >= limit and limit < MAX_LIMIT:  # there may be more
        params = {
            "q": doc["query"],
            **({"kind": kind} if kind else {}),
            **{k: v for k, v in filters.items() if v},
            "limit": str(min(MAX_LIMIT, limit * 5)),
        }
        out += f'<p class="more"><a href="/search?{esc(urlencode(params))}">More results</a></p>'
    return out


def copy_line(command: str) -> str:
    return (
        f'<div class="cmd"><code>{esc(command)}</code>'
        f'<button type="button" class="copy" data-copy="{esc(command)}">Copy</button></div>'
    )


def entry_body(doc: dict[str, Any], host: str, scheme: str) -> str:
    e = doc["entry"]
    kind, path, shown = e["kind"], e["path"], doc.get("shown_version")
    versions = doc["versions"]
    facts = "".join(
        f"<dt>{esc(label)}</dt><dd>{esc(e[key])}</dd>"
        for key, label in (
            ("framework", "Framework"),
            ("precision", "Precision"),
            ("application", "Application"),
            ("updated", "Updated"),
        )
        if e.get(key)
    )
    if e.get("labels"):
        facts += f"<dt>Labels</dt><dd>{esc(', '.join(e['labels']))}</dd>"
    out = (
        f'<nav class="crumbs"><a href="/">Home</a> / '
        f'<a href="/search?{esc(urlencode({"q": "*", "kind": kind}))}">'
        f"{esc(KIND_TITLES.get(kind, kind))}</a> / {esc(path)}</nav>"
        f"<h1>{esc(e['display_name'] or path)}</h1>"
        f'<p class="ref"><span class="kind">{esc(kind)}</span> <code>{esc(path)}</code></p>'
    )
    if e.get("removed"):
        out += '<p class="notice">Removed upstream; kept in this mirror.</p>'
    if facts:
        out += f'<dl class="facts">{facts}</dl>'
    out += '<section class="get"><h2>Get it</h2>' + commands(doc, host, scheme) + "</section>"
    if e.get("description"):
        out += (
            f'<section><h2>Description</h2><div class="description">'
            f"{esc(e['description'].strip())}</div></section>"
        )
    word = "Tags" if kind == "image" else "Versions"
    rows = []
    for v in versions:
        local = "mirrored" if v["mirrored"] else "partial" if v["stored_files"] else "not mirrored"
        cls = "yes" if v["mirrored"] else "partial" if v["stored_files"] else "no"
        size = human_bytes(v["size"]) if v.get("size") is not None else "?"
        current = ' class="shown" aria-current="true"' if v["version"] == shown else ""
        rows.append(
            f'<tr{current} data-version="{esc(v["version"])}">'
            f'<td><a href="{esc(entry_url(kind, path, v["version"]))}">{esc(v["version"])}</a>'
            + (' <span class="muted">(removed upstream)</span>' if v.get("removed") else "")
            + f"</td><td>{esc(v.get('status') or '')}</td>"
            f'<td class="num" title="{esc(v.get("size"))} bytes">{esc(size)}</td>'
            f"<td>{esc((v.get('created') or '')[:10])}</td>"
            f'<td><span class="local {cls}">{local}</span></td></tr>'
        )
    out += (
        f'<section class="versions"><h2>{word} ({len(versions)})</h2>'
        '<table><thead><tr><th scope="col">'
        f'{"Tag" if kind == "image" else "Version"}</th><th scope="col">Status</th>'
        '<th scope="col" class="num">Size</th><th scope="col">Created</th>'
        f'<th scope="col">Here</th></tr></thead><tbody>{"".join(rows)}</tbody></table></section>'
    )
    if shown and (doc["files"] or kind != "image"):
        files = (
            "".join(
                f'<tr><td class="path">{esc(f["path"])}</td>'
                f'<td class="num" title="{esc(f["size"])} bytes">{esc(human_bytes(f["size"]))}</td>'
                f'<td class="sha"><code>{esc(f["sha256"] or "?")}</code></td>'
                f'<td><span class="local {"yes" if f["blob_digest"] else "no"}">'
                f"{'stored' if f['blob_digest'] else 'not stored'}</span></td></tr>"
                for f in doc["files"]
            )
            or '<tr><td colspan="4">No file list for this version.</td></tr>'
        )
        out += (
            f'<section class="files"><h2>Files of {"tag" if kind == "image" else "version"} '
            f"{esc(shown)}</h2>"
            '<table><thead><tr><th scope="col">Path</th><th scope="col" class="num">Size</th>'
            '<th scope="col">sha256</th><th scope="col">Here</th></tr></thead>'
            f"<tbody>{files}</tbody></table></section>"
        )
    return out


def commands(doc: dict[str, Any], host: str, scheme: str) -> str:
    e = doc["entry"]
    kind, shown = e["kind"], doc.get("shown_version")
    mirrored = any(v["mirrored"] for v in doc["versions"] if v["version"] == shown)
    warn = (
        ""
        if mirrored or not shown
        else f'<p class="notice">{esc(shown)} is not mirrored here: only its metadata is.</p>'
    )
    if kind == "image":
        if not shown:
            return '<p class="muted">No tags.</p>'
        return (
            f"<p>Pull tag <strong>{esc(shown)}</strong> from this server:</p>"
            + copy_line(image_pull_command(host, e["path"], shown))
            + warn
            + '<p class="muted">An http:// server must be listed in Docker\'s '
            "<code>insecure-registries</code>.</p>"
        )
    if kind in ("model", "resource"):
        return (
            f"<p>Point the <code>ngc</code> CLI at this server (set "
            f"<code>NGC_CLI_API_URL</code>), then download version "
            f"<strong>{esc(shown or 'latest')}</strong>:</p>"
            + copy_line(f"export NGC_CLI_API_URL={scheme}://{host}")
            + copy_line(download_command(e, shown))
            + warn
            + (
                '<p class="muted">The <code>ngc</code> CLI speaks HTTPS only: when this page '
                "came over http://, use the server's https:// address.</p>"
                if scheme != "https"
                else ""
            )
        )
    return '<p class="muted">This kind cannot be downloaded from the mirror.</p>'
