"""Hostile input, by class: undecodable bodies, slow or endless bodies and heads, too many connections,
oversized header values. Every answer is our error envelope with the right status, never a 500 or a hang.

Raw sockets send what no HTTP client library would (a head that never ends, a body that never comes).
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable, Iterator

import anthropic
import httpx
import pytest

from tests.api.helpers import MODEL, assert_error, request, wait_for_end
from tests.conftest import start_server
from tests.server import ServerProcess

BATCHES = "/v1/messages/batches"
MAX_HEAD = 16 * 1024
TIMEOUT_S = 1.0
MAX_CONNECTIONS = 8


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = start_server(
        tmp_path_factory.mktemp("hostile"),
        [
            "--max-head-bytes",
            str(MAX_HEAD),
            "--head-timeout",
            str(TIMEOUT_S),
            "--body-read-timeout",
            str(TIMEOUT_S),
            "--max-connections",
            str(MAX_CONNECTIONS),
            "--max-beta-features",
            "4",
        ],
    )
    yield proc
    proc.terminate_quietly()


def _stored(http: httpx.Client) -> int:
    return len(http.get(BATCHES, params={"limit": 1000}).json()["data"])


def _nested(depth: int) -> str:
    """JSON text nested `depth` objects deep (json.dumps itself cannot build it)."""
    return '{"a": [' * depth + '"deep"' + "]}" * depth


def _connect(proc: ServerProcess) -> socket.socket:
    assert proc.port is not None
    sock = socket.create_connection(("127.0.0.1", proc.port), timeout=10)
    return sock


def _read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """Read until the server closes; the status, lower-cased headers and body of its one response."""
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {name.strip().lower(): value.strip() for name, _, value in (line.partition(":") for line in header_lines)}
    return int(status_line.split()[1]), headers, body


def _assert_envelope(status: int, headers: dict[str, str], body: bytes, want_status: int, error_type: str) -> None:
    assert status == want_status, (status, body[:300])
    assert headers["content-type"] == "application/json"
    decoded = json.loads(body)
    assert decoded["type"] == "error" and decoded["error"]["type"] == error_type, decoded
    assert decoded["request_id"] == headers["request-id"]
    assert headers["connection"] == "close"


# -- bodies that cannot be decoded -----------------------------------------------------------------


@pytest.mark.parametrize("depth", [1_000, 100_000])
def test_deeply_nested_create_is_400_and_nothing_stored(raw: httpx.Client, depth: int) -> None:
    before = _stored(raw)
    body = '{"requests": [{"custom_id": "deep", "params": ' + _nested(depth) + "}]}"
    message = assert_error(raw.post(BATCHES, content=body), 400, "invalid_request_error")
    assert "nested too deeply" in message
    assert _stored(raw) == before


@pytest.mark.parametrize("path", ["/v1/messages/count_tokens", "/v1/messages"])
def test_deeply_nested_message_body_is_400(raw: httpx.Client, path: str) -> None:
    prompt = json.dumps({"model": MODEL, "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]})
    body = prompt[:-1] + ', "metadata": ' + _nested(5000) + "}"
    assert_error(raw.post(path, content=body), 400, "invalid_request_error")


def test_deeply_nested_top_level_is_400(raw: httpx.Client) -> None:
    assert_error(raw.post(BATCHES, content=b"[" * 200_000), 400, "invalid_request_error")


def test_invalid_utf8_custom_id_is_400_and_nothing_stored(raw: httpx.Client) -> None:
    before = _stored(raw)
    params = json.dumps(request("x")["params"]).encode()
    body = b'{"requests": [{"custom_id": "bad\xff", "params": ' + params + b"}]}"
    message = assert_error(raw.post(BATCHES, content=body), 400, "invalid_request_error")
    assert "UTF-8" in message
    assert _stored(raw) == before


@pytest.mark.parametrize("path", ["/v1/messages/count_tokens", "/v1/messages"])
def test_invalid_utf8_in_message_body_is_400(raw: httpx.Client, path: str) -> None:
    body = b'{"model": "' + MODEL.encode() + b'", "max_tokens": 5, "messages": [{"role": "user", "content": "h\xc3("}]}'
    assert_error(raw.post(path, content=body), 400, "invalid_request_error")


def test_invalid_utf8_inside_params_errors_that_request_only(raw: httpx.Client, client: anthropic.Anthropic) -> None:
    """params are kept as sent and validated per request: the batch is stored, that request errors."""
    good = json.dumps(request("good")).encode()
    bad = (
        b'{"custom_id": "bad", "params": {"model": "'
        + MODEL.encode()
        + (b'", "max_tokens": 5, "messages": [{"role": "user", "content": "h\xff"}]}}')
    )
    response = raw.post(BATCHES, content=b'{"requests": [' + good + b", " + bad + b"]}")
    assert response.status_code == 200, response.text
    batch = wait_for_end(client, response.json()["id"])
    assert (batch.request_counts.succeeded, batch.request_counts.errored) == (1, 1)


def test_a_body_in_many_pieces_is_read_exactly_as_sent(server: ServerProcess, client: anthropic.Anthropic) -> None:
    """Pieces that arrive alone are handed to the app as they are, pieces that arrive while the app is
    busy are joined first (overnight/api/connections.py: `on_body`); either way every byte arrives once,
    in order: each request's text comes back whole in its result."""
    texts = [f"{i}-" + "".join(chr(0x41 + (i * 7 + j * 3) % 26) for j in range(3000)) for i in range(40)]
    requests = [request(f"p-{i}", text, max_tokens=5) for i, text in enumerate(texts)]
    body = json.dumps({"requests": requests}).encode()
    with _connect(server) as sock:
        sock.sendall(
            f"POST {BATCHES} HTTP/1.1\r\nhost: x\r\nx-api-key: k\r\nanthropic-version: 2023-06-01\r\n"
            f"content-type: application/json\r\ncontent-length: {len(body)}\r\nconnection: close\r\n\r\n".encode()
        )
        for n, start in enumerate(range(0, len(body), 997)):
            sock.sendall(body[start : start + 997])
            if n % 20 < 10:
                time.sleep(0.002)  # ten pieces one at a time, then ten in a burst
        status, _, response = _read_response(sock)
    assert status == 200, response[:300]
    batch = wait_for_end(client, json.loads(response)["id"])
    assert batch.request_counts.succeeded == len(texts)
    results = client.messages.batches.results(batch.id)
    replies = {line.custom_id: line.result.message.content[0].text for line in results}
    assert replies == {f"p-{i}": text for i, text in enumerate(texts)}


