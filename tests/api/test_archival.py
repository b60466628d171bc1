"""Archival: after `--results-retention`, results are gone (404) but the batch is still there.

Server: `--results-retention 3`, sweepers every 0.2 s.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import anthropic
import httpx
import pytest

from tests.api.helpers import (
    assert_batch_json,
    assert_error,
    make_requests,
    parse_jsonl,
    parse_ts,
    wait_for,
    wait_for_end,
)
from tests.conftest import start_server
from tests.server import ServerProcess

RETENTION_S = 3


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = start_server(
        tmp_path_factory.mktemp("archive"), ["--results-retention", str(RETENTION_S), "--sweep-interval", "0.2"]
    )
    yield proc
    proc.terminate_quietly()


def test_results_archived_after_retention(client: anthropic.Anthropic, raw: httpx.Client) -> None:
    batch = client.messages.batches.create(requests=make_requests(3, prefix="arch"))  # type: ignore[arg-type]
    ended = wait_for_end(client, batch.id, total=3)
    assert ended.archived_at is None
    assert ended.results_url is not None
    results_url = ended.results_url
    assert len(parse_jsonl(raw.get(results_url).content)) == 3

    def archived() -> dict[str, Any] | None:
        body = raw.get(f"/v1/messages/batches/{batch.id}").json()
        return body if body["archived_at"] is not None else None

    data = assert_batch_json(wait_for(archived, timeout=RETENTION_S + 10, interval=0.1, what="archival"), total=3)
    assert data["results_url"] is None
    assert data["processing_status"] == "ended"
    assert data["request_counts"] == {"processing": 0, "succeeded": 3, "errored": 0, "canceled": 0, "expired": 0}
    archived_at = parse_ts(data["archived_at"])
    created_at = parse_ts(data["created_at"])
    assert archived_at >= created_at + timedelta(seconds=RETENTION_S) - timedelta(milliseconds=1)
    assert archived_at < created_at + timedelta(seconds=RETENTION_S + 5)

    message = assert_error(raw.get(results_url), 404, "not_found_error")
    assert "archived" in message.lower(), message
    with pytest.raises(anthropic.AnthropicError, match="results_url"):
        client.messages.batches.results(batch.id)

    # Still retrievable and listed.
    again = client.messages.batches.retrieve(batch.id)
    assert again.archived_at == archived_at and again.results_url is None
    listed = {b.id: b for b in client.messages.batches.list(limit=1000)}
    assert batch.id in listed and listed[batch.id].archived_at == archived_at
    with pytest.raises(anthropic.BadRequestError):
        client.messages.batches.cancel(batch.id)

    # Deleting an archived batch works and then it is gone.
    assert client.messages.batches.delete(batch.id).id == batch.id
    assert_error(raw.get(f"/v1/messages/batches/{batch.id}"), 404, "not_found_error")


def test_fresh_batches_are_not_archived(client: anthropic.Anthropic) -> None:
    batch = client.messages.batches.create(requests=make_requests(1, prefix="fresh"))  # type: ignore[arg-type]
    ended = wait_for_end(client, batch.id, total=1)
    assert ended.archived_at is None
    assert [r.custom_id for r in client.messages.batches.results(batch.id)] == ["fresh-0"]
