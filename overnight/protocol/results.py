"""Messages (what a backend returns) and result lines (what `/results` streams), as JSON-ready data."""

from __future__ import annotations

from typing import Any

import msgspec

from overnight import ids

Message = dict[str, Any]
"""A Messages API response object (`type: "message"`), as JSON-ready data."""

_encode = msgspec.json.Encoder().encode

# The error types the SDKs' union for a result's error (`ErrorObject`) knows; strict clients reject others.
RESULT_ERROR_TYPES = frozenset(
    {
        "invalid_request_error",
        "authentication_error",
        "billing_error",
        "permission_error",
        "not_found_error",
        "rate_limit_error",
        "timeout_error",
        "api_error",
        "overloaded_error",
    }
)


def text_block(text: str) -> dict[str, Any]:
    return {"type": "text", "text": text, "citations": None}


def tool_use_block(name: str, input: dict[str, Any], block_id: str | None = None) -> dict[str, Any]:
    return {"type": "tool_use", "id": block_id or ids.tool_use_id(), "name": name, "input": input}


def message(
    *,
    model: str,
    content: list[dict[str, Any]],
    stop_reason: str,
    input_tokens: int,
    output_tokens: int,
    stop_sequence: str | None = None,
) -> Message:
    """A complete Message with every key the SDK types declare, usage marked as batch tier."""
    return {
        "id": ids.message_id(),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": stop_sequence,
        "usage": {
            "input_tokens": input_tokens,
            "output_tokens": output_tokens,
            "cache_creation_input_tokens": None,
            "cache_read_input_tokens": None,
            "service_tier": "batch",
        },
    }


def succeeded_line(custom_id: str, result_message: Message) -> bytes:
    """One JSONL line (with its newline) for a succeeded request."""
    return _encode({"custom_id": custom_id, "result": {"type": "succeeded", "message": result_message}}) + b"\n"


def errored_line(custom_id: str, error_type: str, error_message: str) -> bytes:
    """One JSONL line for an errored request: a whole error envelope nested in the result."""
    assert error_type in RESULT_ERROR_TYPES, error_type
    error = {"type": "error", "error": {"type": error_type, "message": error_message}, "request_id": ids.request_id()}
    return _encode({"custom_id": custom_id, "result": {"type": "errored", "error": error}}) + b"\n"
