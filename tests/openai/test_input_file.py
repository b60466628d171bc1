"""Checking an input file as a stream of chunks: lines split across chunks, blank and overlong lines,
and the whole-file errors, without a server."""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest

from overnight.openai_api import input_file
from overnight.openai_api.input_file import MAX_LINE_BYTES, InputChecker, split_lines
from tests.openai.helpers import MODEL, jsonl, line


def chunked(content: bytes, size: int) -> list[bytes]:
    return [content[i : i + size] for i in range(0, len(content), size)]


@pytest.mark.parametrize("size", [1, 2, 7, 64, 10_000])
def test_lines_are_the_same_whatever_the_chunks(size: int) -> None:
    content = b'{"a": 1}\n\n{"b": "x\\ny"}\r\nlast without newline'
    assert list(split_lines(chunked(content, size))) == content.split(b"\n")


def test_an_overlong_line_is_one_none_and_is_not_held() -> None:
    long = b"x" * (MAX_LINE_BYTES + 10)
    pieces = [b"first\n", *chunked(long, 1 << 20), b"\nafter\n"]
    assert list(split_lines(pieces)) == [b"first", None, b"after"]


def check(content: bytes, max_lines: int = 10) -> InputChecker:
    checker = InputChecker(endpoint="/v1/chat/completions", max_lines=max_lines, model_is_served=lambda m: m != "nope")
    for _ in checker.items(split_lines(chunked(content, 5))):
        pass
    return checker


def test_a_valid_file_gives_its_requests_and_model() -> None:
    checker = InputChecker(endpoint="/v1/chat/completions", max_lines=10, model_is_served=lambda m: True)
    items = list(checker.items(split_lines(chunked(jsonl([line("a", "1"), line("b", "2")]) + b"\n\n", 3))))
    assert [custom_id for custom_id, _ in items] == ["a", "b"] and checker.errors == []
    assert json.loads(bytes(items[1][1]))["messages"][0]["content"] == "2"
    assert checker.total == 2 and checker.model is not None


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


@pytest.mark.parametrize("tricky", _TRICKY_LINES)
def test_the_fast_path_judges_every_line_as_the_general_checks_do(
    tricky: dict[str, Any] | str, monkeypatch: pytest.MonkeyPatch
) -> None:
    content = jsonl([line("first", "x"), line("dup", "x"), tricky, line("after", "x")])

    def outcome() -> tuple[list[tuple[str, bytes]], list[dict[str, Any]], str | None, int]:
        checker = InputChecker(endpoint="/v1/chat/completions", max_lines=10, model_is_served=lambda m: m != "nope")
        items = [(custom_id, bytes(body)) for custom_id, body in checker.items(split_lines(chunked(content, 7)))]
        return items, checker.errors, checker.model, checker.total

    fast = outcome()

    def not_typical(_: object) -> None:
        raise msgspec.ValidationError("forced onto the general path")

    monkeypatch.setattr(input_file, "_decode_typical_line", not_typical)
    assert outcome() == fast


def test_the_fast_path_takes_the_typical_line(monkeypatch: pytest.MonkeyPatch) -> None:
    general: list[int] = []
    check_generally = InputChecker._check_generally

    def counted(self: InputChecker, raw: bytes | None, number: int) -> Any:
        general.append(number)
        return check_generally(self, raw, number)

    monkeypatch.setattr(InputChecker, "_check_generally", counted)
    checker = check(jsonl([line("a", "1"), line("b", "2"), {**line("c", "3"), "method": "GET"}]))
    assert general == [3] and checker.errors[0]["line"] == 3
