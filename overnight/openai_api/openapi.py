"""The OpenAI-format operations of `/openapi.json`: Files, Batches and chat completions, with OpenAI's
error envelope and Bearer auth. `api/openapi.py` merges them into the document.

Each request schema is no stricter than the server (what it accepts, the schema accepts); the server
refuses more than JSON Schema can say (one model per batch, a known input file, tool names that exist).
"""

from __future__ import annotations

from typing import Any

from overnight.openai_api.service import COMPLETION_WINDOW, KNOWN_ENDPOINTS
from overnight.protocol.openai.chat import chat_request_schema
from overnight.protocol.openapi_parts import json_response as _json
from overnight.protocol.openapi_parts import object_schema as _object
from overnight.protocol.openapi_parts import ref as _ref

_NULLABLE_INT = {"type": ["integer", "null"]}
_NULLABLE_STRING = {"type": ["string", "null"]}
_COUNT = {"type": "integer", "minimum": 0}
_BATCH_STATUSES = [
    "validating",
    "failed",
    "in_progress",
    "finalizing",
    "completed",
    "expired",
    "cancelling",
    "cancelled",
]


def _list(item: str) -> dict[str, Any]:
    return _object(
        {
            "object": {"const": "list"},
            "data": {"type": "array", "items": _ref(item)},
            "first_id": _NULLABLE_STRING,
            "last_id": _NULLABLE_STRING,
            "has_more": {"type": "boolean"},
        }
    )


