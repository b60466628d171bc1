"""Big creates (~18 MB, several multi-thousand-row insert statements) through the real server over
plain sockets: every request stored in order, nothing stored when the body turns out bad at its very
end or the client goes away midway, and a client that stalls mid-body holds up nobody else's create.

These bodies take the streamed path (overnight/streamed_create.py: requests decoded and stored while the
body arrives, in one transaction); the same tests hold it to the same answers as a body read whole. On
SQLite that transaction holds the one write lock, so a body that pauses is rolled back within the
store's pause and inserted whole once complete.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator

import httpx
import pytest

from tests.api.helpers import MODEL
from tests.conftest import start_server
from tests.postgres import servers_use_postgres
from tests.server import ServerProcess

BATCHES = "/v1/messages/batches"
COUNT = 6000  # ~3 KB each: ~18 MB, two full pieces and a tail
RUNNING = 8000  # at 100 ms each, 256 at once: a batch that runs for about three seconds


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = start_server(tmp_path_factory.mktemp("streamed"), ["--body-read-timeout", "20"])
    yield proc
    proc.terminate_quietly()


def _body(count: int = COUNT, prefix: str = "s", last_custom_id: str | None = None, words: int = 250) -> bytes:
    text = "lorem ipsum " * words
    requests = [
        {
            "custom_id": f"{prefix}-{i}",
            "params": {"model": MODEL, "max_tokens": 3, "messages": [{"role": "user", "content": f"{i} {text}"}]},
        }
        for i in range(count)
    ]
    if last_custom_id is not None:
        requests[-1]["custom_id"] = last_custom_id
    return json.dumps({"requests": requests}, separators=(",", ":")).encode()


def _head(length: int) -> bytes:
    return (
        f"POST {BATCHES} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\nx-api-key: k\r\n"
        f"anthropic-version: 2023-06-01\r\ncontent-length: {length}\r\nconnection: close\r\n\r\n"
    ).encode()


def _response(sock: socket.socket) -> tuple[int, dict]:
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


def _post(
    server: ServerProcess, body: bytes, *, stall_after: int | None = None, stall_s: float = 0.0
) -> tuple[int, dict]:
    assert server.port is not None
    with socket.create_connection(("127.0.0.1", server.port), timeout=60) as sock:
        sock.sendall(_head(len(body)))
        if stall_after is None:
            sock.sendall(body)
        else:
            sock.sendall(body[:stall_after])
            time.sleep(stall_s)
            sock.sendall(body[stall_after:])
        return _response(sock)


def _streamed_batches(server: ServerProcess) -> int:
    """How many creates took the streamed path (logged as they start)."""
    return server.stderr_path.read_text(errors="replace").count("storing its requests while its body arrives")


def _batch_ids(raw: httpx.Client) -> set[str]:
    page = raw.get(BATCHES, params={"limit": 1000}).json()
    return {batch["id"] for batch in page["data"]}


def _wait_ended(raw: httpx.Client, batch_id: str) -> dict:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        batch = raw.get(f"{BATCHES}/{batch_id}").json()
        if batch["processing_status"] == "ended":
            return batch
        time.sleep(0.2)
    raise AssertionError(f"batch {batch_id} did not end")


def _assert_results_in_order(raw: httpx.Client, batch_id: str, prefix: str, count: int) -> None:
    """Each request's result, in the body's order, answering that request's own text."""
    lines = [json.loads(line) for line in raw.get(f"{BATCHES}/{batch_id}/results").text.splitlines()]
    assert [line["custom_id"] for line in lines] == [f"{prefix}-{i}" for i in range(count)]
    for i, line in enumerate(lines):
        assert line["result"]["message"]["content"][0]["text"].startswith(f"{i} lorem"), line


def test_big_create_stores_every_request_in_order(server: ServerProcess, raw: httpx.Client) -> None:
    streamed = _streamed_batches(server)
    status, batch = _post(server, _body())
    assert status == 200, batch
    assert _streamed_batches(server) == streamed + 1
    assert batch["request_counts"]["processing"] == COUNT
    ended = _wait_ended(raw, batch["id"])
    assert ended["request_counts"]["succeeded"] == COUNT
    lines = raw.get(f"{BATCHES}/{batch['id']}/results").text.splitlines()
    assert sorted(json.loads(line)["custom_id"] for line in lines) == sorted(f"s-{i}" for i in range(COUNT))
    first = json.loads(lines[0])
    assert first["result"]["message"]["content"][0]["text"].startswith(first["custom_id"].split("-")[1] + " lorem")