# -- bodies that come slowly or not at all ---------------------------------------------------------


def test_declared_body_that_never_comes_is_408_after_the_read_timeout(server: ServerProcess) -> None:
    with _connect(server) as sock:
        sock.sendall(
            f"POST {BATCHES} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
            f"content-length: 63999999\r\n\r\n".encode()
        )
        started = time.monotonic()
        status, headers, body = _read_response(sock)
    waited = time.monotonic() - started
    _assert_envelope(status, headers, body, 408, "timeout_error")
    assert TIMEOUT_S * 0.9 <= waited < TIMEOUT_S + 5, waited


def test_body_that_stalls_halfway_is_408(server: ServerProcess) -> None:
    with _connect(server) as sock:
        sock.sendall(b"POST /v1/messages/count_tokens HTTP/1.1\r\nhost: x\r\ncontent-length: 1000\r\n\r\n")
        sock.sendall(b'{"model": "' + b"x" * 400)
        status, headers, body = _read_response(sock)
    _assert_envelope(status, headers, body, 408, "timeout_error")


# -- request heads ---------------------------------------------------------------------------------


def test_head_over_the_cap_is_431(server: ServerProcess) -> None:
    with _connect(server) as sock:
        sock.sendall(b"GET /v1/models HTTP/1.1\r\nhost: x\r\nx-junk: " + b"a" * (4 * MAX_HEAD))
        status, headers, body = _read_response(sock)
    _assert_envelope(status, headers, body, 431, "request_too_large")


def test_head_that_never_ends_is_408_after_the_head_timeout(server: ServerProcess) -> None:
    with _connect(server) as sock:
        sock.sendall(b"GET /v1/models HTTP/1.1\r\nhost: x\r\nx-junk: aaaa")
        started = time.monotonic()
        status, headers, body = _read_response(sock)
    _assert_envelope(status, headers, body, 408, "timeout_error")
    assert time.monotonic() - started < TIMEOUT_S + 5


def test_connection_that_sends_nothing_is_closed(server: ServerProcess) -> None:
    with _connect(server) as sock:
        started = time.monotonic()
        assert sock.recv(100) == b""
    assert time.monotonic() - started < TIMEOUT_S + 5


