"""The route table and its thin handlers: authenticate, parse, call the service, render."""

from __future__ import annotations

from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from overnight.api.auth import RateLimiter, authenticate
from overnight.api.body import read_capped_body
from overnight.api.responses import json_response
from overnight.config import Settings
from overnight.exceptions import InvalidRequestError
from overnight.service import BatchService


@dataclass(frozen=True)
class Context:
    """What handlers need, built once at start-up and kept on `app.state.context`."""

    settings: Settings
    batches: BatchService
    rate_limiter: RateLimiter


def _context(request: Request) -> Context:
    return request.app.state.context  # type: ignore[no-any-return]


def _workspace(request: Request, context: Context) -> str:
    workspace = authenticate(request, context.settings)
    context.rate_limiter.check(workspace)
    return workspace


def _public_base_url(request: Request, settings: Settings) -> str:
    return (settings.public_url or str(request.base_url)).rstrip("/")


async def create_batch(request: Request) -> Response:
    context = _context(request)
    workspace = _workspace(request, context)
    body = await read_capped_body(request, context.settings.max_body_bytes)
    batch = await context.batches.create(workspace, body, _public_base_url(request, context.settings))
    return json_response(batch)


async def list_batches(request: Request) -> Response:
    context = _context(request)
    workspace = _workspace(request, context)
    query = request.query_params
    page = await context.batches.list(
        workspace,
        limit=_limit(query.get("limit")),
        after_id=query.get("after_id") or None,
        before_id=query.get("before_id") or None,
        public_base_url=_public_base_url(request, context.settings),
    )
    return json_response(page)


def _limit(value: str | None) -> int:
    if value is None:
        return 20
    try:
        limit = int(value)
    except ValueError:
        raise InvalidRequestError(f"limit: must be an integer between 1 and 1000, got {value!r}") from None
    if not 1 <= limit <= 1000:
        raise InvalidRequestError(f"limit: must be between 1 and 1000, got {limit}")
    return limit


async def retrieve_batch(request: Request) -> Response:
    context = _context(request)
    workspace = _workspace(request, context)
    batch_id = request.path_params["batch_id"]
    base_url = _public_base_url(request, context.settings)
    return json_response(await context.batches.retrieve(workspace, batch_id, base_url))


async def cancel_batch(request: Request) -> Response:
    context = _context(request)
    workspace = _workspace(request, context)
    batch_id = request.path_params["batch_id"]
    base_url = _public_base_url(request, context.settings)
    return json_response(await context.batches.cancel(workspace, batch_id, base_url))


async def delete_batch(request: Request) -> Response:
    context = _context(request)
    workspace = _workspace(request, context)
    return json_response(await context.batches.delete(workspace, request.path_params["batch_id"]))


async def batch_results(request: Request) -> Response:
    context = _context(request)
    workspace = _workspace(request, context)
    lines = await context.batches.results(workspace, request.path_params["batch_id"])
    return StreamingResponse(lines, media_type="application/x-jsonl")


async def health(request: Request) -> Response:
    return json_response({"status": "ok"})


routes = [
    Route("/healthz", health, methods=["GET"]),
    Route("/v1/messages/batches", create_batch, methods=["POST"]),
    Route("/v1/messages/batches", list_batches, methods=["GET"]),
    Route("/v1/messages/batches/{batch_id}", retrieve_batch, methods=["GET"]),
    Route("/v1/messages/batches/{batch_id}", delete_batch, methods=["DELETE"]),
    Route("/v1/messages/batches/{batch_id}/cancel", cancel_batch, methods=["POST"]),
    Route("/v1/messages/batches/{batch_id}/results", batch_results, methods=["GET"]),
]
