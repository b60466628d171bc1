"""The beta client (`client.beta.messages.batches`), `?beta=true` and `anthropic-beta` headers."""

from __future__ import annotations

import json
from collections.abc import Callable

import anthropic
import httpx
import pytest
from anthropic.types.beta.messages import BetaMessageBatch, BetaMessageBatchIndividualResponse

from tests.api.helpers import (
    MESSAGE_BATCHES_BETA,
    assert_batch_json,
    assert_error,
    assert_sdk_error,
    async_wait_for_end,
    expected_text,
    make_requests,
    parse_jsonl,
    wait_for,
    wait_for_end,
)
from tests.server import ServerProcess

BATCHES = "/v1/messages/batches"
BETA_SETS = [
    [MESSAGE_BATCHES_BETA],
    ["some-future-beta-2099-01-01", MESSAGE_BATCHES_BETA],
    ["totally-unknown-beta"],
]


@pytest.mark.parametrize("betas", BETA_SETS)
def test_beta_client_full_lifecycle(client: anthropic.Anthropic, betas: list[str]) -> None:
    resource = client.beta.messages.batches
    requests = make_requests(3, prefix="beta")
    created = resource.create(requests=requests, betas=betas)  # type: ignore[arg-type]
    assert isinstance(created, BetaMessageBatch)
    assert created.processing_status == "in_progress"
    fetched = resource.retrieve(created.id, betas=betas)
    assert fetched.id == created.id
    ended = wait_for_end(client, created.id, total=3, beta=True)
    assert ended.request_counts.succeeded == 3
    listed = [b.id for b in resource.list(limit=1000, betas=betas)]
    assert created.id in listed
    results = list(resource.results(created.id, betas=betas))
    assert all(isinstance(r, BetaMessageBatchIndividualResponse) for r in results)
    by_id = {r.custom_id: r for r in results}
    assert set(by_id) == {r["custom_id"] for r in requests}
    for req in requests:
        result = by_id[req["custom_id"]].result
        assert result.type == "succeeded"
        assert result.message.content[0].text == expected_text(req)
    with pytest.raises(anthropic.BadRequestError) as info:
        resource.cancel(created.id, betas=betas)
    assert_sdk_error(info.value, 400, "invalid_request_error")
    deleted = resource.delete(created.id, betas=betas)
    assert deleted.id == created.id and deleted.type == "message_batch_deleted"
    with pytest.raises(anthropic.NotFoundError):
        resource.retrieve(created.id, betas=betas)


def test_beta_query_and_header_on_every_path(server: ServerProcess, make_raw: Callable[..., httpx.Client]) -> None:
    """What the 0.x SDK beta client sends: `?beta=true` and a comma-separated `anthropic-beta`."""
    http = make_raw(server, headers={"anthropic-beta": f"other-beta-2025-01-01,{MESSAGE_BATCHES_BETA}"})
    beta = {"beta": "true"}
    created = http.post(BATCHES, params=beta, json={"requests": make_requests(2, prefix="q")})
    assert created.status_code == 200, created.text
    batch_id = assert_batch_json(created.json(), total=2)["id"]

    listed = http.get(BATCHES, params={**beta, "limit": 5})
    assert listed.status_code == 200, listed.text
    assert batch_id in [b["id"] for b in listed.json()["data"]]

    def ended() -> dict[str, object] | None:
        response = http.get(f"{BATCHES}/{batch_id}", params=beta)
        assert response.status_code == 200, response.text
        polled = assert_batch_json(response.json(), total=2)
        return polled if polled["processing_status"] == "ended" else None

    body = wait_for(ended, what="beta batch to end")
    results_url = body["results_url"]
    assert isinstance(results_url, str)
    results = http.get(results_url, params=beta, headers={"accept": "application/binary"})
    assert results.status_code == 200, results.text
    assert results.headers["content-type"].startswith("application/x-jsonl")
    assert sorted(line["custom_id"] for line in parse_jsonl(results.content)) == ["q-0", "q-1"]

    assert_error(http.post(f"{BATCHES}/{batch_id}/cancel", params=beta), 400, "invalid_request_error")
    deleted = http.delete(f"{BATCHES}/{batch_id}", params=beta)
    assert deleted.status_code == 200, deleted.text
    assert deleted.json() == {"id": batch_id, "type": "message_batch_deleted"}
    assert_error(http.get(f"{BATCHES}/{batch_id}", params=beta), 404, "not_found_error")


def test_repeated_beta_header_is_legal(server: ServerProcess) -> None:
    headers = [
        ("x-api-key", "test-key"),
        ("anthropic-version", "2023-06-01"),
        ("anthropic-beta", "first-beta-2024-01-01"),
        ("anthropic-beta", MESSAGE_BATCHES_BETA),
        ("content-type", "application/json"),
    ]
    with httpx.Client(base_url=server.base_url, timeout=30) as http:
        response = http.post(
            f"{BATCHES}?beta=true",
            headers=headers,
            content=json.dumps({"requests": make_requests(1, prefix="rep")}).encode(),
        )
        assert response.status_code == 200, response.text
        assert response.headers["request-id"].startswith("req_")
        batch_id = response.json()["id"]
        again = http.get(f"{BATCHES}/{batch_id}?beta=true", headers=headers)
        assert again.status_code == 200
        assert again.headers["request-id"].startswith("req_")


def test_beta_and_ga_see_the_same_batches(client: anthropic.Anthropic) -> None:
    ga = client.messages.batches.create(requests=make_requests(1, prefix="ga"))  # type: ignore[arg-type]
    beta = client.beta.messages.batches.create(
        requests=make_requests(1, prefix="bt"),  # type: ignore[arg-type]
        betas=[MESSAGE_BATCHES_BETA],
    )
    assert client.beta.messages.batches.retrieve(ga.id, betas=[MESSAGE_BATCHES_BETA]).id == ga.id
    assert client.messages.batches.retrieve(beta.id).id == beta.id


async def test_async_beta(async_client: anthropic.AsyncAnthropic) -> None:
    resource = async_client.beta.messages.batches
    requests = make_requests(4, prefix="abeta")
    created = await resource.create(requests=requests, betas=[MESSAGE_BATCHES_BETA])  # type: ignore[arg-type]
    fetched = await resource.retrieve(created.id, betas=[MESSAGE_BATCHES_BETA])
    assert fetched.id == created.id and fetched.created_at == created.created_at
    await async_wait_for_end(async_client, created.id, total=4, beta=True)
    with pytest.raises(anthropic.BadRequestError) as info:
        await resource.cancel(created.id, betas=[MESSAGE_BATCHES_BETA])
    assert_sdk_error(info.value, 400, "invalid_request_error")
    decoder = await resource.results(created.id, betas=[MESSAGE_BATCHES_BETA])
    lines = [line async for line in decoder]
    assert sorted(line.custom_id for line in lines) == sorted(r["custom_id"] for r in requests)
    page = await resource.list(limit=2, betas=[MESSAGE_BATCHES_BETA])
    assert len(page.data) <= 2
    deleted = await resource.delete(created.id, betas=[MESSAGE_BATCHES_BETA])
    assert deleted.type == "message_batch_deleted"
