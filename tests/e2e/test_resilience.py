"""Retries, backoff and error mapping end to end, against a real upstream that fails on purpose.

The upstream (`ProgrammableUpstream`, a starlette app on uvicorn on 127.0.0.1) answers each prompt with its
scripted failures — 429 (with `retry-after`), 529, 500, 400 — and then succeeds, and records when every
call arrived. The front runs `--backend anthropic --max-attempts 4 --retry-base-delay 0.05`, so:

- a request failing fewer than 4 times succeeds, after exactly failures + 1 calls;
- one that keeps failing is errored after exactly 4 calls, with the last error's type and the upstream's
  own message (529 → overloaded_error, 500 → api_error; a 429 that never ends → overloaded_error,
  since a result cannot ask to be retried later);
- a 400 is errored `invalid_request_error` after exactly 1 call;
- retries are spaced by full-jitter exponential backoff (each wait in [0, 0.05·2^(n-1)] s, plus slack
  for scheduling), and never sooner than the upstream's `retry-after`;
- a 429 halves the backend's concurrency (and successes raise it again), as the upstream sees it;
- an upstream slower than `timeout_seconds`, or not listening at all, is retried and ends as `api_error`.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from pathlib import Path

import anthropic
import pytest

from tests.api.helpers import assert_sdk_error
from tests.backends.upstreams import Reply
from tests.e2e.conftest import (
    ProgrammableUpstream,
    StartOvernight,
    anthropic_error,
    errored,
    run_batch,
    succeeded,
    success,
    text_of,
    user,
    write_config,
)
from tests.server import ServerProcess, free_port

MAX_ATTEMPTS = 4
BASE_DELAY = 0.05
SLACK = 0.75  # scheduling, the event loop, a loaded CI box: added to every upper bound on a wait


def rate_limited(prompt: str, retry_after: str) -> Reply:
    return anthropic_error(429, "rate_limit_error", f"slow down ({prompt})", {"retry-after": retry_after})


def overloaded(prompt: str) -> Reply:
    return anthropic_error(529, "overloaded_error", f"overloaded ({prompt})")


def broken(prompt: str) -> Reply:
    return anthropic_error(500, "api_error", f"internal failure ({prompt})")


@pytest.fixture(scope="module")
def front(start_overnight: StartOvernight, programmable_upstream: ProgrammableUpstream) -> ServerProcess:
    return start_overnight(
        "--upstream-url",
        programmable_upstream.base_url,
        "--max-attempts",
        str(MAX_ATTEMPTS),
        "--retry-base-delay",
        str(BASE_DELAY),
        backend="anthropic",
    )


@pytest.fixture
def upstream(programmable_upstream: ProgrammableUpstream) -> ProgrammableUpstream:
    programmable_upstream.reset()
    return programmable_upstream


@pytest.fixture
def client(front: ServerProcess, make_client: Callable[..., anthropic.Anthropic]) -> anthropic.Anthropic:
    return make_client(front)


def gaps(upstream: ProgrammableUpstream, prompt: str) -> list[float]:
    times = [call.at for call in upstream.calls_for(prompt)]
    return [later - earlier for earlier, later in itertools.pairwise(times)]


def assert_backoff_bounds(prompt: str, waits: list[float]) -> None:
    for retry, wait in enumerate(waits, start=1):
        ceiling = BASE_DELAY * 2 ** (retry - 1)
        assert 0 <= wait <= ceiling + SLACK, f"{prompt}: retry {retry} came {wait:.3f}s later (ceiling {ceiling}s)"


def test_retries_then_success_or_the_last_error(client: anthropic.Anthropic, upstream: ProgrammableUpstream) -> None:
    always = 10  # more failures than the attempt budget
    scripts = {
        "fine at once": [],
        "429 once, retry after 1s": [rate_limited("429 once, retry after 1s", "1")],
        "529 twice": [overloaded("529 twice")] * 2,
        "500 three times": [broken("500 three times")] * 3,
        "429 always": [rate_limited("429 always", "0")] * always,
        "529 always": [overloaded("529 always")] * always,
        "500 always": [broken("500 always")] * always,
        "400": [anthropic_error(400, "invalid_request_error", "max_tokens: 100000 > 8192, the model's maximum")],
    }
    for prompt, replies in scripts.items():
        upstream.script(prompt, *replies)
    requests = [
        {"custom_id": f"r{i}", "params": {"model": "claude-e2e", "max_tokens": 16, "messages": user(prompt)}}
        for i, prompt in enumerate(scripts)
    ]
    custom_id = {prompt: f"r{i}" for i, prompt in enumerate(scripts)}

    batch, results = run_batch(client, requests, timeout=60)
    counts = batch.request_counts
    assert (counts.succeeded, counts.errored, counts.canceled, counts.expired) == (4, 4, 0, 0)

    # Succeeded after exactly failures + 1 calls.
    for prompt, failures in (
        ("fine at once", 0),
        ("429 once, retry after 1s", 1),
        ("529 twice", 2),
        ("500 three times", 3),
    ):
        message = succeeded(results, custom_id[prompt])
        assert text_of(message) == f"upstream: {prompt}"
        assert len(upstream.calls_for(prompt)) == failures + 1, prompt

    # Errored after exactly MAX_ATTEMPTS calls, with the last error's type and the upstream's message;
    # a result cannot ask to be retried later, so a backend that never stops rate limiting is overloaded.
    for prompt, error_type, upstream_message in (
        ("429 always", "overloaded_error", "slow down (429 always)"),
        ("529 always", "overloaded_error", "overloaded (529 always)"),
        ("500 always", "api_error", "internal failure (500 always)"),
    ):
        assert errored(results, custom_id[prompt]) == (error_type, upstream_message)
        assert len(upstream.calls_for(prompt)) == MAX_ATTEMPTS, prompt

    # A 400 is final: one call, no retry.
    assert errored(results, custom_id["400"]) == (
        "invalid_request_error",
        "max_tokens: 100000 > 8192, the model's maximum",
    )
    assert len(upstream.calls_for("400")) == 1

    # Backoff: every wait within its exponential ceiling; waits are real (the full-jitter waits of the
    # three always-failing requests, 9 draws from U(0, 0.05..0.2), sum to 0.5 s on average).
    for prompt in ("529 twice", "500 three times", "429 always", "529 always", "500 always"):
        assert_backoff_bounds(prompt, gaps(upstream, prompt))
    total_wait = sum(sum(gaps(upstream, p)) for p in ("429 always", "529 always", "500 always"))
    assert total_wait >= 0.02, total_wait

    # retry-after: 1 is honoured: the second call came at least a second after the first.
    [wait] = gaps(upstream, "429 once, retry after 1s")
    assert 0.99 <= wait <= 1.0 + BASE_DELAY + SLACK, wait


def test_messages_create_retries_too(client: anthropic.Anthropic, upstream: ProgrammableUpstream) -> None:
    upstream.script("529 then fine", overloaded("529 then fine"))
    message = client.messages.create(model="claude-e2e", max_tokens=8, messages=user("529 then fine"))
    assert text_of(message) == "upstream: 529 then fine"
    assert len(upstream.calls_for("529 then fine")) == 2

    upstream.script("always 500", *[broken("always 500")] * 10)
    with pytest.raises(anthropic.InternalServerError) as caught:
        client.messages.create(model="claude-e2e", max_tokens=8, messages=user("always 500"))
    assert assert_sdk_error(caught.value, 500, "api_error") == "internal failure (always 500)"
    assert len(upstream.calls_for("always 500")) == MAX_ATTEMPTS

    upstream.script("bad request", anthropic_error(400, "invalid_request_error", "messages: bad"))
    with pytest.raises(anthropic.BadRequestError) as bad:
        client.messages.create(model="claude-e2e", max_tokens=8, messages=user("bad request"))
    assert assert_sdk_error(bad.value, 400, "invalid_request_error") == "messages: bad"
    assert len(upstream.calls_for("bad request")) == 1


def test_429s_halve_the_backends_concurrency(
    start_overnight: StartOvernight,
    upstream: ProgrammableUpstream,
    make_client: Callable[..., anthropic.Anthropic],
) -> None:
    """Capped at 4 calls at once, the backend drops to 2 after a 429 and climbs back on successes."""
    capped = start_overnight(
        "--upstream-url",
        upstream.base_url,
        "--upstream-max-concurrency",
        "4",
        "--max-attempts",
        "3",
        "--retry-base-delay",
        "0.01",
        backend="anthropic",
    )
    prompts = [f"crowd {i}" for i in range(8)]
    for prompt in prompts:  # each: one immediate 429, then a success that takes 0.4 s
        upstream.script(prompt, rate_limited(prompt, "0"), success(delay_seconds=0.4))
    requests = [
        {"custom_id": f"c{i}", "params": {"model": "claude-e2e", "max_tokens": 8, "messages": user(prompt)}}
        for i, prompt in enumerate(prompts)
    ]
    batch, _ = run_batch(make_client(capped), requests, timeout=60)
    assert batch.request_counts.succeeded == 8
    for prompt in prompts:
        assert len(upstream.calls_for(prompt)) == 2, prompt

    calls = sorted((call for call in upstream.calls if call.prompt in prompts), key=lambda call: call.at)
    assert max(call.in_flight for call in calls) <= 4  # the configured cap, always
    # The first 4 calls go out together and are all rate limited; from then on at most 2 at once until a
    # success comes back...
    first_success_end = min(call.ended for call in calls if call.ended is not None and call.ended - call.at > 0.3)
    halved = [call.in_flight for call in calls[4:] if call.at < first_success_end]
    assert halved and max(halved) <= 2, [(round(c.at - calls[0].at, 3), c.in_flight) for c in calls]
    # ...after which successes raise the limit again (additive increase).
    regrown = [call.in_flight for call in calls if call.at > first_success_end]
    assert regrown and max(regrown) >= 3, [(round(c.at - calls[0].at, 3), c.in_flight) for c in calls]


def test_timeouts_and_an_unreachable_upstream_are_retried(
    start_overnight: StartOvernight,
    upstream: ProgrammableUpstream,
    make_client: Callable[..., anthropic.Anthropic],
    tmp_path: Path,
) -> None:
    config = write_config(
        tmp_path,
        f"""
