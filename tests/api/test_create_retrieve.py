"""Create and retrieve: the MessageBatch object, its ids, timestamps, counts and headers."""

from __future__ import annotations

from typing import Any

import anthropic
import httpx

from tests.api.helpers import (
    BATCH_ID_RE,
    BATCH_KEYS,
    assert_batch_json,
    assert_request_id,
    async_wait_for_end,
    counts_total,
    make_requests,
    micros_between,
    parse_ts,
    wait_for_end,
)
from tests.server import ServerProcess

DAY_MICROS = 86_400 * 1_000_000


def test_create_returns_in_progress_batch_with_every_key(client: anthropic.Anthropic) -> None:
    requests = make_requests(3, prefix="shape")
    raw = client.messages.batches.with_raw_response.create(requests=requests)
    assert raw.status_code == 200
    assert raw.request_id is not None and raw.request_id.startswith("req_")
    data = assert_batch_json(raw.json(), total=3)
    assert data["processing_status"] == "in_progress"
    assert data["request_counts"] == {"processing": 3, "succeeded": 0, "errored": 0, "canceled": 0, "expired": 0}
    assert data["ended_at"] is None
    assert data["cancel_initiated_at"] is None
    assert data["archived_at"] is None
    assert data["results_url"] is None
    # The SDK's strict model parses the same body.
    batch = raw.parse()
    assert batch.id == data["id"]
    assert batch.type == "message_batch"


def test_batch_id_format_and_uniqueness(client: anthropic.Anthropic) -> None:
    ids = {client.messages.batches.create(requests=make_requests(1, prefix=f"u{i}")).id for i in range(8)}
    assert len(ids) == 8
    for batch_id in ids:
        assert BATCH_ID_RE.match(batch_id), batch_id
        assert len(batch_id) == len("msgbatch_") + 24


def test_timestamps_rfc3339_and_expires_after_24h(client: anthropic.Anthropic) -> None:
    raw = client.messages.batches.with_raw_response.create(requests=make_requests(2, prefix="ts"))
    data = raw.json()
    assert isinstance(data, dict)
    parse_ts(data["created_at"])
    parse_ts(data["expires_at"])
    assert micros_between(data["created_at"], data["expires_at"]) == DAY_MICROS
    ended = wait_for_end(client, data["id"], total=2)
    final = client.messages.batches.with_raw_response.retrieve(data["id"]).json()
    assert isinstance(final, dict)
    assert final["created_at"] == data["created_at"]
    assert final["expires_at"] == data["expires_at"]
    assert parse_ts(final["ended_at"]) >= parse_ts(final["created_at"])
    assert parse_ts(final["ended_at"]) <= parse_ts(final["expires_at"])
    assert ended.ended_at == parse_ts(final["ended_at"])


def test_retrieve_matches_create_and_ends_with_counts(client: anthropic.Anthropic, server: ServerProcess) -> None:
    created = client.messages.batches.create(requests=make_requests(5, prefix="rt"))
    fetched = client.messages.batches.retrieve(created.id)
    assert fetched.id == created.id
    assert fetched.created_at == created.created_at
    assert fetched.expires_at == created.expires_at
    ended = wait_for_end(client, created.id, total=5)
    assert ended.processing_status == "ended"
    assert ended.request_counts.succeeded == 5
    assert ended.request_counts.processing == 0
    assert ended.cancel_initiated_at is None
    assert ended.archived_at is None
    assert ended.results_url == f"{server.base_url}/v1/messages/batches/{created.id}/results"


def test_retrieve_raw_json_after_end_has_explicit_nulls(raw: httpx.Client, client: anthropic.Anthropic) -> None:
    batch = client.messages.batches.create(requests=make_requests(2, prefix="nulls"))
    wait_for_end(client, batch.id, total=2)
    response = raw.get(f"/v1/messages/batches/{batch.id}")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    assert_request_id(response)
    data = assert_batch_json(response.json(), total=2)
    assert set(data) == BATCH_KEYS
    assert data["cancel_initiated_at"] is None and "cancel_initiated_at" in data
    assert data["archived_at"] is None and "archived_at" in data
    assert data["processing_status"] == "ended"
    assert data["request_counts"] == {"processing": 0, "succeeded": 2, "errored": 0, "canceled": 0, "expired": 0}


