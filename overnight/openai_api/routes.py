"""The OpenAI-format routes: `/v1/files`, `/v1/batches` and `POST /v1/chat/completions` (non-streaming).

Same keys (`Authorization: Bearer`), workspaces and rate limit as the Anthropic routes; errors in
OpenAI's envelope (see `api/errors.py`).
"""

from __future__ import annotations

import msgspec
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from overnight.api.auth import authenticate
from overnight.api.body import drain, read_body
from overnight.api.context import context_of, workspace_of
from overnight.api.responses import json_response
from overnight.openai_api.errors import OpenAIRequestError
from overnight.openai_api.upload import receive_upload
from overnight.protocol.decoding import decode_json
from overnight.protocol.openai.chat import chat_completion, chat_to_params

_MULTIPART_OVERHEAD_BYTES = 64 * 1024  # the form's other parts and boundaries, beyond the file itself


def _int_query(request: Request, name: str, default: int, low: int, high: int) -> int:
    value = request.query_params.get(name)
    if value is None:
        return default
    try:
        number = int(value)
    except ValueError:
        number = low - 1
    if not low <= number <= high:
        raise OpenAIRequestError(f"{name}: must be an integer between {low} and {high}, got {value!r}", param=name)
    return number


async def upload_file(request: Request) -> Response:
    context = context_of(request)
    workspace = workspace_of(request, context)
    settings = context.settings
    limit = settings.openai_max_file_bytes
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit + _MULTIPART_OVERHEAD_BYTES:
        await drain(request, settings.body_read_timeout_seconds)
        raise OpenAIRequestError("File is too large.", param="file", status=413)
    upload = await receive_upload(
        request,
        limit=limit,
        timeout_seconds=settings.body_read_timeout_seconds,
        spool_dir=settings.data_dir if settings.data_dir.is_dir() else None,
    )
    with upload.content:
        return json_response(await context.openai.upload(workspace, upload))


async def list_files(request: Request) -> Response:
    context = context_of(request)
    workspace = workspace_of(request, context)
    order = request.query_params.get("order", "desc")
    if order not in ("asc", "desc"):
        raise OpenAIRequestError(f"order: must be 'asc' or 'desc', got {order!r}", param="order")
    page = await context.openai.list_files(
        workspace,
        purpose=request.query_params.get("purpose") or None,
        limit=_int_query(request, "limit", 10_000, 1, 10_000),
        after_id=request.query_params.get("after") or None,
        ascending=order == "asc",
    )
    return json_response(page)


async def retrieve_file(request: Request) -> Response:
    context = context_of(request)
    workspace = workspace_of(request, context)
    return json_response(await context.openai.retrieve_file(workspace, request.path_params["file_id"]))


async def delete_file(request: Request) -> Response:
    context = context_of(request)
    workspace = workspace_of(request, context)
    return json_response(await context.openai.delete_file(workspace, request.path_params["file_id"]))


async def file_content(request: Request) -> Response:
    context = context_of(request)
    workspace = workspace_of(request, context)
    size, chunks = await context.openai.file_content(workspace, request.path_params["file_id"])
    return StreamingResponse(chunks, media_type="application/octet-stream", headers={"content-length": str(size)})


async def create_batch(request: Request) -> Response:
    context = context_of(request)
    workspace = workspace_of(request, context)
    body = await read_body(request, context.settings)
    return json_response(await context.openai.create_batch(workspace, body))


async def list_batches(request: Request) -> Response:
    context = context_of(request)
    workspace = workspace_of(request, context)
    page = await context.openai.list_batches(
        workspace,
        limit=_int_query(request, "limit", 20, 1, 100),
        after_id=request.query_params.get("after") or None,
    )
    return json_response(page)


async def retrieve_batch(request: Request) -> Response:
    context = context_of(request)
    workspace = workspace_of(request, context)
    return json_response(await context.openai.retrieve_batch(workspace, request.path_params["batch_id"]))


async def cancel_batch(request: Request) -> Response:
    context = context_of(request)
    workspace = workspace_of(request, context)
    return json_response(await context.openai.cancel_batch(workspace, request.path_params["batch_id"]))


async def create_chat_completion(request: Request) -> Response:
    """One chat completion, answered now through the same routing, retries and caps as batch requests."""
    context = context_of(request)
    authenticate(request, context.settings)
    params = chat_to_params(decode_json(msgspec.json.decode, await read_body(request, context.settings)))
    message = await context.caller.call(params)
    return json_response(chat_completion(message, model=params.model))


openai_routes = [
    Route("/v1/files", upload_file, methods=["POST"]),
    Route("/v1/files", list_files, methods=["GET"]),
    Route("/v1/files/{file_id}", retrieve_file, methods=["GET"]),
    Route("/v1/files/{file_id}", delete_file, methods=["DELETE"]),
    Route("/v1/files/{file_id}/content", file_content, methods=["GET"]),
    Route("/v1/batches", create_batch, methods=["POST"]),
    Route("/v1/batches", list_batches, methods=["GET"]),
    Route("/v1/batches/{batch_id}", retrieve_batch, methods=["GET"]),
    Route("/v1/batches/{batch_id}/cancel", cancel_batch, methods=["POST"]),
    Route("/v1/chat/completions", create_chat_completion, methods=["POST"]),
]
