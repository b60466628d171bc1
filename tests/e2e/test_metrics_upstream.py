"""Backend metrics against a real upstream that fails on purpose: retries by error type, every attempt in
the latency histogram, results by backend and error type, tokens as the upstream reported them, and the
adaptive cap lowered by a 429 (the scripted upstream is `ProgrammableUpstream`, see conftest)."""

from __future__ import annotations

from collections.abc import Callable

import anthropic

from tests.e2e.conftest import ProgrammableUpstream, StartOvernight, anthropic_error, run_batch, user
from tests.metrics import delta, finished, scrape, value


def test_retries_latency_results_and_tokens_of_an_upstream(
    start_overnight: StartOvernight,
    programmable_upstream: ProgrammableUpstream,
    make_client: Callable[..., anthropic.Anthropic],
) -> None:
    front = start_overnight(
        "--upstream-url",
        programmable_upstream.base_url,
        "--max-attempts",
        "4",
        "--retry-base-delay",
        "0.01",
        backend="anthropic",
    )
    upstream = programmable_upstream
    upstream.reset()
    upstream.script("429 once", anthropic_error(429, "rate_limit_error", "slow down", {"retry-after": "0"}))
    upstream.script("529 twice", *[anthropic_error(529, "overloaded_error", "busy")] * 2)
    upstream.script("400", anthropic_error(400, "invalid_request_error", "max_tokens: too many"))
    prompts = ["429 once", "529 twice", "400", "fine at once"]
    requests = [
        {"custom_id": f"r{i}", "params": {"model": "claude-e2e", "max_tokens": 16, "messages": user(prompt)}}
        for i, prompt in enumerate(prompts)
    ]
    before = scrape(front)
    batch, results = run_batch(make_client(front), requests)
    after = scrape(front)

    assert (batch.request_counts.succeeded, batch.request_counts.errored) == (3, 1)
    calls = len(upstream.calls)
    assert calls == 2 + 3 + 1 + 1
    retries = "overnight_backend_retries_total"
    assert delta(before, after, retries, backend="anthropic", error_type="rate_limit_error") == 1
    assert delta(before, after, retries, backend="anthropic", error_type="overloaded_error") == 2
    assert delta(before, after, "overnight_backend_call_duration_seconds_count", backend="anthropic") == calls
    finished_total = "overnight_requests_finished_total"
    assert delta(before, after, finished_total, **finished("succeeded", "anthropic")) == 3
    assert delta(before, after, finished_total, **finished("errored", "anthropic", "invalid_request_error")) == 1
    messages = [line.result.message for line in results.values() if line.result.type == "succeeded"]
    for kind in ("input", "output"):
        reported = sum(getattr(message.usage, f"{kind}_tokens") for message in messages)
        assert delta(before, after, "overnight_tokens_total", backend="anthropic", type=kind) == reported > 0
    # The 429 halved the backend's concurrency; three successes are too few to grow it back.
    assert value(after, "overnight_backend_concurrency_cap", backend="anthropic") == 32
    assert value(after, "overnight_backend_concurrency_limit", backend="anthropic") == 16
    assert value(after, "overnight_backend_calls_in_flight", backend="anthropic") == 0