def openai_schemas() -> dict[str, Any]:
    return {
        "OpenAIError": _object(
            {
                "error": _object(
                    {
                        "message": {"type": "string"},
                        "type": {"type": "string"},
                        "param": _NULLABLE_STRING,
                        "code": _NULLABLE_STRING,
                    }
                )
            },
            description="OpenAI's error envelope, on every non-2xx answer of an OpenAI-format path.",
        ),
        "OpenAIFileUpload": {
            "type": "object",
            "properties": {
                "file": {
                    "type": "string",
                    "format": "binary",
                    "description": "The JSONL input file; its name must end in `.jsonl`.",
                },
                "purpose": {"const": "batch", "description": "Only `batch` is supported here."},
            },
            "required": ["file", "purpose"],
        },
        "OpenAIFile": _object(
            {
                "id": {"type": "string"},
                "object": {"const": "file"},
                "bytes": _COUNT,
                "created_at": {"type": "integer"},
                "filename": {"type": "string"},
                "purpose": {"enum": ["batch", "batch_output"]},
                "status": {"enum": ["uploaded", "processed", "error"]},
                "expires_at": _NULLABLE_INT,
                "status_details": _NULLABLE_STRING,
            }
        ),
        "OpenAIFileList": _list("OpenAIFile"),
        "OpenAIFileDeleted": _object(
            {"id": {"type": "string"}, "object": {"const": "file"}, "deleted": {"type": "boolean"}}
        ),
        "OpenAIBatchCreateParams": {
            "type": "object",
            "properties": {
                "input_file_id": {"type": "string", "minLength": 1},
                "endpoint": {
                    "enum": list(KNOWN_ENDPOINTS),
                    "description": "OpenAI's batch endpoints; this server runs `/v1/chat/completions` only.",
                },
                "completion_window": {"const": COMPLETION_WINDOW},
                "metadata": {
                    "type": ["object", "null"],
                    "maxProperties": 16,
                    "propertyNames": {"maxLength": 64},
                    "additionalProperties": {"type": "string", "maxLength": 512},
                },
                "output_expires_after": {
                    "description": "Accepted and ignored: output files expire with the batch's results."
                },
            },
            "required": ["input_file_id", "endpoint", "completion_window"],
        },
        "OpenAIBatchError": _object(
            {"code": _NULLABLE_STRING, "line": _NULLABLE_INT, "message": _NULLABLE_STRING, "param": _NULLABLE_STRING}
        ),
        "OpenAIBatch": _object(
            {
                "id": {"type": "string"},
                "object": {"const": "batch"},
                "endpoint": {"type": "string"},
                "model": _NULLABLE_STRING,
                "errors": {
                    "anyOf": [
                        _object(
                            {"object": {"const": "list"}, "data": {"type": "array", "items": _ref("OpenAIBatchError")}}
                        ),
                        {"type": "null"},
                    ]
                },
                "input_file_id": {"type": "string"},
                "completion_window": {"type": "string"},
                "status": {"enum": _BATCH_STATUSES},
                "output_file_id": _NULLABLE_STRING,
                "error_file_id": _NULLABLE_STRING,
                "created_at": {"type": "integer"},
                **{
                    name: _NULLABLE_INT
                    for name in (
                        "in_progress_at",
                        "expires_at",
                        "finalizing_at",
                        "completed_at",
                        "failed_at",
                        "expired_at",
                        "cancelling_at",
                        "cancelled_at",
                    )
                },
                "request_counts": _object({"total": _COUNT, "completed": _COUNT, "failed": _COUNT}),
                "usage": {
                    "anyOf": [
                        _object(
                            {
                                "input_tokens": _COUNT,
                                "input_tokens_details": _object({"cached_tokens": _COUNT}),
                                "output_tokens": _COUNT,
                                "output_tokens_details": _object({"reasoning_tokens": _COUNT}),
                                "total_tokens": _COUNT,
                            }
                        ),
                        {"type": "null"},
                    ]
                },
                "metadata": {"type": ["object", "null"], "additionalProperties": {"type": "string"}},
            }
        ),
        "OpenAIBatchList": _list("OpenAIBatch"),
        "ChatCompletionCreateParams": chat_request_schema(),
        "ChatCompletion": _object(
            {
                "id": {"type": "string"},
                "object": {"const": "chat.completion"},
                "created": {"type": "integer"},
                "model": {"type": "string"},
                "choices": {
                    "type": "array",
                    "items": _object(
                        {
                            "index": {"type": "integer"},
                            "message": {
                                "type": "object",
                                "properties": {
                                    "role": {"const": "assistant"},
                                    "content": _NULLABLE_STRING,
                                    "refusal": _NULLABLE_STRING,
                                    "tool_calls": {
                                        "type": "array",
                                        "items": _object(
                                            {
                                                "id": {"type": "string"},
                                                "type": {"const": "function"},
                                                "function": _object(
                                                    {
                                                        "name": {"type": "string"},
                                                        "arguments": {
                                                            "type": "string",
                                                            "description": "A JSON object, as a string.",
                                                        },
                                                    }
                                                ),
                                            }
                                        ),
                                    },
                                },
                                "required": ["role"],
                            },
                            "logprobs": {"type": ["object", "null"]},
                            "finish_reason": {
                                "enum": ["stop", "length", "tool_calls", "content_filter", "function_call"]
                            },
                        },
                    ),
                },
                "usage": _object(
                    {"prompt_tokens": _COUNT, "completion_tokens": _COUNT, "total_tokens": _COUNT},
                ),
                "system_fingerprint": _NULLABLE_STRING,
            },
        ),
    }


def _error(description: str) -> dict[str, Any]:
    return _json("OpenAIError", description)


_ERRORS = {
    "400": _error("invalid_request_error: the request is malformed or not allowed"),
    "401": _error("authentication_error: no or unknown API key"),
    "408": _error("the request body or head did not arrive in time"),
    "413": _error("the body exceeds --max-body-bytes (or a file --openai-max-file-bytes)"),
    "429": _error("rate_limit_error (with retry-after): a workspace limit was reached"),
    "529": _error("server_error (with retry-after): the server or its database is busy; retry"),
    "default": _error("Any other error, in the same envelope"),
}
_NOT_FOUND = {"404": _error("not_found_error (files) or invalid_request_error (batches): no such object")}
# Bearer, as the openai SDK sends it; with no keys configured (open mode) any key, or none, is accepted.
_SECURITY: list[dict[str, list[str]]] = [{"bearer": []}, {}]


