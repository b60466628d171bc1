"""Cancel reaches requests that are queued for a backend slot, not only those still in the store."""

from __future__ import annotations

import time
from pathlib import Path

import anthropic

from tests.server import ServerProcess

CONFIG = """
[backends.one_at_a_time]
type = "fake"
latency_seconds = 0.4
max_concurrency = 1

[[routes]]
model = "*"
backend = "one_at_a_time"
"""


def test_requests_waiting_for_a_backend_slot_are_canceled_unsent(tmp_path: Path) -> None:
    config = tmp_path / "routes.toml"
    config.write_text(CONFIG)
    # Eight workers take requests at once, but the backend runs one at a time: seven wait for a slot.
    with ServerProcess(tmp_path / "data", ["--config", str(config), "--concurrency", "8"]) as server:
        client = anthropic.Anthropic(base_url=server.base_url, api_key="k", _strict_response_validation=True)
        requests = [
            {
                "custom_id": f"r{i}",
                "params": {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": f"n {i}"}]},
            }
            for i in range(12)
        ]
        batch = client.messages.batches.create(requests=requests)
        time.sleep(0.6)  # the first request has finished, the second is with the backend
        client.messages.batches.cancel(batch.id)
        deadline = time.monotonic() + 10
        while (batch := client.messages.batches.retrieve(batch.id)).processing_status != "ended":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        counts = batch.request_counts
        # Only requests actually sent to the backend finish: at most the one in flight at cancel time
        # and the one before it (plus one for timing slack); the other waiters are canceled unsent.
        assert 1 <= counts.succeeded <= 3, counts
        assert counts.canceled == 12 - counts.succeeded, counts
        results = {r.custom_id: r.result.type for r in client.messages.batches.results(batch.id)}
        assert sorted(results) == sorted(f"r{i}" for i in range(12))
