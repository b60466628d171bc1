"""Checking a batch's input file line by line, as OpenAI does before a batch runs (while `validating`).

Every bad line gets its own `BatchError` (1-based `line`), up to `MAX_REPORTED_ERRORS`; whole-file
errors have `line: None`. The error codes are those OpenAI's API and its documentation use.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from operator import attrgetter
from typing import Annotated, Any, cast

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


# The shape nearly every line has, checked in C (a decode of the line, then of its body): what these
# accept, `_check_line` accepts too, so lines they take need only the checks that compare them with the
# file's other lines (see `InputChecker._typical_requests`). Anything else is checked a line at a time,
# which names the error.
class _TypicalBody(msgspec.Struct, gc=False):
    model: Annotated[str, msgspec.Meta(min_length=1)]
    messages: Annotated[list[msgspec.Raw], msgspec.Meta(min_length=1)]
    stream: bool | None = None


class _TypicalCheckedLine(msgspec.Struct, gc=False):
    custom_id: str
    method: str
    url: str
    body: msgspec.Raw  # as sent, which is what is enqueued; `_TypicalBody` checks it


_decode_typical_line = msgspec.json.Decoder(_TypicalCheckedLine).decode
_decode_typical_body = msgspec.json.Decoder(_TypicalBody).decode
_CUSTOM_ID, _METHOD, _URL, _BODY = attrgetter("custom_id"), attrgetter("method"), attrgetter("url"), attrgetter("body")
_MODEL, _STREAM = attrgetter("model"), attrgetter("stream")


# A line of a file that passed its check, as it is enqueued: the body kept as the bytes sent.
class _TypicalLine(msgspec.Struct, gc=False):
    custom_id: str
    body: msgspec.Raw


_decode_request = msgspec.json.Decoder(_TypicalLine).decode
_CUSTOM_ID_AND_BODY = attrgetter("custom_id", "body")


def batch_error(code: str, message: str, *, line: int | None = None, param: str | None = None) -> dict[str, Any]:
    return {"code": code, "line": line, "message": message, "param": param}


class InputChecker:
    """Checks a file's lines as they come (`check`, then `finish`), keeping only the custom_ids seen, so
    that a file of any size is checked in the memory of one chunk. Afterwards, `errors` says why the
    file is invalid (empty: it is valid), `total` how many requests it holds, `model` which model they
    all use and `custom_ids` theirs."""

    def __init__(self, *, endpoint: str, max_lines: int, model_is_served: Callable[[str], bool]) -> None:
        self.endpoint = endpoint
        self.max_lines = max_lines
        self.model_is_served = model_is_served
        self.errors: list[dict[str, Any]] = []
        self.model: str | None = None
        self.total = 0
        self.custom_ids: set[str] = set()
        self._number = 0  # lines so far
        self._blank = 0  # blank lines not yet known to be followed by another line (trailing ones are fine)

    def check(self, lines: list[bytes | None]) -> list[tuple[str, msgspec.Raw]] | None:
        """Check the next lines of the file (a group of `line_groups`) and give their requests to enqueue,
        (custom_id, body as sent): none once the file is known to be invalid, and None once what follows
        need not be read either. A `None` line is one longer than `MAX_LINE_BYTES`."""
        typical = self._typical_requests(lines)
        if typical is not None:
            return [] if self.errors else typical
        if not all(map(self._line, lines)):  # stops at the first False
            return None
        if self.errors:
            return []
        # Each line passed, so none is None and each blank one is at the end so far; a line that passed
        # has the typical line's types (see `_check_line`), so reading it as `_TypicalLine` cannot fail.
        present = filter(bytes.strip, cast("list[bytes]", lines))
        return list(map(_CUSTOM_ID_AND_BODY, map(_decode_request, present)))

    def finish(self) -> None:
        """The file has no more lines: one without any is invalid too."""
        if self._number == self._blank and not self.errors:
            self.errors.append(batch_error("empty_file", "The input file is empty."))

    def _typical_requests(self, lines: list[bytes | None]) -> list[tuple[str, msgspec.Raw]] | None:
        """Count the lines in and give their requests if every one is a valid request of the typical
        shape, checked together in C loops (one decode a line and one of its body, then a set or a
        min/max over each field); otherwise change nothing and give None: each line is then checked by
        itself, which names the errors."""
        if self._blank or self._number + len(lines) > self.max_lines or None in lines:
            return None
        try:
            typical = list(map(_decode_typical_line, cast("list[bytes]", lines)))
            bodies = list(map(_BODY, typical))
            checked_bodies = list(map(_decode_typical_body, bodies))
        except (msgspec.DecodeError, RecursionError, UnicodeDecodeError):  # ValidationError too
            return None
        custom_ids = list(map(_CUSTOM_ID, typical))
        fresh = set(custom_ids)
        models = set(map(_MODEL, checked_bodies))
        model = next(iter(models)) if len(models) == 1 else None
        if not (
            model is not None
            and (model == self.model if self.model is not None else self.model_is_served(model))
            and set(map(_METHOD, typical)) == {"POST"}
            and set(map(_URL, typical)) == {self.endpoint}
            and True not in set(map(_STREAM, checked_bodies))
            and len(fresh) == len(custom_ids)
            and fresh.isdisjoint(self.custom_ids)
            and max(map(len, custom_ids)) <= _MAX_CUSTOM_ID_CHARS
            and all(custom_ids)
            and all(map(str.isprintable, custom_ids))
        ):
            return None
        self.model = model
        self.custom_ids |= fresh
        if not self.errors:  # as a line at a time counts: an invalid file's total means nothing
            self.total += len(lines)
        self._number += len(lines)
        return list(zip(custom_ids, bodies, strict=True))

    def _line(self, raw: bytes | None) -> bool:
        """Check one line; False once the file is known to be invalid (nothing more to check)."""
        self._number += 1
        number = self._number
        if raw is not None and not raw.strip():
            self._blank += 1
            return True
        if number > self.max_lines:
            self.errors = [
                batch_error(
                    "too_many_tasks",
                    f"The input file has more than {self.max_lines} requests; a batch holds at most {self.max_lines}.",
                )
            ]
            return False
        for earlier in range(number - self._blank, number):
            self._add(batch_error("invalid_json_line", "This line is not parseable as valid JSON.", line=earlier))
        self._blank = 0
        if self._check(raw, number) and not self.errors:
            self.total += 1
        if len(self.errors) >= MAX_REPORTED_ERRORS:
            del self.errors[MAX_REPORTED_ERRORS:]
            return False
        return True

    def _add(self, error: dict[str, Any]) -> None:
        self.errors.append(error)

    def _check(self, raw: bytes | None, number: int) -> bool:
        """Whether the line is a valid request (if not, its error is added)."""
        if raw is None:
            self._add(
                batch_error(
                    "invalid_request", f"This line is longer than {MAX_LINE_BYTES} bytes.", line=number, param=None
                )
            )
            return False
        try:
            line = _decode_line(raw)
        except (msgspec.DecodeError, msgspec.ValidationError, RecursionError, UnicodeDecodeError):
            self._add(batch_error("invalid_json_line", "This line is not parseable as valid JSON.", line=number))
            return False
        error, custom_id, body_model = _check_line(
            line, number, self.endpoint, self.custom_ids, self.model, self.model_is_served
        )
        if error is not None:
            self._add(error)
            return False
        assert custom_id is not None
        self.model = self.model or body_model
        self.custom_ids.add(custom_id)
        return True


def checked_requests(checker: InputChecker, chunks: Iterable[bytes]) -> Iterator[list[tuple[str, msgspec.Raw]]]:
    """A file's requests, (custom_id, body as sent), a list for each chunk's lines, each checked by
    `checker` before it is given. Once the file is known to be invalid nothing more is given, but the
    lines after are still checked (their errors are reported too, up to `MAX_REPORTED_ERRORS`); at the
    end, `checker` holds the verdict."""
    for lines in line_groups(chunks):
        requests = checker.check(lines)
        if requests is None:
            return
        if requests:
            yield requests
    checker.finish()


def line_groups(chunks: Iterable[bytes]) -> Iterator[list[bytes | None]]:
    """A file's lines (without their `\n`), from its bytes in chunks of any size, as a list for each chunk
    that ends a line; `None` stands for a line longer than `MAX_LINE_BYTES`, which is skipped rather
    than held."""
    rest = b""
    skipping = False
    for chunk in chunks:
        split = (rest + chunk if rest else chunk).split(b"\n")  # in C, not a find per line
        rest = split.pop()
        lines = cast("list[bytes | None]", split)  # the list is ours: a None may join it
        if lines and skipping:
            skipping = False
            del lines[0]  # the end of the overlong line
        if len(rest) > MAX_LINE_BYTES:
            if not skipping:
                lines.append(None)
            skipping, rest = True, b""
        if lines:
            yield lines
    if rest and not skipping:
        yield [rest]


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
