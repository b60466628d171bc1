"""The route table and its thin handlers: authenticate, parse, call the service, render."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from overnight.api import messages, openapi
from overnight.api.body import body_chunks, declared_length
from overnight.api.context import beta_features, context_of, page_limit, public_base_url, workspace_of
from overnight.api.metrics import metrics_endpoint
from overnight.api.responses import json_response


async def create_batch(request: Request) -> Response:
    context = context_of(request)
    workspace = workspace_of(request, context)
    betas = beta_features(request, context.settings.max_beta_features)
    base_url = public_base_url(request, context.settings)
    chunks = body_chunks(request, context.settings)
    batch = await context.batches.create_streamed(
        workspace, chunks, base_url, declared_length=declared_length(request), betas=betas
    )
    return json_response(batch)


async def list_batches(request: Request) -> Response:
    context = context_of(request)
    workspace = workspace_of(request, context)
    query = request.query_params
    page = await context.batches.list(
        workspace,
        limit=page_limit(query.get("limit")),
        after_id=query.get("after_id") or None,
        before_id=query.get("before_id") or None,
        public_base_url=public_base_url(request, context.settings),
    )
    return json_response(page)


async def retrieve_batch(request: Request) -> Response:
    context = context_of(request)
    workspace = workspace_of(request, context)
    batch_id = request.path_params["batch_id"]
    base_url = public_base_url(request, context.settings)
    return json_response(await context.batches.retrieve(workspace, batch_id, base_url))


async def cancel_batch(request: Request) -> Response:
    context = context_of(request)
    workspace = workspace_of(request, context)
    batch_id = request.path_params["batch_id"]
    base_url = public_base_url(request, context.settings)
    return json_response(await context.batches.cancel(workspace, batch_id, base_url))


async def delete_batch(request: Request) -> Response:
    context = context_of(request)
    workspace = workspace_of(request, context)
    return json_response(await context.batches.delete(workspace, request.path_params["batch_id"]))


async def batch_results(request: Request) -> Response:
    context = context_of(request)
    workspace = workspace_of(request, context)
    lines = await context.batches.results(workspace, request.path_params["batch_id"])
    return StreamingResponse(lines, media_type="application/x-jsonl")


async def health(request: Request) -> Response:
    return json_response({"status": "ok"})


async def batch_usage(request: Request) -> Response:
    context = context_of(request)
    workspace = workspace_of(request, context)
    return json_response(await context.batches.usage(workspace, request.path_params["batch_id"]))


async def workspace_usage(request: Request) -> Response:
    context = context_of(request)
    workspace = workspace_of(request, context)
    return json_response(await context.batches.workspace_usage(workspace))


routes = [
    Route("/healthz", health, methods=["GET"]),
    Route("/metrics", metrics_endpoint, methods=["GET"]),
    Route("/v1/messages/batches", create_batch, methods=["POST"]),
    Route("/v1/messages/batches", list_batches, methods=["GET"]),
    Route("/v1/messages/batches/{batch_id}", retrieve_batch, methods=["GET"]),
    Route("/v1/messages/batches/{batch_id}", delete_batch, methods=["DELETE"]),
    Route("/v1/messages/batches/{batch_id}/cancel", cancel_batch, methods=["POST"]),
    Route("/v1/messages/batches/{batch_id}/results", batch_results, methods=["GET"]),
    Route("/v1/messages", messages.create_message, methods=["POST"]),
    Route("/v1/messages/count_tokens", messages.count_tokens, methods=["POST"]),
    Route("/v1/models", messages.list_models, methods=["GET"]),
    Route("/v1/models/{model_id}", messages.retrieve_model, methods=["GET"]),
    # overnight's own, outside the Anthropic paths: token usage summed per batch and per workspace.
    Route("/v1/overnight/batches/{batch_id}/usage", batch_usage, methods=["GET"]),
    Route("/v1/overnight/usage", workspace_usage, methods=["GET"]),
    Route("/openapi.json", openapi.openapi_json, methods=["GET"]),
    Route("/docs", openapi.docs, methods=["GET"]),
    Route("/docs/{name}", openapi.docs_asset, methods=["GET"]),
]

# A worker node serves no API: only its health (for a load balancer or an orchestrator's probe) and metrics.
worker_routes = [Route("/healthz", health, methods=["GET"]), Route("/metrics", metrics_endpoint, methods=["GET"])]
