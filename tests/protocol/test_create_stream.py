"""Decoding a create body while it arrives must answer exactly as decoding it whole: the same requests
in the same order, or the same error message. Pieces are made tiny here so that every body is cut into
many, and chunks of 1 and 7 bytes end inside every string, escape and number there is; both sides are
the real decoders."""

from __future__ import annotations

import random

import msgspec
import pytest

from overnight.exceptions import InvalidRequestError
from overnight.protocol import create_stream
from overnight.protocol.batches import decode_create_body
from overnight.protocol.create_stream import CreateBodyStream, most_requests

MAX = 50


def _element(index: int, text: str = "hi") -> bytes:
    params = {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": text}, {"role": "a"}]}
    return b'{"custom_id":"r%d","params":%s}' % (index, msgspec.json.encode(params))


def _body(elements: list[bytes], separator: bytes = b",") -> bytes:
    return b'{"requests":[' + separator.join(elements) + b"]}"


TRICKY_TEXT = 'a},{"custom_id":"x","params":{}},{"custom_id" ]} \\" { },{"params":{}} \\\\'
ESCAPES = '\\"},{"custom_id":"e"} \u00e9\U0001f600 \\\\"'


def _escaped_element(index: int) -> bytes:
    # Escapes written as escapes (json keeps \uXXXX as six bytes), and numbers of every length.
    return b'{"custom_id":"r%d","params":{"n":%d,"x":-1.25e-7,"t":"\\u00e9\\\\\\"},{\\"p\\":1}"}}' % (
        index,
        12345678901 * index,
    )


VALID = [
    _body([_element(i) for i in range(30)]),
    _body([_element(i) for i in range(MAX)]),
    _body([_element(i, TRICKY_TEXT) for i in range(30)]),
    _body([_element(i) for i in range(30)], b" ,\n "),
    b' \n{ "requests" : [ ' + b", ".join(_element(i) for i in range(20)) + b" ] } \n",
    _body([b'{"params":{"x":1},"custom_id":"r%d"}' % i for i in range(20)]),  # custom_id last
    _body([b'{ "params" :{"x":[{"y":1},{"z":2}]} , "custom_id":"r%d" }' % i for i in range(20)], b"\n,\t"),
    _body([_element(i, ESCAPES) for i in range(30)]),
    _body([_escaped_element(i) for i in range(30)]),
    # Invalid UTF-8 inside params is the engine's business (that request errors), not the envelope's.
    _body([_element(i, "\xff") for i in range(25)]).replace(b"\xc3\xbf", b"\xff", 1),
    b'{"requests":[' + b"\n" * 100 + b",".join(_element(i) for i in range(20)) + b"]" + b" " * 1000 + b"}",
    _body([_element(0)]),
    b'{"other":1,"requests":[' + b",".join(_element(i) for i in range(20)) + b"]}",
    _body([_element(i) for i in range(20)])[:-1] + b',"other":{"a":[1]}}',
]
INVALID = [
    _body([]),
    _body([_element(i) for i in range(MAX + 1)]),
    _body([_element(i) for i in range(20)] + [_element(3)]),
    _body([_element(i) for i in range(20)] + [_element(3)] + [_element(i) for i in range(20, 40)]),
    _body([_element(i) for i in range(20)] + [b'{"custom_id":"bad id!","params":{}}'] + [_element(99)] * 3),
    _body(
        [_element(i) for i in range(20)] + [b'{"custom_id":"p","params":[1]}'] + [_element(i) for i in range(40, 45)]
    ),
    _body([_element(i) for i in range(20)] + [b'{"custom_id":"q"}']),
    _body([_element(i) for i in range(25)]) + b"trailing",
    _body([_element(i) for i in range(25)])[:-2],
    _body([_element(i) for i in range(25)]).replace(b"r24", b"r\xff"),
    _body([_element(i) for i in range(25)] + [_element(3)] + [b'{"custom_id":"z","params":{}}']),
    _body([_element(i) for i in range(25)] + [b'{"custom_id":"z","params":"{}"}']),
    _body([_element(i) for i in range(25)]).replace(b'"max_tokens":5', b'"max_tokens":5,', 1),
    _body([_element(i) for i in range(25)]) + b"]",
    b"{" + _body([_element(i) for i in range(25)]),
    _body([_element(i) for i in range(25)]).replace(b'"r10"', b"r10"),
    _body(
        [_element(i) for i in range(10)] + [b'{"custom_id":"deep","params":{"a":' + b"[" * 3000 + b"]" * 3000 + b"}}"]
    ),
    b"[]",
    b"",
    b'{"requests": 5}',
    b'{"requests":[' + _element(1),
]


def _whole(body: bytes) -> tuple[str, object]:
    try:
        return "ok", [(custom_id, bytes(params)) for custom_id, params in decode_create_body(body, max_requests=MAX)]
    except InvalidRequestError as exc:
        return "error", exc.message


def _streamed(body: bytes, chunk_size: int) -> tuple[str, object]:
    stream = CreateBodyStream(max_requests=MAX)
    fed: list[tuple[str, bytes]] = []
    try:
        for start in range(0, len(body), chunk_size):
            fed += [(custom_id, bytes(params)) for custom_id, params in stream.feed(body[start : start + chunk_size])]
        items = [(custom_id, bytes(params)) for custom_id, params in stream.finish()]
    except InvalidRequestError as exc:
        return "error", exc.message
    assert items[: len(fed)] == fed, "what feed returned must be a prefix of the final requests"
    return "ok", items


@pytest.fixture(autouse=True)
def tiny_pieces(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(create_stream, "PIECE_BYTES", 300)
    monkeypatch.setattr(create_stream, "_CUT_WINDOW_BYTES", 200)


@pytest.mark.parametrize("body", VALID + INVALID)
@pytest.mark.parametrize("chunk_size", [1, 7, 64, 1000, 1 << 20])
def test_streamed_decoding_answers_as_whole_decoding(body: bytes, chunk_size: int) -> None:
    assert _streamed(body, chunk_size) == _whole(body)


def test_valid_bodies_are_valid_and_invalid_ones_invalid() -> None:
    # Guards the lists above: each must exercise the side it is meant to.
    assert all(_whole(body)[0] == "ok" for body in VALID)
    assert all(_whole(body)[0] == "error" for body in INVALID)


def test_a_big_body_is_decoded_while_it_arrives() -> None:
    body = _body([_element(i) for i in range(MAX)])
    stream = CreateBodyStream(max_requests=MAX)
    cut = len(body) - 100
    early = sum(len(stream.feed(body[start : min(start + 100, cut)])) for start in range(0, cut, 100))
    assert early >= MAX // 2  # most requests were decoded before the body's end
    stream.feed(body[cut:])
    assert len(stream.finish()) == MAX


def test_a_body_with_params_first_is_decoded_while_it_arrives_too() -> None:
    body = _body([b'{"params":{"messages":[{"a":1},{"b":2}]},"custom_id":"r%d"}' % i for i in range(MAX)])
    stream = CreateBodyStream(max_requests=MAX)
    chunks = [body[start : start + 100] for start in range(0, len(body), 100)]
    early = sum(len(stream.feed(chunk)) for chunk in chunks[:-1])
    assert early >= MAX // 2
    stream.feed(chunks[-1])
    assert [custom_id for custom_id, _ in stream.finish()] == [f"r{i}" for i in range(MAX)]


def test_a_bad_request_stops_early_decoding_and_the_error_names_it() -> None:
    elements = [_element(i) for i in range(MAX)]
    elements[10] = b'{"custom_id":"bad id","params":{}}'
    body = _body(elements)
    stream = CreateBodyStream(max_requests=MAX)
    fed = sum(len(stream.feed(body[start : start + 50])) for start in range(0, len(body), 50))
    assert fed <= 10  # nothing after the bad request was handed out
    with pytest.raises(InvalidRequestError, match=r"requests\[10\]\.custom_id"):
        stream.finish()


def test_most_requests_bounds_what_a_body_can_hold() -> None:
    smallest = b'{"custom_id":"a","params":{}}'
    for n in (1, 2, 7, 100):
        body = _body([smallest] * n)
        assert most_requests(len(body), 10**6) >= n
    assert most_requests(10**9, 100_000) == 100_000
    assert most_requests(3, 100) == 1


def test_random_chunkings_of_a_body_with_tricky_strings() -> None:
    rng = random.Random(7)
    body = _body([_element(i, TRICKY_TEXT * rng.randint(0, 3)) for i in range(40)], b" , ")
    for _ in range(30):
        stream = CreateBodyStream(max_requests=MAX)
        position = 0
        while position < len(body):
            step = rng.randint(1, 400)
            stream.feed(body[position : position + step])
            position += step
        assert [(c, bytes(p)) for c, p in stream.finish()] == _whole(body)[1]
