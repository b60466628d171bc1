"""Checking an input file as a stream of chunks: lines split across chunks, blank and overlong lines,
and the whole-file errors, without a server."""

from __future__ import annotations

import json
from itertools import chain
from typing import Any

import msgspec
import pytest

from overnight.openai_api import input_file
from overnight.openai_api.input_file import MAX_LINE_BYTES, InputChecker, checked_requests, line_groups
from tests.openai.helpers import MODEL, jsonl, line


def chunked(content: bytes, size: int) -> list[bytes]:
    return [content[i : i + size] for i in range(0, len(content), size)]


@pytest.mark.parametrize("size", [1, 2, 7, 64, 10_000])
def test_lines_are_the_same_whatever_the_chunks(size: int) -> None:
    content = b'{"a": 1}\n\n{"b": "x\\ny"}\r\nlast without newline'
    assert list(chain.from_iterable(line_groups(chunked(content, size)))) == content.split(b"\n")


def test_an_overlong_line_is_one_none_and_is_not_held() -> None:
    long = b"x" * (MAX_LINE_BYTES + 10)
    pieces = [b"first\n", *chunked(long, 1 << 20), b"\nafter\n"]
    assert list(chain.from_iterable(line_groups(pieces))) == [b"first", None, b"after"]


def checked(content: bytes, *, size: int = 5, max_lines: int = 10) -> tuple[InputChecker, list[tuple[str, bytes]]]:
    """The checker after a pass over `content` in chunks of `size`, and the requests the pass gave."""
    checker = InputChecker(endpoint="/v1/chat/completions", max_lines=max_lines, model_is_served=lambda m: m != "nope")
    given = chain.from_iterable(checked_requests(checker, chunked(content, size)))
    return checker, [(custom_id, bytes(body)) for custom_id, body in given]


def check(content: bytes, max_lines: int = 10) -> InputChecker:
    return checked(content, max_lines=max_lines)[0]


@pytest.mark.parametrize("size", [3, 100, 1 << 20])
def test_a_valid_file_gives_its_requests_and_model(size: int) -> None:
    content = jsonl([line("a", "1"), line("b", "2")]).replace(b"\n", b"\r\n", 1) + b"\n\n"
    checker, requests = checked(content, size=size)
    assert checker.errors == [] and checker.total == 2 and checker.custom_ids == {"a", "b"}
    assert checker.model == MODEL
    assert [custom_id for custom_id, _ in requests] == ["a", "b"]
    assert json.loads(requests[1][1])["messages"][0]["content"] == "2"


def test_an_invalid_file_gives_no_requests_after_its_first_error_and_every_error_is_reported() -> None:
    good = [line(f"r{i}", "x") for i in range(3)]
    content = jsonl([*good, {**line("bad", "x"), "method": "GET"}, *good[:1], line("r9", "x")])
    checker, requests = checked(content, size=1 << 20)
    assert [(e["code"], e["line"]) for e in checker.errors] == [("invalid_request", 4), ("duplicate_custom_id", 5)]
    assert requests == []  # the whole chunk: its first bad line comes before anything of it is given
    checker, requests = checked(content, size=len(jsonl(good)))  # the good lines make a chunk of their own
    assert [custom_id for custom_id, _ in requests] == ["r0", "r1", "r2"] and len(checker.errors) == 2


def test_interior_blank_lines_are_errors_and_trailing_ones_are_not() -> None:
    checker = check(jsonl([line("a", "1")]) + b"\n  \n" + jsonl([line("b", "2")]) + b"\n\n")
    assert [(e["code"], e["line"]) for e in checker.errors] == [("invalid_json_line", 2), ("invalid_json_line", 3)]


@pytest.mark.parametrize(
    ("content", "code"),
    [(b"", "empty_file"), (b"\n \n", "empty_file"), (jsonl([line(f"r{i}", "x") for i in range(4)]), "too_many_tasks")],
)
def test_whole_file_errors_have_no_line(content: bytes, code: str) -> None:
    checker = check(content, max_lines=3)
    assert [(e["code"], e["line"]) for e in checker.errors] == [(code, None)]


def test_an_unserved_model_is_named() -> None:
    checker = check(jsonl([{**line("a", "x"), "body": {"model": "nope", "messages": [{"role": "user"}]}}]))
    assert [(e["code"], e["param"]) for e in checker.errors] == [("model_not_found", "body.model")]


