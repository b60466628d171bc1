"""`GET /openapi.json` (OpenAPI 3.1) and `GET /docs` (Swagger UI, served from vendored files).

The Messages request schema is generated from the same pydantic model that validates requests, so the
two cannot drift; the rest is written out here, next to the route table it describes.
"""

from __future__ import annotations

import functools
from importlib import resources
from importlib.metadata import version
from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from overnight.api.responses import json_response
from overnight.exceptions import NotFoundError
from overnight.openai_api.openapi import openai_paths, openai_schemas
from overnight.protocol.messages import MessageCreateParams
from overnight.protocol.openapi_parts import json_response as _json
from overnight.protocol.openapi_parts import object_schema as _object
from overnight.protocol.openapi_parts import ref as _ref

_REF = "#/components/schemas/{model}"
_ASSETS = resources.files("overnight.api") / "swagger_ui"
_ASSET_TYPES = {"swagger-ui-bundle.js": "text/javascript", "swagger-ui.css": "text/css"}


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {"anyOf": [schema, {"type": "null"}]}


_TIMESTAMP = {"type": "string", "format": "date-time"}
_RESULT_TYPES = ("succeeded", "errored", "canceled", "expired")
_COUNT = {"type": "integer", "minimum": 0}


def _schemas() -> dict[str, Any]:
    params = MessageCreateParams.model_json_schema(by_alias=True, ref_template=_REF)
    schemas: dict[str, Any] = params.pop("$defs")
    # The header-like key is also accepted as one comma-separated string (a before-validator splits it).
    params["properties"]["anthropic-beta"] = _nullable(
        {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]}
    )
    schemas["MessageCreateParams"] = params
    # count_tokens takes the same prompt without `max_tokens`.
    schemas["CountTokensParams"] = {
        **params,
        "title": "CountTokensParams",
        "required": [name for name in params["required"] if name != "max_tokens"],
    }
    usage = {
        "input_tokens": _COUNT,
        "output_tokens": _COUNT,
        "cache_creation_input_tokens": _COUNT,
        "cache_read_input_tokens": _COUNT,
    }
    schemas |= {
        "Error": _object(
            {
                "type": {"const": "error"},
                "error": _object({"type": {"type": "string"}, "message": {"type": "string"}}),
                "request_id": _nullable({"type": "string"}),
            },
            description="The error envelope every non-2xx answer carries.",
        ),
        "BatchRequest": _object(
            {
                "custom_id": {"type": "string", "pattern": "^[a-zA-Z0-9_-]{1,64}$"},
                "params": {
                    "type": "object",
                    "description": "A MessageCreateParams object. Checked per request when it runs: an invalid one "
                    "becomes that request's `errored` result, not a failed create.",
                },
            }
        ),
        "BatchCreateParams": _object(
            {"requests": {"type": "array", "items": _ref("BatchRequest"), "minItems": 1, "maxItems": 100_000}},
            description="custom_id values must be unique within the batch; the server's --max-requests may "
            "lower maxItems.",
        ),
        "RequestCounts": _object(
            {name: _COUNT for name in ("processing", "succeeded", "errored", "canceled", "expired")}
        ),
        "MessageBatch": _object(
            {
                "id": {"type": "string"},
                "type": {"const": "message_batch"},
                "processing_status": {"enum": ["in_progress", "canceling", "ended"]},
                "request_counts": _ref("RequestCounts"),
                "created_at": _TIMESTAMP,
                "expires_at": _TIMESTAMP,
                "ended_at": _nullable(_TIMESTAMP),
                "cancel_initiated_at": _nullable(_TIMESTAMP),
                "archived_at": _nullable(_TIMESTAMP),
                "results_url": _nullable({"type": "string"}),
            }
        ),
        "MessageBatchList": _object(
            {
                "data": {"type": "array", "items": _ref("MessageBatch")},
                "has_more": {"type": "boolean"},
                "first_id": _nullable({"type": "string"}),
                "last_id": _nullable({"type": "string"}),
            }
        ),
        "DeletedMessageBatch": _object({"id": {"type": "string"}, "type": {"const": "message_batch_deleted"}}),
        "Message": _object(
            {
                "id": {"type": "string"},
                "type": {"const": "message"},
                "role": {"const": "assistant"},
                "content": {
                    "type": "array",
                    "items": {"type": "object", "properties": {"type": {"type": "string"}}, "required": ["type"]},
                },
                "model": {"type": "string"},
                "stop_reason": _nullable({"type": "string"}),
                "stop_sequence": _nullable({"type": "string"}),
                "usage": {"type": "object", "properties": {"input_tokens": _COUNT, "output_tokens": _COUNT}},
            },
            required=["id", "type", "role", "content", "model", "stop_reason", "usage"],
        ),
        "MessageTokensCount": _object({"input_tokens": _COUNT}),
        "ModelInfo": _object(
            {
                "type": {"const": "model"},
                "id": {"type": "string"},
                "display_name": {"type": "string"},
                "created_at": _TIMESTAMP,
            },
            description="Limits and capabilities of what overnight routes to are unknown to it, so null.",
        ),
        "ModelList": _object(
            {
                "data": {"type": "array", "items": _ref("ModelInfo")},
                "has_more": {"type": "boolean"},
                "first_id": _nullable({"type": "string"}),
                "last_id": _nullable({"type": "string"}),
            }
        ),
        "BatchUsage": _object({"type": {"const": "batch_usage"}, "batch_id": {"type": "string"}, **usage}),
        "WorkspaceUsage": _object(
            {"type": {"const": "workspace_usage"}, "workspace": {"type": "string"}, "batches": _COUNT, **usage}
        ),
        "Health": _object({"status": {"const": "ok"}}),
        "ResultsPage": _object(
            {
                "type": {"const": "results_page"},
                "batch_id": {"type": "string"},
                "result_type": _nullable({"enum": list(_RESULT_TYPES)}),
                "offset": _COUNT,
                "limit": {"type": "integer", "minimum": 1},
                # Each item is one line of the results JSONL: {"custom_id", "result": {...}}.
                "data": {"type": "array", "items": {"type": "object", "required": ["custom_id", "result"]}},
                "has_more": {"type": "boolean"},
            }
        ),
    }
    return schemas


