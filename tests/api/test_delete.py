"""Delete: only ended batches, 200 `message_batch_deleted`, then everything about the batch is 404."""

from __future__ import annotations

from collections.abc import Callable

import anthropic
import httpx
import pytest

from tests.api.helpers import (
    MESSAGE_BATCHES_BETA,
    assert_error,
    assert_request_id,
    assert_sdk_error,
    async_wait_for_end,
    make_requests,
    wait_for_end,
)
from tests.server import ServerProcess


def _ended_batch(client: anthropic.Anthropic, n: int = 2, prefix: str = "del") -> str:
    batch = client.messages.batches.create(requests=make_requests(n, prefix=prefix))  # type: ignore[arg-type]
    wait_for_end(client, batch.id, total=n)
    return batch.id


def test_delete_ended_batch_then_everything_is_404(client: anthropic.Anthropic, raw: httpx.Client) -> None:
    batch_id = _ended_batch(client)
    keep_id = _ended_batch(client, prefix="keep")
    # Like the SDKs: content-type application/json on a DELETE without a body.
    response = raw.delete(f"/v1/messages/batches/{batch_id}", headers={"content-type": "application/json"})
    assert response.status_code == 200, response.text
    assert_request_id(response)
    assert response.headers["content-type"].startswith("application/json")
    assert response.json() == {"id": batch_id, "type": "message_batch_deleted"}

    with pytest.raises(anthropic.NotFoundError) as info:
        client.messages.batches.retrieve(batch_id)
    assert_sdk_error(info.value, 404, "not_found_error")
    assert_error(raw.get(f"/v1/messages/batches/{batch_id}"), 404, "not_found_error")
    assert_error(raw.get(f"/v1/messages/batches/{batch_id}/results"), 404, "not_found_error")
    assert_error(raw.post(f"/v1/messages/batches/{batch_id}/cancel"), 404, "not_found_error")
    assert_error(raw.delete(f"/v1/messages/batches/{batch_id}"), 404, "not_found_error")
    listed = [b.id for b in client.messages.batches.list(limit=1000)]
    assert batch_id not in listed
    assert keep_id in listed
    # The other batch is untouched.
    assert client.messages.batches.retrieve(keep_id).request_counts.succeeded == 2
    assert len(list(client.messages.batches.results(keep_id))) == 2


def test_sdk_delete_returns_deleted_object(client: anthropic.Anthropic) -> None:
    batch_id = _ended_batch(client, prefix="sdkdel")
    deleted = client.messages.batches.delete(batch_id)
    assert deleted.id == batch_id
    assert deleted.type == "message_batch_deleted"
    with pytest.raises(anthropic.NotFoundError):
        client.messages.batches.delete(batch_id)


def test_delete_in_progress_or_canceling_is_400_not_409(
    slow_server: ServerProcess,
    make_client: Callable[..., anthropic.Anthropic],
    make_raw: Callable[..., httpx.Client],
) -> None:
    client = make_client(slow_server)
    http = make_raw(slow_server)
    batch = client.messages.batches.create(requests=make_requests(20, prefix="busy"))  # type: ignore[arg-type]
    response = http.delete(f"/v1/messages/batches/{batch.id}")
    message = assert_error(response, 400, "invalid_request_error")
    assert "cancel" in message.lower(), message
    with pytest.raises(anthropic.BadRequestError) as info:
        client.messages.batches.delete(batch.id)
    assert_sdk_error(info.value, 400, "invalid_request_error")

    canceled = client.messages.batches.cancel(batch.id)
    if canceled.processing_status == "canceling":
        assert_error(http.delete(f"/v1/messages/batches/{batch.id}"), 400, "invalid_request_error")
    wait_for_end(client, batch.id, total=20, timeout=20)
    # Still there after the refused deletes; deletable now.
    assert client.messages.batches.retrieve(batch.id).processing_status == "ended"
    assert client.messages.batches.delete(batch.id).id == batch.id


def test_delete_unknown_is_404(client: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.NotFoundError) as info:
        client.messages.batches.delete("msgbatch_000000000000000000000000")
    assert_sdk_error(info.value, 404, "not_found_error")


async def test_async_delete(async_client: anthropic.AsyncAnthropic) -> None:
    batch = await async_client.messages.batches.create(requests=make_requests(1, prefix="adel"))  # type: ignore[arg-type]
    await async_wait_for_end(async_client, batch.id, total=1)
    deleted = await async_client.messages.batches.delete(batch.id)
    assert deleted.id == batch.id and deleted.type == "message_batch_deleted"
    with pytest.raises(anthropic.NotFoundError):
        await async_client.messages.batches.retrieve(batch.id)


def test_beta_delete(client: anthropic.Anthropic) -> None:
    beta = client.beta.messages.batches
    batch = beta.create(requests=make_requests(1, prefix="bdel"), betas=[MESSAGE_BATCHES_BETA])  # type: ignore[arg-type]
    wait_for_end(client, batch.id, total=1, beta=True)
    deleted = beta.delete(batch.id, betas=[MESSAGE_BATCHES_BETA])
    assert deleted.id == batch.id and deleted.type == "message_batch_deleted"
    with pytest.raises(anthropic.NotFoundError):
        beta.retrieve(batch.id, betas=[MESSAGE_BATCHES_BETA])
