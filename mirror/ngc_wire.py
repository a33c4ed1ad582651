"""Envelope pieces of NGC's JSON API (ngc-api.md §3.1, §12.1) shared by the fake NGC server and
`mirror serve`'s NGC API. Stdlib only."""

from __future__ import annotations

import math
import uuid
from http import HTTPStatus
from typing import Any

JSON = dict[str, Any]

#: Search resource type (§8.1) of each entry kind.
# a search attribute `mirror serve` adds (NGC never sends it): a fingerprint of which versions
# the serving mirror holds, so a downstream mirror notices fetches and prunes upstream
HELD_ATTRIBUTE = "mirrorHeld"

SEARCH_TYPES = {"model": "MODEL", "resource": "RECIPE", "image": "CONTAINER"}

# HTTP status -> requestStatus.statusCode enum (§3.1); unknown codes get a generic value.
STATUS_CODES = {
    400: "INVALID_REQUEST",
    401: "UNAUTHORIZED",
    403: "FORBIDDEN",
    404: "NOT_FOUND",
    405: "INVALID_REQUEST",
    409: "EXISTS",
    412: "PRECONDITION_FAILED",
    413: "INVALID_REQUEST",
    416: "INVALID_REQUEST",
    429: "TOO_MANY_REQUESTS",
    500: "INTERNAL_ERROR",
    502: "BAD_GATEWAY",
    503: "SERVICE_UNAVAILABLE",
    504: "GATEWAY_TIMEOUT",
}


def error_envelope(status: int, description: str | None = None, *, server_id: str) -> JSON:
    """An NGC error body: `{"requestStatus": {statusCode, statusDescription, requestId,
    serverId}}`; the description defaults to the HTTP reason phrase."""
    if description is None:
        try:
            description = HTTPStatus(status).phrase
        except ValueError:
            description = "Error"
    return {
        "requestStatus": {
            "statusCode": STATUS_CODES.get(status, "UNKNOWN" if status < 500 else "ERROR"),
            "statusDescription": description,
            "requestId": uuid.uuid4().hex,
            "serverId": server_id,
        }
    }


def page_count(total: int, size: int) -> int:
    """Number of pages of `size` items needed for `total` items (at least 1)."""
    return max(1, math.ceil(total / size))


def pagination_info(index: int, size: int, total: int, *, next_page: bool = True) -> JSON:
    """A `paginationInfo` object for page `index` (0-based) of `size` over `total` items;
    `next_page` adds the (always empty) `nextPage` string, as style A lists do."""
    info: JSON = {
        "index": index,
        "size": size,
        "totalPages": page_count(total, size),
        "totalResults": total,
    }
    if next_page:
        info["nextPage"] = ""
    return info