[backends.slow]
type = "anthropic"
base_url = "{upstream.base_url}"
timeout_seconds = 0.3

[backends.dead]
type = "anthropic"
base_url = "http://127.0.0.1:{free_port()}"

[[routes]]
model = "slow-*"
backend = "slow"

[[routes]]
model = "dead-*"
backend = "dead"
""",
    )
    front = start_overnight(
        "--config", str(config), "--max-attempts", "3", "--retry-base-delay", str(BASE_DELAY), backend="fake"
    )
    upstream.script("too slow once", success(delay_seconds=1.0))
    upstream.script("too slow always", *[success(delay_seconds=1.0)] * 5)
    requests = [
        {"custom_id": "once", "params": {"model": "slow-1", "max_tokens": 8, "messages": user("too slow once")}},
        {"custom_id": "always", "params": {"model": "slow-1", "max_tokens": 8, "messages": user("too slow always")}},
        {"custom_id": "dead", "params": {"model": "dead-1", "max_tokens": 8, "messages": user("anyone there?")}},
    ]
    batch, results = run_batch(make_client(front), requests, timeout=60)
    assert (batch.request_counts.succeeded, batch.request_counts.errored) == (1, 2)

    assert text_of(succeeded(results, "once")) == "upstream: too slow once"
    assert len(upstream.calls_for("too slow once")) == 2

    error_type, message = errored(results, "always")
    assert error_type == "api_error"
    assert "did not answer in time" in message, message
    assert len(upstream.calls_for("too slow always")) == 3

    error_type, message = errored(results, "dead")
    assert error_type == "api_error"
    assert "could not be reached" in message, message
    assert front.stderr_tail().count("backend anthropic:dead failed") == 2  # two retries logged: 3 attempts
