"""Decoding a create body while it arrives must answer exactly as decoding it whole: the same requests
in the same order, or the same error message — also when the requests handed out are released as they
come (then the stream words errors from the rest of the body alone). Pieces are made tiny here so that
every body is cut into many, and chunks of 1 and 7 bytes end inside every string, escape and number
there is; both sides are the real decoders."""

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
    # A second "requests" replaces the first (the last key wins): no element of the first may be kept.
    _body([_element(i) for i in range(20)])[:-1] + b',"requests":[' + _element(30) + b"]}",
    _body([_element(i) for i in range(20)])[:-1] + b',"requests":[' + b",".join(map(_element, range(30, 45))) + b"]}",
    _body([_element(i) for i in range(20)]) + b" " * 300,  # the end further back than the tail is looked for
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
    _body([_element(i) for i in range(25)]).replace(b'"r20"', b"20"),
    _body([_element(i) for i in range(25)]).replace(b"]}", b",]}"),
    _body([_element(i) for i in range(25)]).replace(b'"max_tokens":5', b'"max_tokens":5\\', 1),
    _body([_element(i) for i in range(25)])[:-1] + b',"requests":5}',
    _body([_element(i) for i in range(25)] + [_element(7)] + [b'{"custom_id":"z","params":[]}'] + [_element(26)] * 2),
    _body([_element(i) for i in range(40)]).replace(b'"r35"', b'"r3\xc3"'),
    _body(
        [_element(i) for i in range(10)] + [b'{"custom_id":"deep","params":{"a":' + b"[" * 3000 + b"]" * 3000 + b"}}"]
    ),
    _body([_element(i) for i in range(20)])[:-1] + b',"requests":[{"custom_id":1,"params":{}}]}',
    _body([_element(i) for i in range(20)])[:-1] + b',"requests":[' + _element(1) + b"," + _element(1) + b"]}",
    _body([_element(i) for i in range(20)])[:-1] + b',"requests":[' + _element(1) + b",]}",
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


def _streamed(body: bytes, chunk_size: int, *, release: bool = False) -> tuple[str, object]:
    """Feed `body` in chunks of `chunk_size`; with `release`, release what each feed hands out (as a
    caller that has stored it does): then `finish` gives only the rest."""
    stream = CreateBodyStream(max_requests=MAX)
    fed: list[tuple[str, bytes]] = []
    try:
        for start in range(0, len(body), chunk_size):
            fed += [(custom_id, bytes(params)) for custom_id, params in stream.feed(body[start : start + chunk_size])]
            if release and stream.streaming:
                stream.release()
        items = [(custom_id, bytes(params)) for custom_id, params in stream.finish()]
    except InvalidRequestError as exc:
        return "error", exc.message
    if stream.replaced:  # a later "requests" key: what was fed is not the batch's
        return "ok", items
    if release:
        assert stream.released == len(fed)
        return "ok", fed + items
    assert items[: len(fed)] == fed, "what feed returned must be a prefix of the final requests"
    return "ok", items


@pytest.fixture(autouse=True)
def tiny_pieces(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(create_stream, "PIECE_BYTES", 300)
    monkeypatch.setattr(create_stream, "_CUT_WINDOW_BYTES", 200)


@pytest.mark.parametrize("body", VALID + INVALID)
@pytest.mark.parametrize("chunk_size", [1, 7, 64, 1000, 1 << 20])
@pytest.mark.parametrize("release", [False, True], ids=["kept", "released"])
def test_streamed_decoding_answers_as_whole_decoding(body: bytes, chunk_size: int, release: bool) -> None:
    assert _streamed(body, chunk_size, release=release) == _whole(body)


@pytest.mark.parametrize("body", VALID + INVALID)
def test_released_requests_are_no_longer_held(body: bytes) -> None:
    stream = CreateBodyStream(max_requests=MAX)
    handed = 0
    for start in range(0, len(body), 64):
        handed += len(stream.feed(body[start : start + 64]))
        if stream.streaming:
            stream.release()
            assert stream.items == []
    assert stream.released == handed
    if handed:  # views into released pieces are held by the caller alone
        assert all(len(piece) < 1000 for piece, _, _ in stream._pieces)


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


def test_a_request_longer_than_a_piece_does_not_stop_early_decoding() -> None:
    # Pieces are 300 bytes here: one request of ~20 pieces (a big image, say) among small ones.
    big = b'{"custom_id":"big","params":{"image":"%s"}}' % (b"A" * 6000)
    body = _body([_element(i) for i in range(20)] + [big] + [_element(i) for i in range(20, MAX - 1)])
    stream = CreateBodyStream(max_requests=MAX)
    chunks = [body[start : start + 50] for start in range(0, len(body), 50)]
    fed = [custom_id for chunk in chunks[:-1] for custom_id, _ in stream.feed(chunk)]
    assert stream.streaming
    assert "big" in fed and len(fed) >= MAX // 2  # handed out while the body arrived, after the big one too
    stream.feed(chunks[-1])
    assert ("ok", [(custom_id, bytes(params)) for custom_id, params in stream.finish()]) == _whole(body)


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


@pytest.mark.parametrize("seed", range(4))
def test_randomly_broken_bodies_fail_as_whole_decoding_does(seed: int) -> None:
    # One byte changed, dropped or added anywhere: wherever the error falls (before, inside or after
    # what was handed out and released), it must read as the whole body's.
    rng = random.Random(seed)
    body = _body([_element(i, TRICKY_TEXT * rng.randint(0, 2)) for i in range(40)], b" , ")
    for _ in range(60):
        position = rng.randrange(len(body))
        byte = bytes([rng.choice(b'{}[],":\\ x1\xff')])
        broken = rng.choice(
            [
                body[:position] + byte + body[position + 1 :],
                body[:position] + body[position + 1 :],
                body[:position] + byte + body[position:],
            ]
        )
        expected = _whole(broken)
        for release in (False, True):
            assert _streamed(broken, rng.randint(1, 500), release=release) == expected, (position, byte)


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
