"""Human-readable rendering of search results and entries (the CLI's text output)."""

from __future__ import annotations

from typing import Any

from mirror.paths import names_a_registry


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def search_text(doc: dict[str, Any], *, show_all: bool) -> str:
    """One block per group: title, kind and variant count, the variant summary, members."""
    groups = doc["groups"]
    if not groups:
        lines = [f"no match for {doc['query']!r}"]
        for s in doc.get("suggestions", []):
            lines.append(f"did you mean: mirror search {s}")
        return "\n".join(lines) + "\n"
    lines = []
    for i, g in enumerate(groups, 1):
        count = g["count"]
        head = f"{i:>3}. {g['title']}"
        tail = f"{g['kind']}" + (f" · {count} variants" if count > 1 else "")
        lines.append(f"{head}  [{tail}]")
        facts = [g["summary"]] if g["summary"] else []
        if g.get("latest_version"):
            facts.append(f"latest {g['latest_version']}")
        facts.append("mirrored" if g["mirrored"] else "metadata only")
        lines.append("     " + " · ".join(facts))
        members = g["members"] if show_all else g["members"][:1]
        for m in members:
            mark = "*" if m.get("mirrored") else " "
            extra = f"  {m['display_name']}" if show_all else ""
            lines.append(f"   {mark} {m['path']}{extra}")
        if not show_all and count > 1:
            lines.append(f"     (+{count - 1} more: --all lists them)")
    lines.append(
        f"{len(groups)} groups, {doc['total_members']} entries"
        + ("" if show_all else "; * = files mirrored locally")
    )
    return "\n".join(lines) + "\n"


def download_command(entry: dict[str, Any], version: str | None) -> str:
    kind = entry["kind"]
    ref = entry["path"] + (f":{version}" if version else "")
    if kind in ("model", "resource"):
        return f"ngc registry {kind} download-version {ref} --dest ."
    if not names_a_registry(entry["path"]):
        ref = f"nvcr.io/{ref}"  # an NGC repository path: Docker's rule names no registry
    return f"docker pull {ref}"


def entry_text(doc: dict[str, Any]) -> str:
    e = doc["entry"]
    out = [f"{e['display_name']}  ({e['kind']} {e['path']})"]
    for key in ("framework", "precision", "application"):
        if e.get(key):
            out.append(f"  {key:<12}{e[key]}")
    if e.get("labels"):
        out.append(f"  {'labels':<12}{', '.join(e['labels'])}")
    if e.get("updated"):
        out.append(f"  {'updated':<12}{e['updated']}")
    if e.get("removed"):
        out.append("  REMOVED upstream (kept in the mirror)")
    if e.get("description"):
        out.append("")
        out.extend("  " + line for line in e["description"].strip().splitlines()[:12])
    out.append("")
    out.append("versions:")
    for v in doc["versions"]:
        size = human_bytes(v["size"]) if v.get("size") is not None else "?"
        local = "mirrored" if v["mirrored"] else ("partial" if v["stored_files"] else "-")
        out.append(
            f"  {v['version']:<24} {v['status'] or '':<16} {size:>10}  "
            f"{(v.get('created') or '')[:10]}  {local}"
        )
    shown = doc.get("shown_version")
    if shown:
        out.append("")
        out.append(f"files of {shown}:")
        for f in doc["files"]:
            where = "stored" if f["blob_digest"] else "not stored"
            out.append(
                f"  {f['path']:<40} {human_bytes(f['size']):>10}  "
                f"sha256:{f['sha256'] or '?'}  {where}"
            )
    out.append("")
    out.append(f"get it: {doc['command']}")
    return "\n".join(out) + "\n"