def test_head_just_under_the_cap_and_a_body_in_one_packet_are_served(raw: httpx.Client, server: ServerProcess) -> None:
    """The cap counts the head only: a large body sent with it is not mistaken for one."""
    filler = "a" * (MAX_HEAD - 500)
    body = json.dumps({"model": MODEL, "messages": [{"role": "user", "content": "x" * 100_000}]}).encode()
    with _connect(server) as sock:
        sock.sendall(
            f"POST /v1/messages/count_tokens HTTP/1.1\r\nhost: x\r\nx-filler: {filler}\r\nconnection: close\r\n"
            f"content-length: {len(body)}\r\n\r\n".encode()
            + body
        )
        status, _, response = _read_response(sock)
    assert status == 200, response[:300]
    assert json.loads(response)["input_tokens"] > 0


def test_connections_beyond_the_cap_are_503_and_the_server_recovers(
    server_factory: Callable[..., ServerProcess],
) -> None:
    # Its own server, with a head timeout long enough that the held connections stay open under any load.
    proc = server_factory("--max-connections", str(MAX_CONNECTIONS), "--head-timeout", "60")
    held = [_connect(proc) for _ in range(MAX_CONNECTIONS)]
    try:
        # Accepted in order, so the extra one is the ninth the server sees.
        with _connect(proc) as extra:
            status, headers, body = _read_response(extra)
        _assert_envelope(status, headers, body, 503, "overloaded_error")
        assert headers["retry-after"] == "1"
    finally:
        for sock in held:
            sock.close()
    deadline = time.monotonic() + 10
    while (status := _status_of_one_request(proc)) == 503 and time.monotonic() < deadline:
        time.sleep(0.05)  # the server has not yet seen every held connection close
    assert status == 200


def _status_of_one_request(proc: ServerProcess) -> int:
    with _connect(proc) as sock:
        sock.sendall(b"GET /v1/models HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        status, _, _ = _read_response(sock)
    return status


# -- header values that feed per-request work ------------------------------------------------------


def test_too_many_beta_features_is_400(raw: httpx.Client) -> None:
    before = _stored(raw)
    betas = ",".join(f"feature-{i}" for i in range(5))
    body = json.dumps({"requests": [request("a")]})
    message = assert_error(
        raw.post(BATCHES, content=body, headers={"anthropic-beta": betas}), 400, "invalid_request_error"
    )
    assert "anthropic-beta" in message
    assert _stored(raw) == before


def test_overlong_beta_feature_is_400(raw: httpx.Client) -> None:
    body = json.dumps({"model": MODEL, "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]})
    response = raw.post("/v1/messages", content=body, headers={"anthropic-beta": "f" * 129})
    assert_error(response, 400, "invalid_request_error")


def test_beta_features_within_the_cap_are_accepted(raw: httpx.Client) -> None:
    body = json.dumps({"requests": [request("a")]})
    betas = "a-1, b-2,c-3 ,message-batches-2024-09-24,d-4"
    response = raw.post(BATCHES, content=body, headers={"anthropic-beta": betas})
    assert response.status_code == 200, response.text


def test_declared_body_over_the_cap_is_413_without_waiting_for_it(server: ServerProcess) -> None:
    with _connect(server) as sock:
        sock.sendall(f"POST {BATCHES} HTTP/1.1\r\nhost: x\r\ncontent-length: {300 * 1024 * 1024}\r\n\r\n".encode())
        started = time.monotonic()
        status, _, body = _read_response(sock)
    assert status == 413, body
    assert json.loads(body)["error"]["type"] == "request_too_large"
    assert time.monotonic() - started < TIMEOUT_S + 3


@pytest.mark.parametrize(
    "raw_request",
    [
        b"POST /v1/messages/batches HTTP/1.1\r\nhost: x\r\ncontent-length: 4\r\n"
        b"transfer-encoding: chunked\r\n\r\n0\r\n\r\n",
        b"POST /v1/messages/batches HTTP/1.1\r\nhost: x\r\ncontent-length: abc\r\n\r\n{}",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n",
    ],
    ids=["content-length-and-chunked", "content-length-not-a-number", "tls-hello"],
)
def test_unparseable_request_is_400_in_the_envelope(server: ServerProcess, raw_request: bytes) -> None:
    with _connect(server) as sock:
        sock.sendall(raw_request)
        status, headers, body = _read_response(sock)
    _assert_envelope(status, headers, body, 400, "invalid_request_error")
