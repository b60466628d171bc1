"""`--backend anthropic` end to end: one overnight in front of another (the upstream runs the fake backend).

The upstream requires a key (`--api-key`), which the front sends (`--upstream-api-key`). The same batch run
on the upstream directly and through the front must give the same results: the fake backend's echo, its
stop reasons and its word-count usage pass through unchanged. A wrong key becomes `authentication_error`
results, each after exactly one upstream call (the upstream's access log counts them).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anthropic
import pytest

from tests.e2e.conftest import StartOvernight, errored, run_batch, succeeded, text_of, user
from tests.server import ServerProcess

UPSTREAM_KEY = "upstream-secret"
MODEL = "claude-e2e-echo"


@pytest.fixture(scope="module")
def upstream(start_overnight: StartOvernight) -> ServerProcess:
    # debug: uvicorn's access log (stdout) lists every call the upstream receives
    return start_overnight("--api-key", UPSTREAM_KEY, "--log-level", "debug", backend="fake")


@pytest.fixture(scope="module")
def front(start_overnight: StartOvernight, upstream: ServerProcess) -> ServerProcess:
    return start_overnight("--upstream-url", upstream.base_url, "--upstream-api-key", UPSTREAM_KEY, backend="anthropic")


def upstream_calls(upstream: ServerProcess, path: str = "/v1/messages") -> list[str]:
    log = upstream.stdout_path.read_text(errors="replace")
    return [line for line in log.splitlines() if f'"POST {path} HTTP/1.1"' in line]


def fake_requests() -> list[dict[str, Any]]:
    def req(custom_id: str, **params: Any) -> dict[str, Any]:
        return {"custom_id": custom_id, "params": {"model": MODEL, "max_tokens": 64, **params}}

    return [
        req("plain", messages=user("hello there general kenobi")),
        req("cut", max_tokens=2, messages=user("one two three four five")),
        req("stop", messages=user("alpha beta STOP gamma"), stop_sequences=["zzz", " STOP"]),
        req(
            "conversation",
            system="be brief",
            messages=[
                {"role": "user", "content": "first question"},
                {"role": "assistant", "content": "first answer"},
                {"role": "user", "content": [{"type": "text", "text": "second"}, {"type": "text", "text": "part"}]},
            ],
        ),
        req("beta-fields", messages=user("with metadata"), metadata={"user_id": "u-1"}, temperature=0.5, top_k=3),
    ]


def comparable(message: Any) -> dict[str, Any]:
    data = message.model_dump()
    data.pop("id")
    return data


def test_a_batch_gives_what_the_fake_backend_gives(
    front: ServerProcess, upstream: ServerProcess, make_client: Callable[..., anthropic.Anthropic]
) -> None:
    requests = fake_requests()
    direct_batch, direct = run_batch(make_client(upstream, api_key=UPSTREAM_KEY), requests)
    before = len(upstream_calls(upstream))
    batch, proxied = run_batch(make_client(front), requests)
    assert batch.request_counts.succeeded == direct_batch.request_counts.succeeded == len(requests)
    assert len(upstream_calls(upstream)) - before == len(requests)  # one call each, every one a success

    for request in requests:
        custom_id = request["custom_id"]
        message = succeeded(proxied, custom_id)
        assert message.id.startswith("msg_")
        assert comparable(message) == comparable(succeeded(direct, custom_id)), custom_id
        assert message.usage.service_tier == "batch"
        assert message.model == MODEL

    # ...and what the fake backend gives is its documented echo.
    expected = {
        "plain": ("hello there general kenobi", "end_turn", None, 4, 4),
        "cut": ("one two", "max_tokens", None, 5, 2),
        "stop": ("alpha beta", "stop_sequence", " STOP", 4, 2),
        "conversation": ("second part", "end_turn", None, 8, 2),
        "beta-fields": ("with metadata", "end_turn", None, 2, 2),
    }
    for custom_id, (text, stop_reason, stop_sequence, input_tokens, output_tokens) in expected.items():
        message = succeeded(proxied, custom_id)
        assert text_of(message) == text, custom_id
        assert (message.stop_reason, message.stop_sequence) == (stop_reason, stop_sequence), custom_id
        assert (message.usage.input_tokens, message.usage.output_tokens) == (input_tokens, output_tokens), custom_id


def test_messages_create_and_count_tokens_pass_through(
    front: ServerProcess, upstream: ServerProcess, make_client: Callable[..., anthropic.Anthropic]
) -> None:
    client = make_client(front)
    direct = make_client(upstream, api_key=UPSTREAM_KEY)

    message = client.messages.create(
        model=MODEL, max_tokens=3, messages=user("one two three four"), system="sys prompt words"
    )
    assert message.id.startswith("msg_")
    assert text_of(message) == "one two three"
    assert message.stop_reason == "max_tokens"
    assert (message.usage.input_tokens, message.usage.output_tokens) == (7, 3)
    assert message.usage.service_tier == "standard"
    assert message.model == MODEL

    before = len(upstream_calls(upstream, "/v1/messages/count_tokens"))
    counted = client.messages.count_tokens(model=MODEL, messages=user("one two three four"), system="sys prompt words")
    assert counted.input_tokens == 7
    assert (
        counted.input_tokens
        == direct.messages.count_tokens(
            model=MODEL, messages=user("one two three four"), system="sys prompt words"
        ).input_tokens
    )
    # the front's call and the direct one
    assert len(upstream_calls(upstream, "/v1/messages/count_tokens")) - before == 2


def test_a_wrong_upstream_key_errors_without_retries(
    start_overnight: StartOvernight, upstream: ServerProcess, make_client: Callable[..., anthropic.Anthropic]
) -> None:
    wrong = start_overnight(
        "--upstream-url",
        upstream.base_url,
        "--upstream-api-key",
        "not-the-key",
        "--retry-base-delay",
        "0.01",
        backend="anthropic",
    )
    before = upstream_calls(upstream)
    requests: list[dict[str, Any]] = [
        {"custom_id": f"r{i}", "params": {"model": MODEL, "max_tokens": 8, "messages": user(f"hi {i}")}}
        for i in range(3)
    ]
    batch, results = run_batch(make_client(wrong), requests)
    assert batch.request_counts.errored == 3
    for request in requests:
        error_type, message = errored(results, request["custom_id"])
        assert error_type == "authentication_error"
        assert message == "invalid x-api-key"  # the upstream's own message

    new_calls = upstream_calls(upstream)[len(before) :]
    assert len(new_calls) == 3, new_calls  # exactly one call per request: 401 is not retried
    assert all(line.rstrip().endswith("401 Unauthorized") for line in new_calls), new_calls
    assert "; retry " not in wrong.stderr_tail()
