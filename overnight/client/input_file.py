"""Reading and checking a batch input file (JSONL) before anything is sent.

One `{"custom_id": ..., "params": {...}}` object per line, as the Message Batches API takes them.
Every check the server would make on the envelope is made here first, naming the line, so that a
mistake in line 90,000 costs nothing: no batch is created until the whole file is known good.
`params` itself is checked only for the three fields every Messages request needs; the server
judges the rest (an invalid request there becomes an `errored` result, as on the real API).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import IO, Any

# The API's own limits for one batch.
MAX_REQUESTS = 100_000
MAX_BYTES = 256 * 1024 * 1024
CUSTOM_ID = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
REQUIRED_PARAMS = ("model", "max_tokens", "messages")


class InputFileError(Exception):
    """The file cannot be submitted; `line` is 1-based (None: the file as a whole)."""

    def __init__(self, message: str, line: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.line = line

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}" if self.line is not None else self.message


@dataclass(frozen=True)
class BatchInput:
    requests: list[dict[str, Any]]
    size_bytes: int


def read_batch_input(stream: IO[bytes], *, max_requests: int = MAX_REQUESTS, max_bytes: int = MAX_BYTES) -> BatchInput:
    """Parse and check every line of `stream`; raise `InputFileError` at the first problem."""
    requests: list[dict[str, Any]] = []
    first_seen: dict[str, int] = {}
    size = 0
    for number, raw in enumerate(stream, start=1):
        size += len(raw)
        if size > max_bytes:
            raise InputFileError(f"the file passes {_megabytes(max_bytes)}, the most one batch may hold", number)
        if not raw.strip():
            continue  # blank lines (a trailing newline, spacing) carry no request
        if len(requests) >= max_requests:
            raise InputFileError(f"more than {max_requests:,} requests, the most one batch may hold", number)
        request = _parse_line(raw, number)
        custom_id = request["custom_id"]
        if custom_id in first_seen:
            raise InputFileError(
                f"duplicate custom_id {custom_id!r} (first used on line {first_seen[custom_id]})", number
            )
        first_seen[custom_id] = number
        requests.append(request)
    if not requests:
        raise InputFileError("the file holds no requests")
    return BatchInput(requests, size)


def _parse_line(raw: bytes, number: int) -> dict[str, Any]:
    try:
        value = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputFileError(f"not valid JSON ({exc})", number) from None
    if not isinstance(value, dict):
        raise InputFileError(f"expected a JSON object, got {type(value).__name__}", number)
    for field in ("custom_id", "params"):
        if field not in value:
            raise InputFileError(f"missing field {field!r}", number)
    extra = sorted(set(value) - {"custom_id", "params"})
    if extra:
        raise InputFileError(f"unexpected field {extra[0]!r} (a line holds only custom_id and params)", number)
    custom_id = value["custom_id"]
    if not isinstance(custom_id, str) or not CUSTOM_ID.match(custom_id):
        raise InputFileError(
            f"custom_id must be 1 to 64 letters, digits, '-' or '_', got {json.dumps(custom_id)}", number
        )
    params = value["params"]
    if not isinstance(params, dict):
        raise InputFileError(f"params must be a JSON object, got {type(params).__name__}", number)
    for field in REQUIRED_PARAMS:
        if field not in params:
            raise InputFileError(f"missing field 'params.{field}'", number)
    return value


def _megabytes(limit: int) -> str:
    return f"{limit // (1024 * 1024)} MB" if limit >= 1024 * 1024 else f"{limit:,} bytes"
