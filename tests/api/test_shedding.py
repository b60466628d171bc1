"""Shedding load: past `--max-in-flight-requests` the API answers 529 `overloaded_error` with `retry-after`
at once, recovers by itself, and every create that got a 2xx is stored and completes."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import Iterator

import anthropic
import httpx
import pytest

from tests.api.helpers import assert_error, make_requests, wait_for_end
from tests.conftest import start_server
from tests.server import ServerProcess

BATCHES = "/v1/messages/batches"
IN_FLIGHT = 2


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = start_server(tmp_path_factory.mktemp("shedding"), ["--max-in-flight-requests", str(IN_FLIGHT)])
    yield proc
    proc.terminate_quietly()


def _start_slow_create(proc: ServerProcess, body: bytes) -> socket.socket:
    """A create whose head has arrived but whose body has not: it holds one in-flight slot."""
    assert proc.port is not None
    sock = socket.create_connection(("127.0.0.1", proc.port), timeout=10)
    sock.sendall(
        f"POST {BATCHES} HTTP/1.1\r\nhost: x\r\nconnection: close\r\ncontent-length: {len(body)}\r\n\r\n".encode()
        + body[:10]
    )
    return sock


def test_beyond_the_bound_is_529_with_retry_after_and_held_creates_complete(
    server: ServerProcess, raw: httpx.Client, client: anthropic.Anthropic
) -> None:
    body = json.dumps({"requests": make_requests(3, prefix="held")}).encode()
    held = [_start_slow_create(server, body) for _ in range(IN_FLIGHT)]
    try:
        # Once both heads are parsed, both handlers wait for their bodies, holding both slots.
        deadline = time.monotonic() + 10
        while (response := raw.get(BATCHES)).status_code == 200 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert_error(response, 529, "overloaded_error")
        assert response.headers["retry-after"] == "1"
        assert raw.get("/healthz").status_code == 200, "the probe is never shed"
        batch_ids = []
        for sock in held:
            sock.sendall(body[10:])
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
            assert data.startswith(b"HTTP/1.1 200"), data[:300]
            batch_ids.append(json.loads(data.partition(b"\r\n\r\n")[2])["id"])
    finally:
        for sock in held:
            sock.close()
    assert raw.get(BATCHES).status_code == 200, "recovered once the slots were free"
    for batch_id in batch_ids:
        assert wait_for_end(client, batch_id).request_counts.succeeded == 3


async def _burst(base_url: str, creates: int, requests_each: int) -> list[httpx.Response]:
    body = json.dumps({"requests": make_requests(requests_each, prefix="burst")}).encode()
    async with httpx.AsyncClient(base_url=base_url, timeout=60, limits=httpx.Limits(max_connections=creates)) as http:
        return await asyncio.gather(*(http.post(BATCHES, content=body) for _ in range(creates)))


def test_a_burst_beyond_capacity_gets_529s_not_timeouts_and_every_accepted_batch_completes(
    server: ServerProcess, client: anthropic.Anthropic
) -> None:
    creates, requests_each = 40, 500
    responses = asyncio.run(_burst(server.base_url, creates, requests_each))
    statuses = sorted(response.status_code for response in responses)
    assert set(statuses) <= {200, 529}, statuses
    accepted = [response.json()["id"] for response in responses if response.status_code == 200]
    shed = [response for response in responses if response.status_code == 529]
    assert accepted, statuses
    assert shed, f"{creates} concurrent creates never exceeded {IN_FLIGHT} in flight: {statuses}"
    for response in shed:
        assert_error(response, 529, "overloaded_error")
        assert int(response.headers["retry-after"]) >= 1
    for batch_id in accepted:
        batch = wait_for_end(client, batch_id, timeout=120)
        assert batch.request_counts.succeeded == requests_each, batch
    print(
        f"burst: {creates} creates of {requests_each} requests, {IN_FLIGHT} in flight: "
        f"{len(accepted)} accepted (all completed), {len(shed)} shed with 529"
    )
