"""Rendering errors into the API's envelope: the one place exceptions become responses."""

from __future__ import annotations

import logging
from collections.abc import Mapping

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match

from overnight.api.responses import json_response
from overnight.exceptions import InvalidRequestError, NotFoundError, OverloadedError, OvernightError
from overnight.openai_api.errors import is_openai_path, openai_error_body

logger = logging.getLogger(__name__)


def error_response(request: Request, error: OvernightError, headers: Mapping[str, str] | None = None) -> Response:
    request_id = request.scope.get("overnight.request_id")
    if is_openai_path(request.url.path):  # the OpenAI API's own envelope, and its header for the request id
        openai_headers = {**(headers or {}), **({"x-request-id": request_id} if request_id else {})}
        if error.status_code == 409:
            openai_headers["x-should-retry"] = "false"  # the SDK retries 409 by default; this one never helps
        if error.retry_after_seconds is not None:
            openai_headers["retry-after"] = str(max(1, round(error.retry_after_seconds)))
        return json_response(openai_error_body(error), status_code=error.status_code, headers=openai_headers)
    body = {
        "type": "error",
        "error": {"type": error.error_type, "message": error.message},
        "request_id": request_id,
    }
    headers = {**(headers or {}), **({"request-id": request_id} if request_id else {})}
    if error.status_code in (408, 413):
        headers["connection"] = "close"  # the rest of its body may still come; nothing reads it now
    if error.retry_after_seconds is not None:
        headers["retry-after"] = str(max(1, round(error.retry_after_seconds)))
    return json_response(body, status_code=error.status_code, headers=headers)


async def handle_overnight_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, OvernightError)
    return error_response(request, exc)


async def handle_http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        return error_response(request, NotFoundError(f"Not found: {request.method} {request.url.path}"))
    if exc.status_code == 405:
        not_allowed = InvalidRequestError(f"Method {request.method} is not allowed on {request.url.path}")
        not_allowed.status_code = 405
        return error_response(request, not_allowed, {"allow": ", ".join(_allowed_methods(request))})
    other = OvernightError(exc.detail)
    other.status_code = exc.status_code
    other.error_type = "invalid_request_error" if exc.status_code < 500 else "api_error"
    return error_response(request, other)


def _allowed_methods(request: Request) -> list[str]:
    """Every method some route serves on this path (Starlette's own `Allow` names one route's only)."""
    allowed: set[str] = set()
    for route in request.app.router.routes:
        match, _ = route.matches(request.scope)
        if match is not Match.NONE:
            allowed |= getattr(route, "methods", None) or set()
    return sorted(allowed)


async def handle_client_disconnect(request: Request, exc: Exception) -> Response:
    # The client went away mid-body: nothing was stored and nobody is left to answer.
    logger.info("client disconnected during %s %s", request.method, request.url.path)
    return Response(status_code=400)


async def handle_store_unavailable(request: Request, exc: Exception) -> Response:
    # The database is restarting, unreachable or locked: nothing was changed, and the same call will
    # work in a moment, so the client gets a retryable 529 rather than a 500.
    logger.warning("database unavailable during %s %s: %s", request.method, request.url.path, exc)
    return error_response(
        request,
        OverloadedError("The server's database is briefly unavailable; retry shortly", retry_after_seconds=1),
    )


async def handle_unexpected(request: Request, exc: Exception) -> Response:
    logger.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(request, OvernightError("Internal server error"))
