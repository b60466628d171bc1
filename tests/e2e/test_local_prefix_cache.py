"""Prefix-aware scheduling end to end on the real default GGUF (SmolLM2-135M-Instruct): a batch whose
requests alternate between two long system prompts runs each prompt's requests back to back, and the
results' usage shows the reused prefix as `cache_read_input_tokens`.

Submitted in arrival order (A B A B) every request would follow one with the other system prompt and
reuse only the template's first tokens; grouped (A A B B), the second of each pair reuses the whole
system turn.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import anthropic
import pytest

from tests.e2e.conftest import StartOvernight, run_batch, succeeded

pytestmark = pytest.mark.local_model

MODEL = "smollm2-135m"
SYSTEMS = {
    "a": "You are a careful librarian. "
    + " ".join(f"Rule {n}: cite the shelf number of every book you mention." for n in range(30)),
    "b": "You are a cheerful gardener. "
    + " ".join(f"Tip {n}: water tomatoes in the morning and mulch the beds." for n in range(30)),
}


def test_requests_sharing_a_system_prompt_run_together_and_report_cache_reads(
    start_overnight: StartOvernight, local_model_path: Path, make_client: Callable[..., anthropic.Anthropic]
) -> None:
    server = start_overnight("--model-path", str(local_model_path), backend="local")
    client = make_client(server, timeout=120.0)
    requests: list[dict[str, Any]] = [
        {
            "custom_id": f"{name}-{n}",
            "params": {
                "model": MODEL,
                "max_tokens": 2,
                "temperature": 0.0,
                "system": SYSTEMS[name],
                "messages": [{"role": "user", "content": f"Question {n}: what do you recommend?"}],
            },
        }
        for n in range(2)
        for name in ("a", "b")  # interleaved: a-0 b-0 a-1 b-1
    ]
    batch, results = run_batch(client, requests, timeout=240)
    assert batch.request_counts.succeeded == 4

    reads = {}
    for request in requests:
        usage = succeeded(results, request["custom_id"]).usage
        params = request["params"]
        counted = client.messages.count_tokens(model=MODEL, system=params["system"], messages=params["messages"])
        assert usage.input_tokens + usage.cache_read_input_tokens == counted.input_tokens, request["custom_id"]
        reads[request["custom_id"]] = usage.cache_read_input_tokens
    # In each pair, one request ran right after the other and read the whole system turn from the cache.
    for name in ("a", "b"):
        pair = sorted(reads[f"{name}-{n}"] for n in range(2))
        assert pair[0] < 10 and pair[1] > 300, reads

    # The batch's usage sums carry the cache reads too.
    totals = client.get(f"/v1/overnight/batches/{batch.id}/usage", cast_to=object)
    assert isinstance(totals, dict)
    assert totals["cache_read_input_tokens"] == sum(reads.values())
