"""Checking a batch's input file line by line, as OpenAI does before a batch runs.

Every bad line gets its own `BatchError` (1-based `line`), up to `MAX_REPORTED_ERRORS`; whole-file
errors have `line: None`. The error codes are those OpenAI's API and its documentation use.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec

MAX_REPORTED_ERRORS = 100
_MAX_CUSTOM_ID_CHARS = 64


class _Line(msgspec.Struct):
    custom_id: Any = None
    method: Any = None
    url: Any = None
    # Kept as the bytes sent: the engine decodes each body when it runs the request.
    body: msgspec.Raw = msgspec.Raw(b"")  # empty: absent


class _Body(msgspec.Struct):
    model: Any = None
    messages: Any = None
    stream: Any = None


_decode_line = msgspec.json.Decoder(_Line).decode
_decode_body = msgspec.json.Decoder(_Body).decode


def batch_error(code: str, message: str, *, line: int | None = None, param: str | None = None) -> dict[str, Any]:
    return {"code": code, "line": line, "message": message, "param": param}


class CheckedInput(msgspec.Struct):
    items: list[tuple[str, msgspec.Raw]]
    model: str | None
    errors: list[dict[str, Any]]


def check_input_file(
    content: bytes, *, endpoint: str, max_lines: int, model_is_served: Callable[[str], bool]
) -> CheckedInput:
    """The (custom_id, body) pairs of a valid file, or the errors that make it invalid."""
    lines = content.split(b"\n")
    while lines and not lines[-1].strip():
        lines.pop()
    if not lines:
        return CheckedInput([], None, [batch_error("empty_file", "The input file is empty.")])
    if len(lines) > max_lines:
        return CheckedInput(
            [],
            None,
            [
                batch_error(
                    "too_many_tasks", f"The input file has {len(lines)} requests; a batch holds at most {max_lines}."
                )
            ],
        )
    items: list[tuple[str, msgspec.Raw]] = []
    errors: list[dict[str, Any]] = []
    seen: set[str] = set()
    model: str | None = None
    for number, raw in enumerate(lines, start=1):
        error = None
        try:
            line = _decode_line(raw)
        except (msgspec.DecodeError, msgspec.ValidationError, RecursionError, UnicodeDecodeError):
            error = batch_error("invalid_json_line", "This line is not parseable as valid JSON.", line=number)
        else:
            error, custom_id, body_model = _check_line(line, number, endpoint, seen, model, model_is_served)
            if error is None:
                assert custom_id is not None
                model = model or body_model
                seen.add(custom_id)
                items.append((custom_id, line.body))
        if error is not None:
            errors.append(error)
            if len(errors) >= MAX_REPORTED_ERRORS:
                break
    return CheckedInput(items if not errors else [], model, errors)


def _check_line(
    line: _Line, number: int, endpoint: str, seen: set[str], model: str | None, model_is_served: Callable[[str], bool]
) -> tuple[dict[str, Any] | None, str | None, str | None]:
    for key in ("custom_id", "method", "url", "body"):
        if getattr(line, key) is None or (key == "body" and not line.body):
            return (
                batch_error(
                    "missing_required_parameter", f"Missing required parameter: '{key}'.", line=number, param=key
                ),
                None,
                None,
            )
    custom_id = line.custom_id
    if not isinstance(custom_id, str) or not 1 <= len(custom_id) <= _MAX_CUSTOM_ID_CHARS or not custom_id.isprintable():
        return (
            batch_error(
                "invalid_request",
                "custom_id must be a string of 1 to 64 printable characters.",
                line=number,
                param="custom_id",
            ),
            None,
            None,
        )
    if custom_id in seen:
        return (
            batch_error(
                "duplicate_custom_id",
                f"The custom_id '{custom_id}' is used by an earlier line.",
                line=number,
                param="custom_id",
            ),
            None,
            None,
        )
    if line.method != "POST":
        return (
            batch_error("invalid_request", "Only the POST method is supported.", line=number, param="method"),
            None,
            None,
        )
    if line.url != endpoint:
        return (
            batch_error(
                "invalid_url",
                "The URL provided for this request does not match the batch endpoint.",
                line=number,
                param="url",
            ),
            None,
            None,
        )
    try:
        body = _decode_body(line.body)
    except msgspec.ValidationError:
        return batch_error("invalid_request", "The body must be a JSON object.", line=number, param="body"), None, None
    if not isinstance(body.model, str) or not body.model:
        return (
            batch_error("invalid_request", "Model parameter is required.", line=number, param="body.model"),
            None,
            None,
        )
    if not isinstance(body.messages, list) or not body.messages:
        return (
            batch_error("invalid_request", "Messages parameter is required.", line=number, param="body.messages"),
            None,
            None,
        )
    if body.stream is True:
        return (
            batch_error(
                "streaming_unsupported",
                "Chat Completions: Streaming is not supported in the Batch API.",
                line=number,
                param="body.stream",
            ),
            None,
            None,
        )
    if model is not None and body.model != model:
        return (
            batch_error(
                "model_mismatch", "A batch's requests must all use the same model.", line=number, param="body.model"
            ),
            None,
            None,
        )
    if model is None and not model_is_served(body.model):
        return (
            batch_error(
                "model_not_found",
                f"The provided model '{body.model}' is not supported by the Batch API.",
                line=number,
                param="body.model",
            ),
            None,
            None,
        )
    return None, custom_id, body.model
