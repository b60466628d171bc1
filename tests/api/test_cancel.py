"""Cancel: pending requests become `canceled`, finished ones keep their real result, states and errors.

Most tests use `slow_server` (500 ms per request, concurrency 2) so a batch is really running.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anthropic
import httpx
import pytest

from tests.api.helpers import (
    MESSAGE_BATCHES_BETA,
    assert_batch_json,
    assert_error,
    assert_sdk_error,
    async_wait_for_end,
    expected_text,
    make_requests,
    parse_jsonl,
    parse_ts,
    wait_for,
    wait_for_end,
)
from tests.server import ServerProcess


@pytest.fixture
def sclient(slow_server: ServerProcess, make_client: Callable[..., anthropic.Anthropic]) -> anthropic.Anthropic:
    return make_client(slow_server)


@pytest.fixture
def sraw(slow_server: ServerProcess, make_raw: Callable[..., httpx.Client]) -> httpx.Client:
    return make_raw(slow_server)


def _start_and_cancel_midway(client: anthropic.Anthropic, n: int = 30) -> tuple[list[dict[str, Any]], str, int, Any]:
    """Create `n` requests, wait until some succeeded, cancel; returns (requests, id, succeeded, cancel body)."""
    requests = make_requests(n, prefix="cx")
    batch = client.messages.batches.create(requests=requests)  # type: ignore[arg-type]

    def two_done() -> Any:
        polled = client.messages.batches.retrieve(batch.id)
        return polled if polled.request_counts.succeeded >= 2 else None

    running = wait_for(two_done, timeout=15, interval=0.02, what="two requests to succeed")
    assert running.processing_status == "in_progress"
    succeeded_before = running.request_counts.succeeded
    assert succeeded_before < n
    raw = client.messages.batches.with_raw_response.cancel(batch.id)
    assert raw.status_code == 200
    body = assert_batch_json(raw.json(), total=n)
    return requests, batch.id, succeeded_before, body


def test_cancel_while_running_keeps_finished_results(sclient: anthropic.Anthropic, sraw: httpx.Client) -> None:
    requests, batch_id, succeeded_before, body = _start_and_cancel_midway(sclient)
    assert body["id"] == batch_id
    assert body["processing_status"] == "canceling"
    assert body["cancel_initiated_at"] is not None
    assert body["ended_at"] is None and body["results_url"] is None
    assert body["request_counts"]["succeeded"] >= succeeded_before

    ended = wait_for_end(sclient, batch_id, total=30, timeout=20)
    counts = ended.request_counts
    assert counts.canceled > 0, counts
    assert counts.succeeded >= succeeded_before, "a finished result was relabelled"
    assert counts.succeeded + counts.canceled == 30, counts
    assert counts.errored == 0 and counts.expired == 0 and counts.processing == 0
    assert ended.cancel_initiated_at == parse_ts(body["cancel_initiated_at"])
    assert ended.ended_at is not None and ended.ended_at >= ended.cancel_initiated_at

    assert ended.results_url is not None
    response = sraw.get(ended.results_url)
    assert response.status_code == 200
    lines = {line["custom_id"]: line for line in parse_jsonl(response.content)}
    assert len(lines) == 30 and set(lines) == {r["custom_id"] for r in requests}
    by_type: dict[str, int] = {}
    for req in requests:
        line = lines[req["custom_id"]]
        kind = line["result"]["type"]
        by_type[kind] = by_type.get(kind, 0) + 1
        if kind == "canceled":
            assert line == {"custom_id": req["custom_id"], "result": {"type": "canceled"}}
        else:
            assert kind == "succeeded", line
            assert line["result"]["message"]["content"][0]["text"] == expected_text(req)
    assert by_type == {k: v for k, v in (("succeeded", counts.succeeded), ("canceled", counts.canceled)) if v}


def test_cancel_on_canceling_returns_batch_unchanged(sclient: anthropic.Anthropic) -> None:
    _requests, batch_id, _succeeded, first = _start_and_cancel_midway(sclient)
    assert first["processing_status"] == "canceling"
    second = sclient.messages.batches.with_raw_response.cancel(batch_id)
    assert second.status_code == 200
    again = assert_batch_json(second.json(), total=30)
    assert again["processing_status"] == "canceling"
    assert again["cancel_initiated_at"] == first["cancel_initiated_at"]
    assert again["created_at"] == first["created_at"]
    wait_for_end(sclient, batch_id, total=30, timeout=20)


def test_cancel_on_ended_is_400(client: anthropic.Anthropic, raw: httpx.Client) -> None:
    batch = client.messages.batches.create(requests=make_requests(2, prefix="done"))  # type: ignore[arg-type]
    ended = wait_for_end(client, batch.id, total=2)
    with pytest.raises(anthropic.BadRequestError) as info:
        client.messages.batches.cancel(batch.id)
    assert_sdk_error(info.value, 400, "invalid_request_error")
    assert_error(raw.post(f"/v1/messages/batches/{batch.id}/cancel"), 400, "invalid_request_error")
    after = client.messages.batches.retrieve(batch.id)
    assert after.cancel_initiated_at is None
    assert after.request_counts == ended.request_counts
    assert after.ended_at == ended.ended_at


@pytest.mark.parametrize("batch_id", ["msgbatch_000000000000000000000000", "not-a-batch"])
def test_cancel_unknown_is_404(client: anthropic.Anthropic, raw: httpx.Client, batch_id: str) -> None:
    with pytest.raises(anthropic.NotFoundError) as info:
        client.messages.batches.cancel(batch_id)
    assert_sdk_error(info.value, 404, "not_found_error")
    assert_error(raw.post(f"/v1/messages/batches/{batch_id}/cancel"), 404, "not_found_error")


def test_cancel_right_after_create_cancels_pending_requests(sclient: anthropic.Anthropic) -> None:
    batch = sclient.messages.batches.create(requests=make_requests(12, prefix="quick"))  # type: ignore[arg-type]
    canceled = sclient.messages.batches.cancel(batch.id)
    assert canceled.processing_status in ("canceling", "ended")
    assert canceled.cancel_initiated_at is not None
    ended = wait_for_end(sclient, batch.id, total=12, timeout=20)
    assert ended.request_counts.canceled >= 1
    assert ended.request_counts.canceled + ended.request_counts.succeeded == 12


async def test_async_cancel(
    slow_server: ServerProcess, make_async_client: Callable[..., anthropic.AsyncAnthropic]
) -> None:
    client = make_async_client(slow_server)
    batch = await client.messages.batches.create(requests=make_requests(12, prefix="acx"))  # type: ignore[arg-type]
    canceled = await client.messages.batches.cancel(batch.id)
    assert canceled.id == batch.id
    assert canceled.processing_status in ("canceling", "ended")
    assert canceled.cancel_initiated_at is not None
    ended = await async_wait_for_end(client, batch.id, total=12, timeout=20)
    assert ended.request_counts.canceled >= 1
    with pytest.raises(anthropic.BadRequestError):
        await client.messages.batches.cancel(batch.id)


def test_beta_cancel(sclient: anthropic.Anthropic) -> None:
    beta = sclient.beta.messages.batches
    batch = beta.create(requests=make_requests(12, prefix="bcx"), betas=[MESSAGE_BATCHES_BETA])  # type: ignore[arg-type]
    canceled = beta.cancel(batch.id, betas=[MESSAGE_BATCHES_BETA])
    assert canceled.processing_status in ("canceling", "ended")
    assert canceled.cancel_initiated_at is not None
    ended = wait_for_end(sclient, batch.id, total=12, timeout=20, beta=True)
    assert ended.request_counts.canceled >= 1
    results = list(beta.results(batch.id, betas=[MESSAGE_BATCHES_BETA]))
    assert len(results) == 12
    assert sum(1 for r in results if r.result.type == "canceled") == ended.request_counts.canceled
