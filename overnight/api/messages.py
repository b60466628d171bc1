"""The Messages API beside the batches: `POST /v1/messages` (non-streaming), `count_tokens`, models.

They go through the same routing, retries and concurrency caps as batch requests, so
`client.messages.create(...)` works against overnight too (and one overnight can be another's
`anthropic` upstream).
"""

from __future__ import annotations

import fnmatch
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from overnight.api.auth import authenticate
from overnight.api.body import read_body
from overnight.api.context import beta_features, context_of, page_limit
from overnight.api.responses import json_response
from overnight.exceptions import InvalidRequestError, NotFoundError
from overnight.protocol.decoding import decode_json
from overnight.protocol.messages import MessageCreateParams, parse_params
from overnight.protocol.pages import page_object
from overnight.timestamps import to_rfc3339


async def create_message(request: Request) -> Response:
    context = context_of(request)
    authenticate(request, context.settings)
    params = parse_params(await read_body(request, context.settings))
    message = await context.caller.call(params.with_betas(beta_features(request, context.settings.max_beta_features)))
    usage = message.get("usage")
    if isinstance(usage, dict):
        usage["service_tier"] = "standard"  # answered now, not as part of a batch
    return json_response(message)


async def count_tokens(request: Request) -> Response:
    context = context_of(request)
    authenticate(request, context.settings)
    params = _count_tokens_params(await read_body(request, context.settings))
    backend = context.router.resolve(params.model)
    return json_response({"input_tokens": await backend.count_tokens(params)})


def _count_tokens_params(body: bytes | bytearray) -> MessageCreateParams:
    """count_tokens takes the prompt without `max_tokens`; validate it as a Messages request that has one."""
    data = decode_json(msgspec.json.decode, body)
    if not isinstance(data, dict):
        raise InvalidRequestError("Request body must be a JSON object")
    data.setdefault("max_tokens", 1)
    return parse_params(msgspec.json.encode(data))


async def list_models(request: Request) -> Response:
    context = context_of(request)
    authenticate(request, context.settings)
    models = [_model_object(model_id, context.started_at) for model_id in context.router.model_ids()]
    query = request.query_params
    after_id, before_id = query.get("after_id") or None, query.get("before_id") or None  # empty: absent
    ids = [model["id"] for model in models]
    for cursor in (after_id, before_id):
        if cursor is not None and cursor not in ids:
            raise InvalidRequestError(f"Unknown pagination cursor: no model with id {cursor!r}")
    start = ids.index(after_id) + 1 if after_id else 0
    end = ids.index(before_id) if before_id else len(models)
    limit = page_limit(query.get("limit"))
    window = models[start:end]
    page = window[-limit:] if before_id and not after_id else window[:limit]
    return json_response(page_object(page, has_more=len(page) < len(window)))


async def retrieve_model(request: Request) -> Response:
    context = context_of(request)
    authenticate(request, context.settings)
    model_id = request.path_params["model_id"]
    if model_id not in context.router.model_ids() and not any(
        fnmatch.fnmatchcase(model_id, pattern) for pattern in context.router.patterns()
    ):
        raise NotFoundError(f"model: {model_id} (no route in this server's config matches this model)")
    return json_response(_model_object(model_id, context.started_at))


def _model_object(model_id: str, created_at: int) -> dict[str, Any]:
    """A ModelInfo; overnight knows no limits or capabilities of what it routes to, so those are null."""
    return {
        "type": "model",
        "id": model_id,
        "display_name": model_id,
        "created_at": to_rfc3339(created_at),
        "lifecycle": "active",
        "deprecated_at": None,
        "retires_at": None,
        "capabilities": None,
        "line": None,
        "max_input_tokens": None,
        "max_tokens": None,
    }
