"""OpenAI batches on a slow fake backend: cancel mid-batch, kill -9 mid-batch, and fair turns beside an
Anthropic batch (the engine is shared, so both formats get the same guarantees)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import anthropic
import pytest

from tests.openai.helpers import MODEL, create, line, make_client, read_lines, wait_until
from tests.server import ServerProcess

pytestmark = pytest.mark.slow


@pytest.fixture
def slow(tmp_path: Path) -> Iterator[ServerProcess]:
    # Short leases: on PostgreSQL a restarted node takes a killed node's requests back only once their
    # leases lapse (SQLite reclaims them at start-up), as in tests/api/test_recovery.py.
    args = ["--fake-latency-ms", "200", "--concurrency", "2", "--lease-seconds", "2", "--sweep-interval", "0.2"]
    proc = ServerProcess(tmp_path / "data", args).start()
    yield proc
    proc.terminate_quietly()


def test_cancel_mid_batch_keeps_finished_results(slow: ServerProcess) -> None:
    with make_client(slow) as client:
        batch = create(client, [line(f"r{i}", f"text {i}") for i in range(20)])
        wait_until(client, batch.id, ("in_progress",))
        time.sleep(0.5)  # some requests finish first
        cancelling = client.batches.cancel(batch.id)
        assert cancelling.status in ("cancelling", "cancelled")
        assert cancelling.cancelling_at is not None
        assert client.batches.cancel(batch.id).status in ("cancelling", "cancelled")  # again: 200
        done = wait_until(client, batch.id)
        assert done.status == "cancelled" and done.cancelled_at is not None
        output, errors = read_lines(client, done.output_file_id), read_lines(client, done.error_file_id)
        assert output, "requests finished before the cancel keep their results"
        assert not set(output) & set(errors) and set(output) | set(errors) == {f"r{i}" for i in range(20)}
        cancelled = [item for item in errors.values() if item["response"] is None]
        assert cancelled and all(item["error"]["code"] == "batch_cancelled" for item in cancelled)
        assert done.request_counts is not None
        assert (done.request_counts.completed, done.request_counts.failed) == (len(output), len(errors))


def test_kill_9_mid_batch_loses_and_repeats_nothing(slow: ServerProcess) -> None:
    with make_client(slow) as client:
        batch = create(client, [line(f"r{i}", f"text {i}") for i in range(16)])
        deadline = time.monotonic() + 30
        while (counts := client.batches.retrieve(batch.id).request_counts) is None or counts.completed < 2:
            assert time.monotonic() < deadline
            time.sleep(0.05)
    slow.kill()
    slow.start()
    with make_client(slow) as client:
        done = wait_until(client, batch.id)
        assert done.status == "completed" and done.error_file_id is None
        output = read_lines(client, done.output_file_id)  # asserts each custom_id appears once
        assert {key: item["response"]["body"]["choices"][0]["message"]["content"] for key, item in output.items()} == {
            f"r{i}": f"text {i}" for i in range(16)
        }


def test_openai_batch_gets_turns_beside_a_big_anthropic_batch(slow: ServerProcess) -> None:
    with anthropic.Anthropic(base_url=slow.base_url, api_key="k", max_retries=0) as claude, make_client(slow) as client:
        big = claude.messages.batches.create(
            requests=[
                {
                    "custom_id": f"a{i}",
                    "params": {"model": MODEL, "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]},
                }
                for i in range(60)
            ]
        )
        small = create(client, [line(f"o{i}", "hi") for i in range(4)])
        done = wait_until(client, small.id)
        assert done.status == "completed"
        # 60 requests at 200 ms, two at a time, take 6 s; fair turns finish the 4 long before that.
        assert claude.messages.batches.retrieve(big.id).processing_status == "in_progress"
        claude.messages.batches.cancel(big.id)


def test_expired_batch_keeps_finished_results_and_reports_the_rest(tmp_path: Path) -> None:
    proc = ServerProcess(
        tmp_path / "data",
        ["--fake-latency-ms", "300", "--concurrency", "1", "--batch-ttl", "1.5", "--sweep-interval", "0.2"],
    ).start()
    try:
        with make_client(proc) as client:
            batch = create(client, [line(f"r{i}", f"text {i}") for i in range(20)])
            done = wait_until(client, batch.id)
            assert done.status == "expired" and done.expired_at is not None
            output, errors = read_lines(client, done.output_file_id), read_lines(client, done.error_file_id)
            assert output and errors and set(output) | set(errors) == {f"r{i}" for i in range(20)}
            assert all(
                item["error"]["code"] == "batch_expired" and item["response"] is None for item in errors.values()
            )
            assert done.request_counts is not None
            assert (done.request_counts.completed, done.request_counts.failed) == (len(output), len(errors))
    finally:
        proc.terminate_quietly()
