"""OpenAI batches on several nodes sharing one PostgreSQL database: created on api nodes, validated and run
by workers. What must hold: each batch validated and enqueued exactly once (also when its validator is
killed mid-validation), its output file written exactly once with one line per request, whichever api
nodes race to finalize it."""

from __future__ import annotations

import concurrent.futures
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest

from tests.openai.helpers import create, line, make_client, read_lines, wait_until
from tests.server import ServerProcess

pytestmark = pytest.mark.slow

Node = Callable[..., ServerProcess]


@pytest.fixture
def node(postgres_url: str, tmp_path: Path) -> Iterator[Node]:
    """Start nodes on one shared database: `node("worker", "--fake-latency-ms", "20")`."""
    started: list[ServerProcess] = []

    def make(role: str, *args: str) -> ServerProcess:
        proc = ServerProcess(tmp_path / f"{role}-{len(started)}", ["--database", postgres_url, "--role", role, *args])
        started.append(proc)
        return proc.start()

    yield make
    for proc in started:
        proc.terminate_quietly()


def one_row(url: str, sql: str, *args: object) -> tuple[object, ...]:
    with psycopg.connect(url) as conn:
        row = conn.execute(sql, args).fetchone()
    assert row is not None
    return tuple(row)


def validations_logged(procs: list[ServerProcess], batch_id: str) -> int:
    return sum(proc.stderr_path.read_text().count(f"batch {batch_id} validated") for proc in procs)


def test_openai_batches_are_validated_once_and_written_once_across_nodes(node: Node, postgres_url: str) -> None:
    apis = [node("api"), node("api")]
    workers = [node("worker", "--fake-latency-ms", "20", "--concurrency", "8") for _ in range(2)]
    with make_client(apis[0]) as first, make_client(apis[1]) as second:
        created = [create(first, [line(f"b{n}-r{i}", f"batch {n} text {i}") for i in range(120)]) for n in range(4)]
        assert all(batch.status == "validating" for batch in created)

        def poll(batch_id: str) -> tuple[str, str]:
            # Both api nodes read (and so race to finalize) the same batch until it completes.
            a, b = wait_until(first, batch_id), wait_until(second, batch_id)
            assert a.status == b.status == "completed"
            assert (a.output_file_id, a.error_file_id) == (b.output_file_id, b.error_file_id)
            assert a.output_file_id is not None
            return batch_id, a.output_file_id

        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            outputs = dict(pool.map(poll, [batch.id for batch in created] * 2))

        for n, batch in enumerate(created):
            done = second.batches.retrieve(batch.id)
            assert done.request_counts is not None
            assert (done.request_counts.total, done.request_counts.completed) == (120, 120)
            output = read_lines(first, outputs[batch.id])  # asserts each custom_id appears once
            assert set(output) == {f"b{n}-r{i}" for i in range(120)}
            assert validations_logged(workers, batch.id) == 1
            assert one_row(
                postgres_url,
                "SELECT count(*) FROM requests JOIN batches ON requests.batch_seq = batches.seq WHERE batches.id = %s",
                batch.id,
            ) == (120,)
            assert one_row(
                postgres_url,
                "SELECT count(*) FROM files JOIN batches ON files.batch_seq = batches.seq WHERE batches.id = %s",
                batch.id,
            ) == (1,)


def test_a_worker_killed_mid_validation_is_replaced_and_nothing_is_enqueued_twice(
    node: Node, postgres_url: str
) -> None:
    api = node("api")
    doomed = node("worker", "--openai-validation-hold", "30", "--lease-seconds", "1")
    with make_client(api) as client:
        batch = create(client, [line(f"r{i}", f"text {i}") for i in range(40)])
        deadline = time.monotonic() + 20
        while one_row(postgres_url, "SELECT validation_owner FROM openai_batches WHERE id = %s", batch.id) == (None,):
            assert time.monotonic() < deadline, "no worker claimed the batch"
            time.sleep(0.05)
        doomed.kill()
        replacement = node("worker", "--fake-latency-ms", "5", "--lease-seconds", "1")
        done = wait_until(client, batch.id, deadline_s=60)
        assert done.status == "completed" and done.request_counts is not None
        assert (done.request_counts.total, done.request_counts.completed) == (40, 40)
        assert set(read_lines(client, done.output_file_id)) == {f"r{i}" for i in range(40)}
    assert validations_logged([doomed, replacement], batch.id) == 1
    assert one_row(
        postgres_url,
        "SELECT count(*) FROM requests JOIN batches ON requests.batch_seq = batches.seq WHERE batches.id = %s",
        batch.id,
    ) == (40,)