def _error(description: str) -> dict[str, Any]:
    return _json("Error", description)


_ERRORS = {
    "400": _error("invalid_request_error: the request is malformed or not allowed in this state"),
    "401": _error("authentication_error: no or unknown API key"),
    "403": _error("permission_error: the key belongs to another workspace"),
    "408": _error("timeout_error: the request body or head did not arrive in time"),
    "413": _error("request_too_large: the body exceeds --max-body-bytes"),
    "429": _error("rate_limit_error (with retry-after): a workspace limit was reached"),
    "529": _error("overloaded_error (with retry-after): the server or its database is busy; retry"),
    "default": _error("Any other error, in the same envelope (e.g. 431, 503)"),
}
_NOT_FOUND = {"404": _error("not_found_error")}
_BATCH_ID = {"name": "batch_id", "in": "path", "required": True, "schema": {"type": "string"}}
_BETA_QUERY = {
    "name": "beta",
    "in": "query",
    "required": False,
    "schema": {"type": "string"},
    "description": "`beta=true` is sent by the SDKs' beta client; ignored (the beta and GA paths behave the same).",
}
_BETA_HEADER = {
    "name": "anthropic-beta",
    "in": "header",
    "required": False,
    "schema": {"type": "string"},
    "description": "Comma-separated beta features (at most --max-beta-features, each at most 128 characters).",
}
_PAGE = [
    {"name": "limit", "in": "query", "required": False, "schema": {"type": "integer", "minimum": 1, "maximum": 1000}},
    {"name": "after_id", "in": "query", "required": False, "schema": {"type": "string"}},
    {"name": "before_id", "in": "query", "required": False, "schema": {"type": "string"}},
]


def _operation(
    operation_id: str,
    summary: str,
    ok: dict[str, Any],
    *,
    parameters: list[dict[str, Any]] | None = None,
    body: str | None = None,
    errors: dict[str, Any] | None = None,
) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "operationId": operation_id,
        "summary": summary,
        "parameters": parameters or [],
        "responses": {"200": ok, **(errors or {}), **_ERRORS},
    }
    if body is not None:
        operation["requestBody"] = {"required": True, "content": {"application/json": {"schema": _ref(body)}}}
    return operation