@pytest.fixture(scope="module")
def busy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A server whose requests each take 100 ms: a batch keeps the store writing results for seconds
    while its event loop stays free to receive a big body."""
    proc = start_server(tmp_path_factory.mktemp("busy"), ["--fake-latency-ms", "100", "--concurrency", "256"])
    yield proc
    proc.terminate_quietly()


def test_a_streamed_create_while_another_batch_runs_leaves_both_whole(
    busy: ServerProcess, make_raw: Callable[..., httpx.Client]
) -> None:
    # On SQLite the streamed insert holds the write lock while its body arrives: the running batch's
    # leases and results wait for it, and must all land once it commits, each exactly once.
    raw = make_raw(busy)
    running = raw.post(BATCHES, content=_body(count=RUNNING, prefix="run", words=2))
    assert running.status_code == 200, running.text
    time.sleep(0.5)  # under way: leasing and writing results
    streamed = _streamed_batches(busy)
    status, batch = _post(busy, _body(prefix="during"))
    assert status == 200, batch
    assert _streamed_batches(busy) == streamed + 1
    counts = raw.get(f"{BATCHES}/{running.json()['id']}").json()["request_counts"]
    assert counts["succeeded"] > 0 and counts["processing"] > 0, counts  # the create came mid-run
    for batch_id, prefix, count in ((running.json()["id"], "run", RUNNING), (batch["id"], "during", COUNT)):
        assert _wait_ended(raw, batch_id)["request_counts"]["succeeded"] == count
        lines = raw.get(f"{BATCHES}/{batch_id}/results").text.splitlines()
        assert sorted(json.loads(line)["custom_id"] for line in lines) == sorted(f"{prefix}-{i}" for i in range(count))


def test_bad_last_request_is_400_and_nothing_is_stored(server: ServerProcess, raw: httpx.Client) -> None:
    before = _batch_ids(raw)
    streamed = _streamed_batches(server)
    status, error = _post(server, _body(prefix="bad", last_custom_id="not valid!"))
    assert _streamed_batches(server) == streamed + 1  # rolled back, not skipped
    assert status == 400, error
    assert error["error"]["type"] == "invalid_request_error"
    assert f"requests[{COUNT - 1}].custom_id" in error["error"]["message"]
    assert _batch_ids(raw) == before


def test_duplicate_custom_id_at_the_end_is_400_and_nothing_is_stored(server: ServerProcess, raw: httpx.Client) -> None:
    before = _batch_ids(raw)
    streamed = _streamed_batches(server)
    status, error = _post(server, _body(prefix="dup", last_custom_id="dup-0"))
    assert _streamed_batches(server) == streamed + 1  # rolled back, not skipped
    assert status == 400, error
    assert error["error"]["message"] == (f"requests.{COUNT - 1}.custom_id: 'dup-0' is not unique (also at requests.0)")
    assert _batch_ids(raw) == before


def test_bad_request_midway_is_400_naming_it_and_nothing_is_stored(server: ServerProcess, raw: httpx.Client) -> None:
    before = _batch_ids(raw)
    body = _body(prefix="mid")
    middle = body.index(b'"custom_id":"mid-3000"')
    body = body[:middle] + b'"custom_id":"mid-3000","params":[1],"x"' + body[body.index(b',"params"', middle) + 9 :]
    status, error = _post(server, body)
    assert status == 400, error
    assert error["error"]["message"] == "requests.3000.params: must be an object"
    assert _batch_ids(raw) == before


def test_big_create_with_params_before_custom_id_and_whitespace(server: ServerProcess, raw: httpx.Client) -> None:
    text = "lorem ipsum " * 250
    elements = [
        b'{ "params" : %s ,\n "custom_id" : "ws-%d" }'
        % (
            json.dumps(
                {"model": MODEL, "max_tokens": 3, "messages": [{"role": "user", "content": f"{i} {text}"}]}
            ).encode(),
            i,
        )
        for i in range(COUNT)
    ]
    body = b'  {\n  "requests" : [\n    ' + b" ,\n    ".join(elements) + b"\n  ]\n}\n"
    status, batch = _post(server, body)
    assert status == 200, batch
    assert batch["request_counts"]["processing"] == COUNT
    ended = _wait_ended(raw, batch["id"])
    assert ended["request_counts"]["succeeded"] == COUNT
    lines = raw.get(f"{BATCHES}/{batch['id']}/results").text.splitlines()
    assert [json.loads(line)["custom_id"] for line in lines] == [f"ws-{i}" for i in range(COUNT)]


def test_client_that_goes_away_midway_stores_nothing(server: ServerProcess, raw: httpx.Client) -> None:
    before = _batch_ids(raw)
    streamed = _streamed_batches(server)
    body = _body(prefix="gone")
    assert server.port is not None
    with socket.create_connection(("127.0.0.1", server.port), timeout=60) as sock:
        sock.sendall(_head(len(body)))
        sock.sendall(body[: len(body) * 3 // 4])
        time.sleep(0.5)
    assert _streamed_batches(server) == streamed + 1  # the copy had begun
    # The server saw the disconnect and rolled back: a later create is stored, the partial one never is.
    status, batch = _post(server, _body(count=10, prefix="after"))
    assert status == 200, batch
    assert _batch_ids(raw) == before | {batch["id"]}


def test_stalling_client_does_not_hold_up_other_creates(server: ServerProcess, raw: httpx.Client) -> None:
    body = _body(prefix="slow")
    slow: dict[str, tuple[int, dict]] = {}
    stall_s = 4.0

    def upload() -> None:
        slow["result"] = _post(server, body, stall_after=len(body) - 1000, stall_s=stall_s)

    uploader = threading.Thread(target=upload)
    uploader.start()
    time.sleep(1.0)  # most of the body has arrived; the rest is held back
    started = time.monotonic()
    status, other = _post(server, _body(count=5, prefix="other"))
    waited = time.monotonic() - started
    uploader.join(60)
    assert status == 200, other
    # Nothing waited for the stalled body: PostgreSQL's transaction locks nothing another create needs,
    # and SQLite's (which holds the write lock) rolled back once the body paused.
    assert waited < stall_s - 1, waited
    if not servers_use_postgres():
        assert "paused for more than" in server.stderr_path.read_text(errors="replace")
    status, batch = slow["result"]
    assert status == 200, batch
    assert batch["request_counts"]["processing"] == COUNT
    assert _wait_ended(raw, batch["id"])["request_counts"]["succeeded"] == COUNT
    # Stored whole after the rollback: on SQLite from the rows read back and the rest of the body.
    _assert_results_in_order(raw, batch["id"], "slow", COUNT)


def test_body_that_stalls_longer_than_a_transaction_may_wait_is_stored_whole(
    server: ServerProcess, raw: httpx.Client
) -> None:
    # Past the streamed insert's hold (PostgreSQL: 10 s; SQLite's pause is shorter) its transaction is
    # rolled back; the batch is inserted once the body is complete, as any slow client's is.
    body = _body(prefix="held")
    status, batch = _post(server, body, stall_after=len(body) - 1000, stall_s=11.0)
    assert status == 200, batch
    assert batch["request_counts"]["processing"] == COUNT
    assert _wait_ended(raw, batch["id"])["request_counts"]["succeeded"] == COUNT
    assert "streamed insert rolled back" in server.stderr_path.read_text(errors="replace")
    _assert_results_in_order(raw, batch["id"], "held", COUNT)


def test_a_later_requests_key_replaces_the_streamed_ones(server: ServerProcess, raw: httpx.Client) -> None:
    # JSON's last key wins, as when the body is decoded whole: the requests already stored are dropped.
    streamed = _streamed_batches(server)
    body = (
        _body(prefix="first")[:-1]
        + b',"requests":'
        + json.dumps(json.loads(_body(count=3, prefix="later"))["requests"]).encode()
        + b"}"
    )
    status, batch = _post(server, body)
    assert status == 200, batch
    assert _streamed_batches(server) == streamed + 1
    assert batch["request_counts"]["processing"] == 3
    assert _wait_ended(raw, batch["id"])["request_counts"]["succeeded"] == 3
    _assert_results_in_order(raw, batch["id"], "later", 3)


@pytest.fixture(scope="module")
def capped(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    limits = ["--max-body-bytes", str(12_000_000), "--max-requests", "5000", "--body-read-timeout", "20"]
    proc = start_server(tmp_path_factory.mktemp("capped"), limits)
    yield proc
    proc.terminate_quietly()


def test_body_over_the_cap_midway_is_413_within_a_second_and_nothing_is_stored(
    capped: ServerProcess, make_raw: Callable[..., httpx.Client]
) -> None:
    raw = make_raw(capped)
    before = _batch_ids(raw)
    # ~18 MB, chunked (so no content-length to refuse it by): decoded from 8 MB on, refused past 12 MB.
    body = _body(prefix="big")
    assert capped.port is not None
    with socket.create_connection(("127.0.0.1", capped.port), timeout=60) as sock:
        sock.sendall(_head(len(body)).replace(b"content-length: %d" % len(body), b"transfer-encoding: chunked"))
        started = time.monotonic()
        for start in range(0, len(body), 1 << 20):
            piece = body[start : start + (1 << 20)]
            try:
                sock.sendall(b"%x\r\n%s\r\n" % (len(piece), piece))
            except OSError:
                break
        status, error = _response(sock)
    assert time.monotonic() - started < 5
    assert status == 413, error
    assert error["error"]["type"] == "request_too_large"
    assert _batch_ids(raw) == before


def test_more_requests_than_allowed_is_400_and_nothing_is_stored(
    capped: ServerProcess, make_raw: Callable[..., httpx.Client]
) -> None:
    raw = make_raw(capped)
    before = _batch_ids(raw)
    streamed = _streamed_batches(capped)
    status, error = _post(capped, _body(count=5001, prefix="many", words=150))  # ~9.6 MB
    assert status == 400, error
    assert error["error"]["message"] == "requests: a batch holds at most 5000 requests, got 5001"
    assert _streamed_batches(capped) == streamed + 1
    status, batch = _post(capped, _body(count=5000, prefix="max", words=150))
    assert status == 200, batch
    assert _batch_ids(raw) == before | {batch["id"]}