def _operation(
    operation_id: str,
    summary: str,
    ok: dict[str, Any],
    *,
    parameters: list[dict[str, Any]] | None = None,
    body: dict[str, Any] | None = None,
    errors: dict[str, Any] | None = None,
) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "operationId": operation_id,
        "summary": summary,
        "tags": ["OpenAI"],
        "security": _SECURITY,
        "parameters": parameters or [],
        "responses": {"200": ok, **(errors or {}), **_ERRORS},
    }
    if body is not None:
        operation["requestBody"] = {"required": True, "content": body}
    return operation


def _path_id(name: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}


def _query(name: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema}


_FILE_ID = _path_id("file_id")
_BATCH_ID = _path_id("batch_id")


def openai_paths() -> dict[str, Any]:
    return {
        "/v1/files": {
            "post": _operation(
                "openaiUploadFile",
                "Upload a batch input file (OpenAI Files API)",
                _json("OpenAIFile", "The file, stored"),
                body={"multipart/form-data": {"schema": _ref("OpenAIFileUpload")}},
            ),
            "get": _operation(
                "openaiListFiles",
                "List files (OpenAI Files API)",
                _json("OpenAIFileList", "A page of files"),
                parameters=[
                    _query("purpose", {"type": "string"}),
                    _query("limit", {"type": "integer", "minimum": 1, "maximum": 10_000}),
                    _query("order", {"enum": ["asc", "desc"]}),
                    _query("after", {"type": "string"}),
                ],
            ),
        },
        "/v1/files/{file_id}": {
            "get": _operation(
                "openaiRetrieveFile",
                "Retrieve a file (OpenAI Files API)",
                _json("OpenAIFile", "The file"),
                parameters=[_FILE_ID],
                errors=_NOT_FOUND,
            ),
            "delete": _operation(
                "openaiDeleteFile",
                "Delete a file (OpenAI Files API)",
                _json("OpenAIFileDeleted", "Deleted"),
                parameters=[_FILE_ID],
                errors=_NOT_FOUND,
            ),
        },
        "/v1/files/{file_id}/content": {
            "get": _operation(
                "openaiFileContent",
                "Download a file's bytes: an input file, or a batch's output or error file (JSONL)",
                {
                    "description": "The file's exact bytes",
                    "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
                },
                parameters=[_FILE_ID],
                errors=_NOT_FOUND,
            )
        },
        "/v1/batches": {
            "post": _operation(
                "openaiCreateBatch",
                "Create a batch from an uploaded input file (OpenAI Batches API)",
                _json("OpenAIBatch", "The batch: in_progress, or failed with the input file's errors"),
                body={"application/json": {"schema": _ref("OpenAIBatchCreateParams")}},
            ),
            "get": _operation(
                "openaiListBatches",
                "List batches, newest first (OpenAI Batches API)",
                _json("OpenAIBatchList", "A page of batches"),
                parameters=[
                    _query("limit", {"type": "integer", "minimum": 1, "maximum": 100}),
                    _query("after", {"type": "string"}),
                ],
            ),
        },
        "/v1/batches/{batch_id}": {
            "get": _operation(
                "openaiRetrieveBatch",
                "Retrieve a batch (OpenAI Batches API)",
                _json("OpenAIBatch", "The batch"),
                parameters=[_BATCH_ID],
                errors=_NOT_FOUND,
            )
        },
        "/v1/batches/{batch_id}/cancel": {
            "post": _operation(
                "openaiCancelBatch",
                "Cancel a batch (OpenAI Batches API)",
                _json("OpenAIBatch", "The batch, cancelling (or already cancelled)"),
                parameters=[_BATCH_ID],
                errors={**_NOT_FOUND, "409": _error("the batch already completed, failed or expired")},
            )
        },
        "/v1/chat/completions": {
            "post": _operation(
                "openaiCreateChatCompletion",
                "Create a chat completion now (non-streaming), through the same routing as batch requests",
                _json("ChatCompletion", "The model's reply"),
                body={"application/json": {"schema": _ref("ChatCompletionCreateParams")}},
                errors={"404": _error("no route serves the model"), "500": _error("server_error: the backend failed")},
            )
        },
    }
