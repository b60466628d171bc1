"""The web dashboard at `/ui`: a small static front end, and the paged results it reads.

The page, its script and its stylesheet are package files (`overnight/dashboard/`), read once and served
from memory with strict security headers: no inline script (CSP), no referrer, no framing. The page
signs in with an API key kept in the tab's sessionStorage and sent as `x-api-key` on every call it makes;
the key never appears in a URL.

`GET /v1/overnight/batches/{id}/results` pages an ended batch's results, optionally one result type only,
for the dashboard's results table (the Message Batches API only streams the whole JSONL).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from overnight.api.context import context_of, page_limit, workspace_of
from overnight.api.responses import json_response
from overnight.exceptions import InvalidRequestError, NotFoundError

RESULT_TYPES = ("succeeded", "errored", "canceled", "expired")

# Only what the page needs from its own origin; `connect-src 'self'` is where its API calls go.
_SECURITY_HEADERS = {
    "content-security-policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "referrer-policy": "no-referrer",
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "cross-origin-opener-policy": "same-origin",
}


@dataclass(frozen=True)
class Asset:
    body: bytes
    media_type: str
    etag: str


def _load(name: str, media_type: str) -> Asset:
    body = (resources.files("overnight") / "dashboard" / name).read_bytes()
    return Asset(body, media_type, '"' + hashlib.sha256(body).hexdigest()[:32] + '"')


_ASSETS = {
    "dashboard.js": _load("dashboard.js", "text/javascript; charset=utf-8"),
    "dashboard.css": _load("dashboard.css", "text/css; charset=utf-8"),
}
_PAGE = _load("index.html", "text/html; charset=utf-8")


def _asset_response(request: Request, asset: Asset) -> Response:
    # Revalidated on every load (cheap 304s), so an upgraded server never runs a stale script.
    headers = {**_SECURITY_HEADERS, "etag": asset.etag, "cache-control": "no-cache"}
    if request.headers.get("if-none-match") == asset.etag:
        return Response(status_code=304, headers=headers)
    return Response(asset.body, media_type=asset.media_type, headers=headers)


async def page(request: Request) -> Response:
    return _asset_response(request, _PAGE)


async def asset(request: Request) -> Response:
    found = _ASSETS.get(request.path_params["name"])
    if found is None:
        raise NotFoundError(f"Not found: {request.method} {request.url.path}")
    return _asset_response(request, found)


class _ResultType(msgspec.Struct):
    type: str


class _ResultLine(msgspec.Struct):
    """The two fields a result line is filtered on; the line itself is passed on untouched."""

    custom_id: str
    result: _ResultType


_decode_line = msgspec.json.Decoder(_ResultLine).decode


def _offset(value: str | None) -> int:
    if value is None:
        return 0
    try:
        offset = int(value)
    except ValueError:
        raise InvalidRequestError(f"offset: must be a non-negative integer, got {value!r}") from None
    if offset < 0:
        raise InvalidRequestError(f"offset: must be a non-negative integer, got {offset}")
    return offset


def _result_type(value: str | None) -> str | None:
    if not value:
        return None
    if value not in RESULT_TYPES:
        raise InvalidRequestError(f"type: must be one of {', '.join(RESULT_TYPES)}, got {value!r}")
    return value


async def results_page(request: Request) -> Response:
    """`limit` results (default 20, at most 1000) after skipping `offset` matches; `type` keeps one result
    type, `custom_id` keeps ids containing that text. Reads the stored lines in order and stops at the
    page's end, so early pages are quick on any batch."""
    context = context_of(request)
    workspace = workspace_of(request, context)
    batch_id = request.path_params["batch_id"]
    query = request.query_params
    limit = page_limit(query.get("limit"))
    offset = _offset(query.get("offset"))
    wanted_type = _result_type(query.get("type"))
    id_contains = query.get("custom_id") or None

    lines: list[msgspec.Raw] = []
    skipped = 0
    has_more = False
    chunks = await context.batches.results(workspace, batch_id)
    try:
        async for chunk in chunks:
            for raw in chunk.splitlines():
                if not raw:
                    continue
                line = _decode_line(raw)
                if wanted_type is not None and line.result.type != wanted_type:
                    continue
                if id_contains is not None and id_contains not in line.custom_id:
                    continue
                if skipped < offset:
                    skipped += 1
                elif len(lines) < limit:
                    lines.append(msgspec.Raw(raw))
                else:
                    has_more = True
                    break
            if has_more:
                break
    finally:
        # Stopping early: close the stream now, so its reads queued ahead are dropped.
        close = getattr(chunks, "aclose", None)
        if close is not None:
            await close()
    return json_response(
        {
            "type": "results_page",
            "batch_id": batch_id,
            "result_type": wanted_type,
            "offset": offset,
            "limit": limit,
            "data": lines,
            "has_more": has_more,
        }
    )


async def redirect_to_page(request: Request) -> Response:
    # Relative, like every path the page uses, so that a proxy's path prefix is kept.
    return Response(status_code=308, headers={**_SECURITY_HEADERS, "location": "../ui"})


dashboard_routes = [
    Route("/ui", page, methods=["GET"]),
    Route("/ui/", redirect_to_page, methods=["GET"]),
    Route("/ui/assets/{name}", asset, methods=["GET"]),
    Route("/v1/overnight/batches/{batch_id}/results", results_page, methods=["GET"]),
]
