"""Checking an input file as a stream of chunks: lines split across chunks, blank and overlong lines,
and the whole-file errors, without a server."""

from __future__ import annotations

import json

import pytest

from overnight.openai_api.input_file import MAX_LINE_BYTES, InputChecker, split_lines
from tests.openai.helpers import jsonl, line


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
