"""The `validating` state: create answers at once, the input file is checked in the background by a
validator that claims the batch, and the batch becomes `in_progress` or `failed`, exactly once, also when
it is cancelled or its server is killed mid-validation. Validation is held for a while here
(`--openai-validation-hold`, a test-only flag) so that the state can be seen and acted on."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import openai
import psycopg
import pytest

from tests.openai.helpers import create, jsonl, line, make_client, read_lines, upload, wait_until
from tests.server import ServerProcess

HOLD_SECONDS = 1.5


@pytest.fixture(scope="module")
def held(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = ServerProcess(
        tmp_path_factory.mktemp("held"), ["--openai-validation-hold", str(HOLD_SECONDS), "--lease-seconds", "2"]
    ).start()
    yield proc
    proc.terminate_quietly()


@pytest.fixture
def client(held: ServerProcess) -> Iterator[openai.OpenAI]:
    with make_client(held) as sdk:
        yield sdk


def requests_stored(proc: ServerProcess, batch_id: str) -> int:
    """How many request rows the engine holds for this batch, read from the server's database itself."""
    query = "SELECT count(*) FROM requests JOIN batches ON requests.batch_seq = batches.seq WHERE batches.id = "
    if proc.database_args:
        with psycopg.connect(proc.database_args[1]) as conn:
            row = conn.execute(query + "%s", (batch_id,)).fetchone()
    else:
        with sqlite3.connect(proc.data_dir / "overnight.sqlite3") as conn:
            row = conn.execute(query + "?", (batch_id,)).fetchone()
    assert row is not None
    return int(row[0])


def test_create_answers_validating_then_the_batch_runs(client: openai.OpenAI) -> None:
    created = create(client, [line(f"r{i}", f"text {i}") for i in range(3)], metadata={"k": "v"})
    assert created.status == "validating"
    assert created.request_counts is not None
    assert (created.request_counts.total, created.request_counts.completed, created.request_counts.failed) == (0, 0, 0)
    assert created.expires_at == created.created_at + 86_400
    assert (created.output_file_id, created.error_file_id, created.in_progress_at, created.model) == (
        None,
        None,
        None,
        None,
    )
    assert client.batches.retrieve(created.id).status == "validating"  # still held
    assert created.id in [b.id for b in client.batches.list() if b.status == "validating"]

    running = wait_until(client, created.id, ("in_progress", "finalizing", "completed"))
    assert running.in_progress_at is not None and running.in_progress_at >= created.created_at
    assert running.expires_at == created.expires_at and running.model is not None
    done = wait_until(client, created.id)
    assert done.status == "completed" and done.request_counts is not None and done.request_counts.total == 3
    assert set(read_lines(client, done.output_file_id)) == {"r0", "r1", "r2"}


def test_an_invalid_file_fails_after_validating(held: ServerProcess, client: openai.OpenAI) -> None:
    created = create(client, [line("a", "ok"), "{broken", line("a", "dup")])
    assert created.status == "validating"
    failed = wait_until(client, created.id)
    assert failed.status == "failed" and failed.failed_at is not None and failed.in_progress_at is None
    assert failed.errors is not None and failed.errors.data is not None
    assert [(e.code, e.line) for e in failed.errors.data] == [("invalid_json_line", 2), ("duplicate_custom_id", 3)]
    assert failed.request_counts is not None and failed.request_counts.total == 0
    assert requests_stored(held, created.id) == 0


def test_cancel_while_validating_never_runs_it(held: ServerProcess, client: openai.OpenAI) -> None:
    created = create(client, [line(f"r{i}", "x") for i in range(4)])
    cancelled = client.batches.cancel(created.id)
    assert cancelled.status == "cancelled"
    assert cancelled.cancelling_at is not None and cancelled.cancelled_at is not None
    assert (cancelled.output_file_id, cancelled.error_file_id, cancelled.in_progress_at) == (None, None, None)
    assert client.batches.cancel(created.id).status == "cancelled"  # again: 200
    time.sleep(HOLD_SECONDS + 1)  # the validator's claim ends: it must not enqueue now
    after = client.batches.retrieve(created.id)
    assert after.status == "cancelled" and after.request_counts is not None and after.request_counts.total == 0
    assert requests_stored(held, created.id) == 0


def test_input_file_deleted_while_validating_fails_the_batch(client: openai.OpenAI) -> None:
    file_id = upload(client, [line("a", "x")])
    created = client.batches.create(input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h")
    client.files.delete(file_id)
    failed = wait_until(client, created.id)
    assert failed.status == "failed" and failed.errors is not None and failed.errors.data
    assert (failed.errors.data[0].param, failed.errors.data[0].line) == ("file_id", None)


def test_kill_9_mid_validation_enqueues_exactly_once(tmp_path: Path) -> None:
    proc = ServerProcess(tmp_path / "data", ["--openai-validation-hold", "3", "--lease-seconds", "1"]).start()
    try:
        with make_client(proc) as client:
            created = create(client, [line(f"r{i}", f"text {i}") for i in range(10)])
            time.sleep(0.5)  # claimed, and held
            assert client.batches.retrieve(created.id).status == "validating"
        proc.kill()
        proc.args = ["--lease-seconds", "1"]
        proc.start()
        with make_client(proc) as client:
            done = wait_until(client, created.id)
            assert done.status == "completed" and done.request_counts is not None
            assert (done.request_counts.total, done.request_counts.completed) == (10, 10)
            output = read_lines(client, done.output_file_id)  # asserts each custom_id appears once
            assert set(output) == {f"r{i}" for i in range(10)}
        assert requests_stored(proc, created.id) == 10
    finally:
        proc.terminate_quietly()


def test_a_full_workspace_queue_fails_the_batch_when_it_would_be_enqueued(tmp_path: Path) -> None:
    with ServerProcess(tmp_path / "data", ["--max-queued-requests", "5"]) as proc, make_client(proc) as client:
        failed = wait_until(client, create(client, [line(f"r{i}", "x") for i in range(6)]).id)
        assert failed.status == "failed" and failed.errors is not None and failed.errors.data
        assert (failed.errors.data[0].code, failed.errors.data[0].line) == ("request_limit_exceeded", None)
        assert wait_until(client, create(client, [line(f"r{i}", "x") for i in range(5)]).id).status == "completed"


def test_a_file_of_several_chunks_is_checked_and_enqueued_whole_or_not_at_all(
    held: ServerProcess, client: openai.OpenAI
) -> None:
    # ~700 KB: the file is stored and read back in 256 KiB chunks, so its lines are checked and enqueued
    # a chunk at a time, with lines cut across chunk boundaries.
    lines = [line(f"r{i}", "padding " * 20 + str(i)) for i in range(3000)]
    valid = jsonl(lines).replace(b"\n", b"\r\n") + b"\n\n"  # CRLF line ends and trailing blank lines
    file_id = client.files.create(file=("crlf.jsonl", valid), purpose="batch").id
    ok = client.batches.create(input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h")
    assert wait_until(client, ok.id, ("in_progress", "finalizing", "completed", "failed")).status != "failed"
    assert requests_stored(held, ok.id) == 3000

    # The same requests with the first custom_id again near the end: the chunks before it were already
    # inserted when it is found, and all of them are rolled back.
    broken = create(client, [*lines[:2900], line("r0", "again"), *lines[2900:]])
    failed = wait_until(client, broken.id)
    assert failed.status == "failed" and failed.errors is not None and failed.errors.data is not None
    assert [(e.code, e.line) for e in failed.errors.data] == [("duplicate_custom_id", 2901)]
    assert requests_stored(held, broken.id) == 0
