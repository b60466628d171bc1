"""Per-format codecs: how a batch's stored request body is decoded and its result lines rendered.

The engine (scheduler, leasing, retries, limits, counters, recovery) is format-free: it asks the batch's
codec to turn a stored body into Messages params for the backend call, and to render the line stored
for the outcome. A canceled or expired request's line is rendered from its custom_id and state alone.
"""

from __future__ import annotations

from typing import Any, Protocol

import msgspec

from overnight import ids
from overnight.exceptions import OvernightError
from overnight.protocol.messages import MessageCreateParams, parse_params
from overnight.protocol.openai.chat import (
    TEXT_COMPLETION,
    chat_completion,
    chat_params_from_json,
    text_completion_values,
)
from overnight.protocol.results import Message, errored_line, succeeded_line
from overnight.store.records import ANTHROPIC, CANCELED, OPENAI

_encode = msgspec.json.Encoder().encode


class BatchCodec(Protocol):
    name: str

    def decode(self, body: bytes) -> MessageCreateParams:
        """The Messages params of a stored request body; raises `InvalidRequestError` naming what is wrong."""
        ...

    def succeeded_line(self, custom_id: str, message: Message, params: MessageCreateParams) -> bytes:
        """The line (with its newline) for a request the backend answered."""
        ...

    def errored_line(self, custom_id: str, error: OvernightError, error_type: str) -> bytes:
        """The line for a request that failed with `error` (`error_type`: the Anthropic result's type)."""
        ...

    def derived_line(self, custom_id: str, state: str) -> bytes:
        """The line for a request that never ran: `canceled` or `expired`."""
        ...


class AnthropicCodec:
    """The Message Batches API's own lines (`{"custom_id", "result": {...}}`)."""

    name = ANTHROPIC

    def decode(self, body: bytes) -> MessageCreateParams:
        return parse_params(body)

    def succeeded_line(self, custom_id: str, message: Message, params: MessageCreateParams) -> bytes:
        return succeeded_line(custom_id, message)

    def errored_line(self, custom_id: str, error: OvernightError, error_type: str) -> bytes:
        return errored_line(custom_id, error_type, error.message)

    def derived_line(self, custom_id: str, state: str) -> bytes:
        # The stores build the same line in SQL for speed (`_RESULT_CHUNK_SQL`, `_derived_line`).
        return _encode({"custom_id": custom_id, "result": {"type": state}}) + b"\n"


# `_line` for a 200 response, as msgspec would encode it: filled in per request (the body's own template
# inlined where the reply fits it).
_SUCCEEDED_LINE_HEAD = (
    b'{"id":"batch_req_%s","custom_id":%s,"response":{"status_code":200,"request_id":"req_%s","body":'
)
_SUCCEEDED_LINE_TAIL = b'},"error":null}\n'
_SUCCEEDED_LINE = _SUCCEEDED_LINE_HEAD + b"%s" + _SUCCEEDED_LINE_TAIL
_SUCCEEDED_TEXT_LINE = _SUCCEEDED_LINE_HEAD + TEXT_COMPLETION + _SUCCEEDED_LINE_TAIL

# A request that never ran: the error codes OpenAI's error files use.
_NOT_RUN = {
    CANCELED: ("batch_cancelled", "This request was not executed because the batch was cancelled."),
    "expired": ("batch_expired", "This request could not be executed before the completion window expired."),
}


class OpenAICodec:
    """OpenAI Batch API lines: `{"id", "custom_id", "response": {status_code, request_id, body}, "error"}`.

    The stored body is a `/v1/chat/completions` request; an HTTP-like failure keeps `error` null and puts
    the status and error envelope in `response` (as OpenAI does), a request that never ran has
    `response: null` and an `error` code.
    """

    name = OPENAI

    def decode(self, body: bytes) -> MessageCreateParams:
        return chat_params_from_json(body)

    def succeeded_line(self, custom_id: str, message: Message, params: MessageCreateParams) -> bytes:
        # The line's id shares the random part of the request id it carries, as in `_line`.
        random = ids.random_part().encode()
        values = text_completion_values(message, model=params.model)
        if values is not None:
            return _SUCCEEDED_TEXT_LINE % (random, _encode(custom_id), random, *values)
        body = _encode(chat_completion(message, model=params.model))
        return _SUCCEEDED_LINE % (random, _encode(custom_id), random, body)

    def errored_line(self, custom_id: str, error: OvernightError, error_type: str) -> bytes:
        status = error.status_code if 400 <= error.status_code < 600 else 500
        envelope = {
            "error": {"message": error.message, "type": openai_error_type(error_type), "param": None, "code": None}
        }
        request_id = ids.request_id()
        return _line(custom_id, {"status_code": status, "request_id": request_id, "body": envelope}, None, request_id)

    def derived_line(self, custom_id: str, state: str) -> bytes:
        code, message = _NOT_RUN[state]
        return _line(custom_id, None, {"code": code, "message": message})


def openai_error_type(anthropic_type: str) -> str:
    """OpenAI's error `type` for one of ours (OpenAI has fewer: client errors are invalid requests)."""
    return {
        "authentication_error": "authentication_error",
        "permission_error": "permission_error",
        "not_found_error": "not_found_error",
        "rate_limit_error": "rate_limit_error",
        "overloaded_error": "server_error",
        "api_error": "server_error",
        "timeout_error": "server_error",
    }.get(anthropic_type, "invalid_request_error")


def _line(
    custom_id: str, response: dict[str, Any] | None, error: dict[str, Any] | None, request_id: str | None = None
) -> bytes:
    # The line's id shares the random part of the request id it carries (one draw, not two, per line).
    line_id = "batch_req_" + (request_id or ids.request_id())[4:]
    return _encode({"id": line_id, "custom_id": custom_id, "response": response, "error": error}) + b"\n"


ANTHROPIC_CODEC = AnthropicCodec()
OPENAI_CODEC = OpenAICodec()
_CODECS: dict[str, BatchCodec] = {ANTHROPIC: ANTHROPIC_CODEC, OPENAI: OPENAI_CODEC}


def codec_for(format: str) -> BatchCodec:
    return _CODECS[format]