def _paths() -> dict[str, Any]:
    batch = [_BATCH_ID, _BETA_QUERY]
    return {
        "/healthz": {
            "get": {
                "operationId": "health",
                "summary": "Liveness probe (no key needed, never shed)",
                "security": [],
                "responses": {"200": _json("Health", "The server is up")},
            }
        },
        "/v1/messages/batches": {
            "post": _operation(
                "createMessageBatch",
                "Create a batch",
                _json("MessageBatch", "The batch, stored"),
                parameters=[_BETA_QUERY, _BETA_HEADER],
                body="BatchCreateParams",
            ),
            "get": _operation(
                "listMessageBatches",
                "List batches, newest first",
                _json("MessageBatchList", "A page of batches"),
                parameters=[_BETA_QUERY, *_PAGE],
            ),
        },
        "/v1/messages/batches/{batch_id}": {
            "get": _operation(
                "retrieveMessageBatch",
                "Retrieve a batch",
                _json("MessageBatch", "The batch"),
                parameters=batch,
                errors=_NOT_FOUND,
            ),
            "delete": _operation(
                "deleteMessageBatch",
                "Delete an ended batch",
                _json("DeletedMessageBatch", "Deleted"),
                parameters=batch,
                errors=_NOT_FOUND,
            ),
        },
        "/v1/messages/batches/{batch_id}/cancel": {
            "post": _operation(
                "cancelMessageBatch",
                "Cancel a batch",
                _json("MessageBatch", "The batch, canceling (or already ended)"),
                parameters=batch,
                errors=_NOT_FOUND,
            )
        },
        "/v1/messages/batches/{batch_id}/results": {
            "get": _operation(
                "messageBatchResults",
                "Download an ended batch's results",
                {
                    "description": "One JSON object per line: {custom_id, result}",
                    "content": {"application/x-jsonl": {"schema": {"type": "string"}}},
                },
                parameters=batch,
                errors=_NOT_FOUND,
            )
        },
        "/v1/messages": {
            "post": _operation(
                "createMessage",
                "Create a message now (non-streaming)",
                _json("Message", "The model's reply"),
                parameters=[_BETA_HEADER],
                body="MessageCreateParams",
                errors={"500": _error("api_error: the backend failed")},
            )
        },
        "/v1/messages/count_tokens": {
            "post": _operation(
                "countMessageTokens",
                "Count a prompt's input tokens",
                _json("MessageTokensCount", "The count"),
                body="CountTokensParams",
            )
        },
        "/v1/models": {
            "get": _operation(
                "listModels", "List the models routed by name", _json("ModelList", "A page"), parameters=_PAGE
            )
        },
        "/v1/models/{model_id}": {
            "get": _operation(
                "retrieveModel",
                "A model some route serves",
                _json("ModelInfo", "The model"),
                parameters=[{"name": "model_id", "in": "path", "required": True, "schema": {"type": "string"}}],
                errors=_NOT_FOUND,
            )
        },
        "/v1/overnight/batches/{batch_id}/usage": {
            "get": _operation(
                "batchUsage",
                "Tokens a batch's results used (overnight's own)",
                _json("BatchUsage", "Summed usage"),
                parameters=[_BATCH_ID],
                errors=_NOT_FOUND,
            )
        },
        "/v1/overnight/batches/{batch_id}/results": {
            "get": _operation(
                "batchResultsPage",
                "One page of an ended batch's results, filtered (overnight's own; the dashboard reads it)",
                _json("ResultsPage", "Result lines in order"),
                parameters=[
                    _BATCH_ID,
                    {
                        "name": "limit",
                        "in": "query",
                        "required": False,
                        "schema": {"type": "integer", "minimum": 1, "maximum": 1000},
                    },
                    {"name": "offset", "in": "query", "required": False, "schema": {"type": "integer", "minimum": 0}},
                    {"name": "type", "in": "query", "required": False, "schema": {"enum": list(_RESULT_TYPES)}},
                    {
                        "name": "custom_id",
                        "in": "query",
                        "required": False,
                        "schema": {"type": "string"},
                        "description": "Keep only results whose custom_id contains this text.",
                    },
                ],
                errors=_NOT_FOUND,
            )
        },
        "/metrics": {
            "get": {
                "operationId": "metrics",
                "summary": "Prometheus metrics of this node (no key needed)",
                "security": [],
                "responses": {
                    "200": {
                        "description": "Prometheus text exposition format",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    }
                },
            }
        },
        "/v1/overnight/usage": {
            "get": _operation(
                "workspaceUsage",
                "Tokens used by the workspace's batches (overnight's own)",
                _json("WorkspaceUsage", "Summed usage"),
            )
        },
    }


@functools.cache
def openapi_document() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "overnight",
            "version": version("overnight"),
            "description": "A self-hosted server for Anthropic's Message Batches API (and the Messages API beside "
            "it), and for OpenAI's Files, Batches and chat completions APIs (tag `OpenAI`).",
        },
        "paths": {**_paths(), **openai_paths()},
        "components": {
            "schemas": {**_schemas(), **openai_schemas()},
            "securitySchemes": {
                "apiKey": {"type": "apiKey", "in": "header", "name": "x-api-key"},
                "bearer": {"type": "http", "scheme": "bearer"},
            },
        },
        # Either header; with no keys configured (open mode) any key, or none, is accepted.
        "security": [{"apiKey": []}, {"bearer": []}, {}],
    }


async def openapi_json(request: Request) -> Response:
    return json_response(openapi_document())


_DOCS_PAGE = """<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>overnight API</title>
  <link rel="stylesheet" href="/docs/swagger-ui.css">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="/docs/swagger-ui-bundle.js"></script>
  <script>window.ui = SwaggerUIBundle({url: "/openapi.json", dom_id: "#swagger-ui"});</script>
</body>
</html>
"""


async def docs(request: Request) -> Response:
    return HTMLResponse(_DOCS_PAGE)


async def docs_asset(request: Request) -> Response:
    name = request.path_params["name"]
    media_type = _ASSET_TYPES.get(name)
    if media_type is None:
        raise NotFoundError(f"Not found: {request.url.path}")
    return Response(_asset_bytes(name), media_type=media_type, headers={"cache-control": "public, max-age=86400"})


@functools.cache
def _asset_bytes(name: str) -> bytes:
    return (_ASSETS / name).read_bytes()
