"""Checking a batch's input file line by line, as OpenAI does before a batch runs (while `validating`).

Every bad line gets its own `BatchError` (1-based `line`), up to `MAX_REPORTED_ERRORS`; whole-file
errors have `line: None`. The error codes are those OpenAI's API and its documentation use.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Annotated, Any

import msgspec

MAX_REPORTED_ERRORS = 100
MAX_LINE_BYTES = 16 * 1024 * 1024  # one request; a longer line is an error, never held whole
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


# The shape nearly every line has, checked in C: what these accept, `_check_line` accepts too, so a line
# they take needs only the checks that compare it with the file's other lines (see `InputChecker._check`).
# Anything else goes the general way, which names the error.
class _TypicalLine(msgspec.Struct, gc=False):
    custom_id: str
    method: str
    url: str
    body: msgspec.Raw


class _TypicalBody(msgspec.Struct, gc=False):
    model: Annotated[str, msgspec.Meta(min_length=1)]
    messages: Annotated[list[msgspec.Raw], msgspec.Meta(min_length=1)]
    stream: bool | None = None


_decode_typical_line = msgspec.json.Decoder(_TypicalLine).decode
_decode_typical_body = msgspec.json.Decoder(_TypicalBody).decode


def batch_error(code: str, message: str, *, line: int | None = None, param: str | None = None) -> dict[str, Any]:
    return {"code": code, "line": line, "message": message, "param": param}


class InputChecker:
    """Checks a file's lines as they come (`items`), keeping only the custom_ids seen, so that a file of
    any size is checked in the memory of one line. Afterwards, `errors` says why the file is invalid
    (empty: it is valid), `total` how many requests it holds and `model` which model they all use."""

    def __init__(self, *, endpoint: str, max_lines: int, model_is_served: Callable[[str], bool]) -> None:
        self.endpoint = endpoint
        self.max_lines = max_lines
        self.model_is_served = model_is_served
        self.errors: list[dict[str, Any]] = []
        self.model: str | None = None
        self.total = 0
        self._seen: set[str] = set()

    def items(self, lines: Iterable[bytes | None]) -> Iterator[tuple[str, msgspec.Raw]]:
        """The (custom_id, body) of each valid line, in order; stops early once the file is known to
        be invalid. A `None` line is one longer than `MAX_LINE_BYTES` (see `split_lines`)."""
        blank = 0  # blank lines not yet known to be followed by another line (trailing ones are fine)
        number = 0
        for raw in lines:
            number += 1
            if raw is not None and not raw.strip():
                blank += 1
                continue
            if number > self.max_lines:
                self.errors = [
                    batch_error(
                        "too_many_tasks",
                        f"The input file has more than {self.max_lines} requests; a batch holds at most "
                        f"{self.max_lines}.",
                    )
                ]
                return
            for earlier in range(number - blank, number):
                self._add(batch_error("invalid_json_line", "This line is not parseable as valid JSON.", line=earlier))
            blank = 0
            item = self._check(raw, number)
            if item is not None and not self.errors:
                self.total += 1
                yield item
            if len(self.errors) >= MAX_REPORTED_ERRORS:
                del self.errors[MAX_REPORTED_ERRORS:]
                return
        if number == blank and not self.errors:
            self.errors.append(batch_error("empty_file", "The input file is empty."))

    def _add(self, error: dict[str, Any]) -> None:
        self.errors.append(error)

    def _check(self, raw: bytes | None, number: int) -> tuple[str, msgspec.Raw] | None:
        if raw is not None:
            try:
                typical = _decode_typical_line(raw)
                body = _decode_typical_body(typical.body)
            except (msgspec.DecodeError, RecursionError, UnicodeDecodeError):  # ValidationError too
                pass
            else:
                custom_id, model = typical.custom_id, body.model
                if (
                    typical.method == "POST"
                    and typical.url == self.endpoint
                    and len(custom_id) <= _MAX_CUSTOM_ID_CHARS
                    and custom_id  # after the length: the commonest check to pass last
                    and custom_id.isprintable()
                    and custom_id not in self._seen
                    and body.stream is not True
                    and (model == self.model if self.model is not None else self.model_is_served(model))
                ):
                    self.model = model
                    self._seen.add(custom_id)
                    return custom_id, typical.body
        return self._check_generally(raw, number)

    def _check_generally(self, raw: bytes | None, number: int) -> tuple[str, msgspec.Raw] | None:
        if raw is None:
            self._add(
                batch_error(
                    "invalid_request", f"This line is longer than {MAX_LINE_BYTES} bytes.", line=number, param=None
                )
            )
            return None
        try:
            line = _decode_line(raw)
        except (msgspec.DecodeError, msgspec.ValidationError, RecursionError, UnicodeDecodeError):
            self._add(batch_error("invalid_json_line", "This line is not parseable as valid JSON.", line=number))
            return None
        error, custom_id, body_model = _check_line(
            line, number, self.endpoint, self._seen, self.model, self.model_is_served
        )
        if error is not None:
            self._add(error)
            return None
        assert custom_id is not None
        self.model = self.model or body_model
        self._seen.add(custom_id)
        return custom_id, line.body


def checked_items(lines: Iterable[bytes | None]) -> Iterator[tuple[str, msgspec.Raw]]:
    """The (custom_id, body) of each line of a file an `InputChecker` passes (or is checking meanwhile):
    only decoded, not checked. A line of another shape raises (msgspec's error, or `ValueError` for an
    overlong one): the file cannot pass then."""
    for raw in lines:
        if raw is None:
            raise ValueError("an overlong line in a file that passed its checks")
        if raw.strip():
            line = _decode_typical_line(raw)  # a line that passed has the typical line's types
            yield line.custom_id, line.body


def split_lines(chunks: Iterable[bytes]) -> Iterator[bytes | None]:
    """A file's lines (without their `\n`), from its bytes in chunks of any size; `None` stands for a
    line longer than `MAX_LINE_BYTES`, which is skipped rather than held."""
    rest = b""
    skipping = False
    for chunk in chunks:
        lines = (rest + chunk if rest else chunk).split(b"\n")  # in C, not a find per line
        rest = lines.pop()
        if lines and skipping:
            skipping = False
            del lines[0]  # the end of the overlong line
        yield from lines
        if len(rest) > MAX_LINE_BYTES:
            if not skipping:
                yield None
            skipping, rest = True, b""
    if rest and not skipping:
        yield rest


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
