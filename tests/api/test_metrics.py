"""`GET /metrics`: scraped from real servers before and after real batches, parsed with prometheus_client.

Every count is checked as a delta between two scrapes against what the batches' own counts and results
say (results by type, tokens in the results' usage, batches created and ended, HTTP calls made).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import anthropic
import httpx
import pytest

from tests.api.helpers import make_requests, request, sdk_results, wait_for_end
from tests.metrics import delta, finished, scrape, value
from tests.server import ServerProcess


def test_a_batch_moves_every_count_by_what_it_did(server: ServerProcess, client: anthropic.Anthropic) -> None:
    before = scrape(server)
    valid = make_requests(5, prefix="metrics")
    invalid = [
        {
            "custom_id": "no-max-tokens",
            "params": {"model": "claude-x", "messages": [{"role": "user", "content": "hi"}]},
        },
        request("bad-temperature", temperature=7),
    ]
    batch = client.messages.batches.create(requests=[*valid, *invalid])  # type: ignore[arg-type]
    retrieves = 1
    while client.messages.batches.retrieve(batch.id).processing_status != "ended":
        retrieves += 1
        time.sleep(0.05)
    results = sdk_results(client, batch.id)
    retrieves += 1  # the SDK retrieves the batch for its results_url
    httpx.get(f"{server.base_url}/no/such/path", timeout=10)
    after = scrape(server)

    messages = [line.result.message for line in results.values() if line.result.type == "succeeded"]
    assert len(messages) == 5
    assert delta(before, after, "overnight_requests_finished_total", **finished("succeeded", "fake")) == 5
    assert (
        delta(before, after, "overnight_requests_finished_total", **finished("errored", "", "invalid_request_error"))
        == 2
    )
    assert delta(before, after, "overnight_batches_created_total") == 1
    assert delta(before, after, "overnight_batches_ended_total") == 1
    input_tokens = sum(message.usage.input_tokens for message in messages)
    output_tokens = sum(message.usage.output_tokens for message in messages)
    assert input_tokens > 0 and output_tokens > 0
    assert delta(before, after, "overnight_tokens_total", backend="fake", type="input") == input_tokens
    assert delta(before, after, "overnight_tokens_total", backend="fake", type="output") == output_tokens
    # One backend call per valid request (the invalid ones never reach it), each in the histogram.
    assert delta(before, after, "overnight_backend_call_duration_seconds_count", backend="fake") == 5
    assert delta(before, after, "overnight_backend_call_duration_seconds_bucket", backend="fake", le="+Inf") == 5
    assert delta(before, after, "overnight_backend_call_duration_seconds_sum", backend="fake") >= 0

    # HTTP calls by route template and status; the raw path (with its batch id) is never a label.
    http = "overnight_http_requests_total"
    assert delta(before, after, http, method="POST", route="/v1/messages/batches", status="200") == 1
    assert delta(before, after, http, method="GET", route="/v1/messages/batches/{batch_id}", status="200") == retrieves
    assert delta(before, after, http, method="GET", route="/v1/messages/batches/{batch_id}/results", status="200") == 1
    assert delta(before, after, http, method="GET", route="", status="404") == 1
    assert delta(before, after, http, method="GET", route="/metrics", status="200") == 1  # the first scrape
    labels = {label for _, sample_labels in after for label in sample_labels}
    assert not any(batch.id in label_value or "no/such" in label_value for _, label_value in labels)

    # Nothing is left waiting or running, and the fake backend's cap is the server's --concurrency.
    assert value(after, "overnight_requests_pending") == 0
    assert value(after, "overnight_requests_leased") == 0
    assert value(after, "overnight_requests_running") == 0
    assert value(after, "overnight_backend_calls_in_flight", backend="fake") == 0
    assert value(after, "overnight_backend_concurrency_cap", backend="fake") == 32
    assert value(after, "overnight_backend_concurrency_limit", backend="fake") == 32
    assert value(after, "process_resident_memory_bytes") > 0


def test_pending_and_running_while_a_batch_runs(
    server_factory: Callable[..., ServerProcess], make_client: Callable[..., anthropic.Anthropic]
) -> None:
    proc = server_factory("--fake-latency-ms", "300", "--concurrency", "2")
    client = make_client(proc)
    batch = client.messages.batches.create(requests=make_requests(12, prefix="queued"))  # type: ignore[arg-type]
    # Two calls at a time, under a cap of 2; the rest are waiting (pending) or leased into the buffer, or
    # finished. The queue is read from the database just before the counts are rendered, so a group of
    # results written in between can put one scrape off by that group: the next one agrees.
    seen = []
    for _ in range(40):
        during = scrape(proc)
        running = value(during, "overnight_requests_running")
        in_flight = value(during, "overnight_backend_calls_in_flight", backend="fake")
        pending = value(during, "overnight_requests_pending")
        leased = value(during, "overnight_requests_leased")
        done = value(during, "overnight_requests_finished_total", **finished("succeeded", "fake"))
        seen.append((running, in_flight, pending, leased, done))
        if running == in_flight == 2 and pending > 0 and leased >= 2 and pending + leased + done == 12:
            break
        time.sleep(0.05)
    else:
        pytest.fail(f"no scrape showed 2 running and the rest pending, leased or done: {seen}")
    assert value(during, "overnight_backend_concurrency_cap", backend="fake") == 2
    client.messages.batches.cancel(batch.id)
    wait_for_end(client, batch.id, timeout=15)


def test_canceled_and_expired_requests_are_counted_once(
    server_factory: Callable[..., ServerProcess], make_client: Callable[..., anthropic.Anthropic]
) -> None:
    proc = server_factory(
        "--fake-latency-ms", "300", "--concurrency", "1", "--batch-ttl", "2", "--sweep-interval", "0.2"
    )
    client = make_client(proc)
    before = scrape(proc)
    to_cancel = client.messages.batches.create(requests=make_requests(6, prefix="cancel"))  # type: ignore[arg-type]
    to_expire = client.messages.batches.create(requests=make_requests(12, prefix="expire"))  # type: ignore[arg-type]
    client.messages.batches.cancel(to_cancel.id)
    ended = [wait_for_end(client, batch.id, timeout=20) for batch in (to_cancel, to_expire)]
    after = scrape(proc)

    counts = [batch.request_counts for batch in ended]
    assert counts[0].canceled > 0 and counts[1].expired > 0, counts
    for result in ("succeeded", "canceled", "expired"):
        total = sum(getattr(count, result) for count in counts)
        backend = "fake" if result == "succeeded" else ""
        assert delta(before, after, "overnight_requests_finished_total", **finished(result, backend)) == total
    assert delta(before, after, "overnight_batches_created_total") == 2
    assert delta(before, after, "overnight_batches_ended_total") == 2


def test_metrics_need_no_key_when_keys_are_configured(
    server_factory: Callable[..., ServerProcess],
) -> None:
    proc = server_factory("--api-key", "secret-key")
    assert httpx.get(f"{proc.base_url}/v1/messages/batches", timeout=10).status_code == 401
    samples = scrape(proc)  # no key sent
    assert (
        value(samples, "overnight_http_requests_total", method="GET", route="/v1/messages/batches", status="401") == 1
    )
    assert "secret-key" not in httpx.get(f"{proc.base_url}/metrics", timeout=10).text


@pytest.fixture
def api_and_worker(postgres_url: str, tmp_path: Path) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    nodes = [
        ServerProcess(tmp_path / role, ["--database", postgres_url, "--role", role, "--concurrency", "4"])
        for role in ("api", "worker")
    ]
    try:
        yield nodes[0].start(), nodes[1].start()
    finally:
        for node in nodes:
            node.terminate_quietly()


def test_a_worker_node_serves_metrics_of_the_requests_it_ran(
    api_and_worker: tuple[ServerProcess, ServerProcess], make_client: Callable[..., anthropic.Anthropic]
) -> None:
    api, worker = api_and_worker
    api_before, worker_before = scrape(api), scrape(worker)
    client = make_client(api)
    batch = client.messages.batches.create(requests=make_requests(8, prefix="worker"))  # type: ignore[arg-type]
    wait_for_end(client, batch.id, timeout=30)
    api_after, worker_after = scrape(api), scrape(worker)

    # The api node created the batch; the worker ran every request and ended it.
    assert delta(api_before, api_after, "overnight_batches_created_total") == 1
    assert delta(worker_before, worker_after, "overnight_requests_finished_total", **finished("succeeded", "fake")) == 8
    assert delta(worker_before, worker_after, "overnight_backend_call_duration_seconds_count", backend="fake") == 8
    assert delta(worker_before, worker_after, "overnight_batches_ended_total") == 1
    assert delta(api_before, api_after, "overnight_requests_finished_total", **finished("succeeded", "fake")) == 0
    assert value(worker_after, "overnight_backend_concurrency_cap", backend="fake") == 4
    # Both read the queue of the database they share.
    assert value(worker_after, "overnight_requests_pending") == value(api_after, "overnight_requests_pending") == 0
    assert (
        delta(
            worker_before, worker_after, "overnight_http_requests_total", method="GET", route="/metrics", status="200"
        )
        == 1
    )
    assert httpx.get(f"{worker.base_url}/v1/messages/batches", timeout=10).status_code == 404