def test_create_accepts_old_sdk_headers(make_raw: Any, server: ServerProcess) -> None:
    """What the 0.x SDKs send: x-api-key, anthropic-version 2023-06-01, x-stainless-* telemetry."""
    http = make_raw(
        server,
        headers={
            "x-stainless-lang": "python",
            "x-stainless-package-version": "0.40.0",
            "x-stainless-os": "Linux",
            "x-stainless-arch": "x64",
            "x-stainless-runtime": "CPython",
            "x-stainless-runtime-version": "3.11.9",
            "x-stainless-retry-count": "0",
            "x-stainless-timeout": "600",
            "anthropic-user-profile-id": "profile-123",
        },
    )
    response = http.post("/v1/messages/batches", json={"requests": make_requests(1, prefix="oldsdk")})
    assert response.status_code == 200, response.text
    assert_request_id(response)
    assert_batch_json(response.json(), total=1)


def test_request_ids_are_unique_per_response(raw: httpx.Client) -> None:
    seen = {assert_request_id(raw.get("/v1/messages/batches")) for _ in range(5)}
    assert len(seen) == 5


def test_healthz(server: ServerProcess) -> None:
    response = httpx.get(f"{server.base_url}/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    assert_request_id(response)


def test_live_progress_counts_add_up_at_every_poll(slow_server: ServerProcess, make_client: Any) -> None:
    """Decision: requests move to `succeeded` as soon as their result is stored (live progress)."""
    client = make_client(slow_server)
    batch = client.messages.batches.create(requests=make_requests(6, prefix="live"))
    seen: list[tuple[str, int, int]] = []

    def record(polled: Any) -> None:
        seen.append((polled.processing_status, polled.request_counts.processing, polled.request_counts.succeeded))

    ended = wait_for_end(client, batch.id, total=6, interval=0.02, on_poll=record)
    assert ended.request_counts.succeeded == 6
    partial = [s for s in seen if s[0] == "in_progress" and 0 < s[2] < 6]
    assert partial, f"never saw live progress while in_progress: {seen}"
    assert all(status == "in_progress" and processing + succeeded == 6 for status, processing, succeeded in partial)
    succeeded_series = [s[2] for s in seen]
    assert succeeded_series == sorted(succeeded_series), "succeeded count went backwards"


async def test_async_create_retrieve(async_client: anthropic.AsyncAnthropic, server: ServerProcess) -> None:
    created = await async_client.messages.batches.create(requests=make_requests(4, prefix="async"))
    assert BATCH_ID_RE.match(created.id)
    assert created.processing_status == "in_progress"
    assert counts_total(created.request_counts) == 4
    again = await async_client.messages.batches.retrieve(created.id)
    assert again.id == created.id and again.created_at == created.created_at
    ended = await async_wait_for_end(async_client, created.id, total=4)
    assert ended.request_counts.succeeded == 4
    assert ended.results_url == f"{server.base_url}/v1/messages/batches/{created.id}/results"


async def test_async_raw_response_shape(async_client: anthropic.AsyncAnthropic) -> None:
    raw = await async_client.messages.batches.with_raw_response.create(requests=make_requests(1, prefix="araw"))
    assert raw.status_code == 200
    data = assert_batch_json(await raw.json(), total=1)
    parsed = await raw.parse()
    assert parsed.id == data["id"]
    got = await async_client.messages.batches.with_raw_response.retrieve(parsed.id)
    assert got.request_id is not None and got.request_id.startswith("req_")
    assert assert_batch_json(await got.json(), total=1)["created_at"] == data["created_at"]
