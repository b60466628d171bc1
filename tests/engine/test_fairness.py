"""Round-robin between batches: a small batch created behind a big one is not starved."""

from __future__ import annotations

import time
from pathlib import Path

import anthropic

from tests.server import ServerProcess


def _requests(prefix: str, n: int) -> list[dict]:
    return [
        {
            "custom_id": f"{prefix}-{i}",
            "params": {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": f"{prefix} {i}"}]},
        }
        for i in range(n)
    ]


def test_small_batch_finishes_while_big_one_is_still_running(tmp_path: Path) -> None:
    # 2000 requests at 20 ms with 4 slots take ~10 s; 10 more must not wait behind them.
    with ServerProcess(tmp_path, ["--fake-latency-ms", "20", "--concurrency", "4"]) as server:
        client = anthropic.Anthropic(base_url=server.base_url, api_key="k", _strict_response_validation=True)
        big = client.messages.batches.create(requests=_requests("big", 2000))
        time.sleep(0.3)  # let the big batch fill the engine's buffer first
        small = client.messages.batches.create(requests=_requests("small", 10))
        deadline = time.monotonic() + 20
        while (small := client.messages.batches.retrieve(small.id)).processing_status != "ended":
            assert time.monotonic() < deadline, "the small batch was starved"
            time.sleep(0.05)
        big = client.messages.batches.retrieve(big.id)
        assert small.request_counts.succeeded == 10
        assert big.processing_status == "in_progress"
        assert big.request_counts.processing > 1000, big.request_counts
        client.messages.batches.cancel(big.id)
