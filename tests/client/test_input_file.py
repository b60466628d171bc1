"""The local checks of a batch input file (`overnight.client.input_file`), on real bytes.

The size limit is a parameter so that it can be tested on a small file; the CLI uses the API's own
256 MB (asserted below), and the same code path runs either way.
"""

from __future__ import annotations

import io
import json

import pytest

from overnight.client.input_file import MAX_BYTES, MAX_REQUESTS, InputFileError, read_batch_input

LINE = '{"custom_id": "%s", "params": {"model": "m", "max_tokens": 1, "messages": []}}\n'


def test_the_limits_are_the_apis() -> None:
    assert MAX_BYTES == 256 * 1024 * 1024
    assert MAX_REQUESTS == 100_000


def test_good_lines_are_kept_in_order_and_blank_lines_skipped() -> None:
    parsed = read_batch_input(io.BytesIO((LINE % "a" + "\n  \n" + LINE % "b-2_C").encode()))
    assert [request["custom_id"] for request in parsed.requests] == ["a", "b-2_C"]
    assert parsed.requests[0] == json.loads(LINE % "a")
    assert parsed.size_bytes == len((LINE % "a" + "\n  \n" + LINE % "b-2_C").encode())


def test_a_file_past_the_size_limit_names_the_line_where_it_passes() -> None:
    content = "".join(LINE % f"r{i}" for i in range(10)).encode()
    line_bytes = len((LINE % "r0").encode())
    with pytest.raises(InputFileError) as caught:
        read_batch_input(io.BytesIO(content), max_bytes=line_bytes * 3 + 1)
    assert caught.value.line == 4
    assert "passes" in str(caught.value)
    read_batch_input(io.BytesIO(content), max_bytes=len(content))  # exactly at the limit is fine


@pytest.mark.parametrize(
    ("content", "line", "message"),
    [
        (b"\xff\xfe\n", 1, "not valid JSON"),
        (b'{"custom_id": "a", "params": {}, "extra": 1}\n', 1, "unexpected field 'extra'"),
        (b'{"custom_id": 7, "params": {}}\n', 1, "custom_id must be 1 to 64"),
        (('{"custom_id": "%s", "params": {}}\n' % ("x" * 65)).encode(), 1, "custom_id must be 1 to 64"),
        (b'{"custom_id": "a", "params": []}\n', 1, "params must be a JSON object"),
        (b'{"custom_id": "a", "params": {"max_tokens": 1, "messages": []}}\n', 1, "missing field 'params.model'"),
    ],
)
def test_bad_lines(content: bytes, line: int, message: str) -> None:
    with pytest.raises(InputFileError) as caught:
        read_batch_input(io.BytesIO(content))
    assert caught.value.line == line
    assert message in str(caught.value)


def test_the_request_count_limit() -> None:
    content = "".join(LINE % f"r{i}" for i in range(4)).encode()
    assert len(read_batch_input(io.BytesIO(content), max_requests=4).requests) == 4
    with pytest.raises(InputFileError, match="line 4: more than 3 requests"):
        read_batch_input(io.BytesIO(content), max_requests=3)