# Lines the typical-shape fast path must judge exactly as the general checks do: each is checked after
# a valid first line (which sets the file's model) and one with custom_id "dup".
_TRICKY_LINES: list[dict[str, Any] | str] = [
    line("ok", "x"),
    line("dup", "x"),
    line("", "x"),
    line("x" * 64, "x"),
    line("x" * 65, "x"),
    line("tab\there", "x"),
    line("ünïcode", "x"),
    {**line("m", "x"), "method": "GET"},
    {**line("m", "x"), "method": None},
    {**line("u", "x"), "url": "/v1/embeddings"},
    {**line("u", "x"), "url": 5},
    {**line("n", "x"), "custom_id": 7},
    {**line("n", "x"), "body": None},
    {**line("n", "x"), "body": []},
    {**line("n", "x"), "body": "text"},
    {key: value for key, value in line("n", "x").items() if key != "body"},
    {key: value for key, value in line("n", "x").items() if key != "url"},
    line("s", "x", stream=True),
    line("s", "x", stream=False),
    line("s", "x", stream=None),
    line("s", "x", stream="yes"),
    line("s", "x", stream=1),
    {**line("b", "x"), "body": {"model": "other-model", "messages": [{"role": "user", "content": "x"}]}},
    {**line("b", "x"), "body": {"model": "", "messages": [{"role": "user", "content": "x"}]}},
    {**line("b", "x"), "body": {"model": 3, "messages": [{"role": "user", "content": "x"}]}},
    {**line("b", "x"), "body": {"model": MODEL, "messages": []}},
    {**line("b", "x"), "body": {"model": MODEL, "messages": {"role": "user"}}},
    {**line("b", "x"), "body": {"model": MODEL}},
    {**line("b", "x"), "body": {"model": MODEL, "messages": ["anything"], "extra": {"deep": [1, 2]}}},
    {**line("k", "x"), "unknown_key": 1},
    "not json",
    '{"custom_id": "trailing", "method": "POST"',
    "[1, 2]",
]


# Chunks of 7 bytes give the checker one line at a time; one chunk gives it all four lines at once, which
# it first tries to pass together.
@pytest.mark.parametrize("size", [7, 1 << 20])
@pytest.mark.parametrize("tricky", _TRICKY_LINES)
def test_the_fast_path_judges_every_line_as_the_general_checks_do(
    tricky: dict[str, Any] | str, size: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    content = jsonl([line("first", "x"), line("dup", "x"), tricky, line("after", "x")])

    def outcome() -> tuple[set[str], list[dict[str, Any]], str | None, int, list[tuple[str, bytes]]]:
        checker, requests = checked(content, size=size)
        return checker.custom_ids, checker.errors, checker.model, checker.total, requests

    fast = outcome()

    def not_typical(_: object) -> None:
        raise msgspec.ValidationError("forced onto the general path")

    monkeypatch.setattr(input_file, "_decode_typical_line", not_typical)
    assert outcome() == fast


def test_the_fast_path_takes_the_typical_line(monkeypatch: pytest.MonkeyPatch) -> None:
    general: list[int] = []
    check_generally = InputChecker._check

    def counted(self: InputChecker, raw: bytes | None, number: int) -> Any:
        general.append(number)
        return check_generally(self, raw, number)

    monkeypatch.setattr(InputChecker, "_check", counted)
    checker = check(jsonl([line("a", "1"), line("b", "2"), {**line("c", "3"), "method": "GET"}]))
    assert general == [3] and checker.errors[0]["line"] == 3


def test_a_chunk_of_typical_lines_is_checked_together_and_a_bad_one_line_by_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    one_by_one: list[bytes | None] = []
    line_check = InputChecker._line

    def counted(self: InputChecker, raw: bytes | None) -> bool:
        one_by_one.append(raw)
        return line_check(self, raw)

    monkeypatch.setattr(InputChecker, "_line", counted)
    first = jsonl([line("a", "1"), line("b", "2")])
    second = jsonl([line("c", "3"), line("a", "4")])  # "a" again: a duplicate of the first chunk's
    third = jsonl([line("d", "5"), line("e", "6")])  # fine: checked together even in an invalid file
    fourth = jsonl([line("f", "7"), line("d", "8")])  # a duplicate of the third chunk's
    checker = InputChecker(endpoint="/v1/chat/completions", max_lines=10, model_is_served=lambda m: True)
    for lines in line_groups([first, second, third, fourth]):
        checker.check(lines)
    assert len(one_by_one) == 4  # the second and the fourth chunks' lines only
    assert [(e["code"], e["line"]) for e in checker.errors] == [("duplicate_custom_id", 4), ("duplicate_custom_id", 8)]
    assert checker.custom_ids == {"a", "b", "c", "d", "e", "f"}


def test_the_line_limit_holds_for_lines_checked_together() -> None:
    content = jsonl([line(f"r{i}", "x") for i in range(4)])
    for limit, codes in ((4, []), (3, [("too_many_tasks", None)])):
        checker, _ = checked(content, size=1 << 20, max_lines=limit)
        assert [(e["code"], e["line"]) for e in checker.errors] == codes
