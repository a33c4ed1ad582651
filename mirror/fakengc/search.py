"""The catalog search endpoint (ngc-api.md §8): query matching and result pages."""

from __future__ import annotations

import json
from collections.abc import Iterable
from fnmatch import fnmatchcase

from . import payloads
from .catalog import FakeEntry
from .payloads import JSON

_FIELDS = ("resourceId", "orgName", "teamName", "name", "displayName")


def search_scope(segs: list[str]) -> str | None:
    """Classify the path segments after ``/v2/search/``.

    Returns:
        ``"catalog"`` (guest), ``"keyed"`` (org, org/team or subscriber search, key mode)
        or None if the path is not a search path.
    """
    if len(segs) == 3 and segs[:2] == ["catalog", "resources"]:
        return "catalog"
    if len(segs) == 4 and segs[:3] == ["subscriber", "catalog", "resources"]:
        return "keyed"
    if len(segs) == 4 and segs[0] == "org" and segs[2] == "resources":
        return "keyed"
    if len(segs) == 6 and segs[0] == "org" and segs[2] == "team" and segs[4] == "resources":
        return "keyed"
    return None


def search_match(entry: FakeEntry, text: str) -> bool:
    """Whether an entry matches a search ``query`` string.

    ``field:pattern`` (resourceId, orgName, teamName, name, displayName) is a
    case-insensitive glob on that field, as the CLI's ``resourceId:nvidia/*``; ``*`` or
    nothing matches all; other text is a case-insensitive glob or substring over name,
    display name and description.

    Args:
        entry: The entry.
        text: The ``query`` value of the ``q`` JSON.

    Returns:
        True on a match.
    """
    text = text.strip()
    if not text or text == "*":
        return True
    field, sep, pattern = text.partition(":")
    if sep and field in _FIELDS:
        value = {
            "resourceId": entry.resource_id,
            "orgName": entry.org,
            "teamName": entry.team or "",
            "name": entry.name,
            "displayName": entry.display_name,
        }[field]
        return fnmatchcase(value.lower(), pattern.strip().lower())
    needle = text.lower()
    hay = [entry.name.lower(), entry.display_name.lower(), entry.description.lower()]
    if any(c in needle for c in "*?["):
        return any(fnmatchcase(h, needle) for h in hay)
    return any(needle in h for h in hay)


def parse_q(raw: str | None) -> tuple[JSON, int, int]:
    """Decode the (already form-decoded) ``q`` parameter.

    Args:
        raw: The JSON text, or None when absent.

    Returns:
        (the q object, page, requested pageSize).

    Raises:
        ValueError: Not a JSON object, or non-integer/negative page fields.
    """
    q = json.loads(raw or "{}")
    if not isinstance(q, dict):
        raise ValueError("q must be a JSON object")
    try:
        page, page_size = int(q.get("page", 0)), int(q.get("pageSize", 100))
    except (TypeError, ValueError):
        raise ValueError("page and pageSize must be integers") from None
    if page < 0:
        raise ValueError("page must be >= 0")
    return q, page, page_size


def search_response(
    entries: Iterable[FakeEntry], rtype: str, q: JSON, page: int, size: int
) -> JSON:
    """One page of search results (§8.2, §13.1).

    Args:
        entries: Candidate entries (empty for org/subscriber searches).
        rtype: Requested resource type, e.g. ``MODEL``; types without entries give nothing.
        q: The decoded ``q`` object (echoed back as ``params``).
        page: 0-based page.
        size: Effective page size.

    Returns:
        The response document; ``results`` is empty when nothing matches.
    """
    query = str(q.get("query", ""))
    matches = [
        e for e in entries if payloads.SEARCH_TYPES[e.kind] == rtype and search_match(e, query)
    ]
    chunk = matches[page * size : (page + 1) * size]
    results: list[JSON] = []
    if matches:
        resources = [payloads.search_resource(e) for e in chunk]
        results.append({"groupValue": rtype, "totalCount": len(matches), "resources": resources})
    return {
        "resultTotal": len(matches),
        "resultPageTotal": -(-len(matches) // size),  # ceil; 0 when nothing matches
        "params": {**q, "page": page, "pageSize": size},
        "results": results,
    }
