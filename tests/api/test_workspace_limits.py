"""Per-workspace limits (spec §8): calls per minute and requests waiting in the queue → 429."""

from __future__ import annotations

from pathlib import Path

import anthropic
import pytest

from tests.server import ServerProcess


def _requests(n: int) -> list[dict]:
    return [
        {
            "custom_id": f"r{i}",
            "params": {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]},
        }
        for i in range(n)
    ]


def _client(server: ServerProcess, key: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=server.base_url, api_key=key, max_retries=0, _strict_response_validation=True)


def test_rate_limit_per_workspace_answers_429_with_retry_after(tmp_path: Path) -> None:
    args = ["--rate-limit-rpm", "3", "--api-key", "a:one", "--api-key", "b:two"]
    with ServerProcess(tmp_path, args) as server:
        first = _client(server, "a")
        for _ in range(3):
            first.messages.batches.list()
        with pytest.raises(anthropic.RateLimitError) as caught:
            first.messages.batches.list()
        assert caught.value.body["error"]["type"] == "rate_limit_error"
        assert 1 <= int(caught.value.response.headers["retry-after"]) <= 60
        assert caught.value.response.headers["request-id"].startswith("req_")
        # Another workspace has its own budget.
        assert _client(server, "b").messages.batches.list().data == []


def test_queue_limit_refuses_a_create_that_would_overflow_it(tmp_path: Path) -> None:
    args = [
        "--max-queued-requests",
        "10",
        "--fake-latency-ms",
        "2000",
        "--concurrency",
        "1",
        "--api-key",
        "a:one",
        "--api-key",
        "b:two",
    ]
    with ServerProcess(tmp_path, args) as server:
        client = _client(server, "a")
        waiting = client.messages.batches.create(requests=_requests(8))
        with pytest.raises(anthropic.RateLimitError) as caught:
            client.messages.batches.create(requests=_requests(3))
        assert "queue" in caught.value.body["error"]["message"]
        assert int(caught.value.response.headers["retry-after"]) >= 1
        assert [batch.id for batch in client.messages.batches.list()] == [waiting.id]  # nothing stored
        assert client.messages.batches.create(requests=_requests(2)).request_counts.processing == 2
        assert _client(server, "b").messages.batches.create(requests=_requests(10)).id
