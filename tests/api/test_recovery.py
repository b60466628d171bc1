"""Crash recovery and clean shutdown: SIGKILL mid-batch, restart on the same data dir, nothing lost or doubled."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anthropic
import httpx
import pytest

from tests.api.helpers import expected_text, make_requests, parse_jsonl, wait_for, wait_for_end
from tests.server import ServerProcess


def _check_all_succeeded_once(client: anthropic.Anthropic, batch_id: str, requests: list[dict[str, Any]]) -> None:
    batch = client.messages.batches.retrieve(batch_id)
    assert batch.results_url is not None
    with httpx.Client(timeout=30) as http:
        response = http.get(batch.results_url, headers={"x-api-key": "test-key"})
    assert response.status_code == 200, response.text
    lines = parse_jsonl(response.content)
    custom_ids = [line["custom_id"] for line in lines]
    assert len(custom_ids) == len(set(custom_ids)), "a custom_id appears more than once"
    assert sorted(custom_ids) == sorted(r["custom_id"] for r in requests)
    by_id = {line["custom_id"]: line for line in lines}
    for req in requests:
        result = by_id[req["custom_id"]]["result"]
        assert result["type"] == "succeeded", result
        assert result["message"]["content"][0]["text"] == expected_text(req)


def test_sigkill_mid_batch_then_restart_recovers(
    tmp_path: Path, make_client: Callable[..., anthropic.Anthropic]
) -> None:
    proc = ServerProcess(
        tmp_path / "data",
        ["--fake-latency-ms", "50", "--concurrency", "4", "--lease-seconds", "2", "--sweep-interval", "0.2"],
    )
    try:
        proc.start()
        client = make_client(proc)
        requests = make_requests(200, prefix="crash")
        batch = client.messages.batches.create(requests=requests)  # type: ignore[arg-type]

        def partway() -> Any:
            polled = client.messages.batches.retrieve(batch.id)
            return polled if 20 <= polled.request_counts.succeeded < 150 else None

        before = wait_for(partway, timeout=30, interval=0.02, what="some but not all requests to succeed")
        proc.kill()
        assert proc.process is not None and proc.process.returncode == -9

        proc.restart()
        client = make_client(proc)
        after = client.messages.batches.retrieve(batch.id)
        assert after.created_at == before.created_at
        assert after.request_counts.succeeded >= before.request_counts.succeeded
        ended = wait_for_end(client, batch.id, total=200, timeout=60, interval=0.1)
        assert ended.request_counts.succeeded == 200
        assert ended.request_counts.errored == ended.request_counts.canceled == ended.request_counts.expired == 0
        _check_all_succeeded_once(client, batch.id, requests)
        assert batch.id in [b.id for b in client.messages.batches.list()]
    finally:
        proc.terminate_quietly()


def test_sigterm_exits_cleanly(
    server_factory: Callable[..., ServerProcess], make_client: Callable[..., anthropic.Anthropic]
) -> None:
    proc = server_factory()
    client = make_client(proc)
    batch = client.messages.batches.create(requests=make_requests(3, prefix="term"))  # type: ignore[arg-type]
    wait_for_end(client, batch.id, total=3)
    started = time.monotonic()
    assert proc.stop() == 0
    assert time.monotonic() - started < 10
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{proc.base_url}/healthz", timeout=2)


def test_sigterm_mid_batch_then_restart_finishes_every_request(
    tmp_path: Path, make_client: Callable[..., anthropic.Anthropic]
) -> None:
    proc = ServerProcess(
        tmp_path / "data",
        ["--fake-latency-ms", "200", "--concurrency", "2", "--lease-seconds", "2", "--sweep-interval", "0.2"],
    )
    try:
        proc.start()
        client = make_client(proc)
        requests = make_requests(20, prefix="term")
        batch = client.messages.batches.create(requests=requests)  # type: ignore[arg-type]

        def started() -> Any:
            polled = client.messages.batches.retrieve(batch.id)
            return polled if polled.request_counts.succeeded >= 2 else None

        wait_for(started, timeout=20, interval=0.02, what="two requests to succeed")
        code_mid_batch = proc.stop(expect_code=None)

        proc.restart()
        client = make_client(proc)
        ended = wait_for_end(client, batch.id, total=20, timeout=60, interval=0.1)
        assert ended.request_counts.succeeded == 20
        _check_all_succeeded_once(client, batch.id, requests)
        assert code_mid_batch == 0, "exit code after SIGTERM mid-batch"
    finally:
        proc.terminate_quietly()


def test_ended_batches_survive_restart(tmp_path: Path, make_client: Callable[..., anthropic.Anthropic]) -> None:
    proc = ServerProcess(tmp_path / "data")
    try:
        proc.start()
        client = make_client(proc)
        requests = make_requests(5, prefix="durable")
        batch = client.messages.batches.create(requests=requests)  # type: ignore[arg-type]
        ended = wait_for_end(client, batch.id, total=5)
        proc.stop(expect_code=None)  # the exit code is test_sigterm_exits_cleanly's business
        proc.restart()
        client = make_client(proc)
        again = client.messages.batches.retrieve(batch.id)
        assert again.processing_status == "ended"
        assert again.created_at == ended.created_at
        assert again.ended_at == ended.ended_at
        assert again.request_counts == ended.request_counts
        assert again.results_url == f"{proc.base_url}/v1/messages/batches/{batch.id}/results"
        _check_all_succeeded_once(client, batch.id, requests)
    finally:
        proc.terminate_quietly()


def test_sigkill_while_canceling_then_restart_ends_the_batch(
    tmp_path: Path, make_client: Callable[..., anthropic.Anthropic]
) -> None:
    # Slow enough that requests are still running when the batch is canceled and the server dies.
    # Short leases: on PostgreSQL a restarted node cannot tell its own dead leases from another node's
    # live ones, so they are handed back once they lapse (on SQLite, at once when it starts).
    proc = ServerProcess(tmp_path / "data", ["--fake-latency-ms", "3000", "--concurrency", "4", "--lease-seconds", "2"])
    try:
        proc.start()
        client = make_client(proc)
        batch = client.messages.batches.create(requests=make_requests(20, prefix="cancel"))  # type: ignore[arg-type]
        time.sleep(0.5)  # four requests are with the backend
        canceling = client.messages.batches.cancel(batch.id)
        assert canceling.processing_status == "canceling"
        # Four with the backend, and more leased into the scheduler's buffer, are still running.
        assert canceling.request_counts.processing >= 4
        proc.kill()

        proc.restart()
        client = make_client(proc)
        # Those running can never run again (a canceling batch leases nothing): they are canceled when
        # handed back and the batch ends, long before it would expire.
        ended = wait_for_end(client, batch.id, total=20, timeout=10, interval=0.1)
        counts = ended.request_counts
        assert (counts.canceled, counts.succeeded, counts.expired, counts.processing) == (20, 0, 0, 0)
        types = [line.result.type for line in client.messages.batches.results(batch.id)]
        assert sorted(types) == ["canceled"] * 20
    finally:
        proc.terminate_quietly()
