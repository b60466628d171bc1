"""`--backend local` end to end: the real default GGUF (SmolLM2-135M-Instruct) in the server process, given
as `--model-path`, driven by the SDK.

These tests check the plumbing — non-empty text, token counts, stop reasons, refusals; what the default
model answers is checked in `test_default_serve`. Greedy decoding (temperature 0) keeps them repeatable;
`max_tokens` stays small to keep the tests quick on two CPU cores.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import anthropic
import pytest

from tests.api.helpers import assert_sdk_error
from tests.e2e.conftest import StartOvernight, errored, run_batch, succeeded, text_of, user
from tests.server import ServerProcess

pytestmark = pytest.mark.local_model

MODEL = "smollm2-135m"
STOP_PROMPT = "Repeat after me: the cat the cat the cat the cat"


@pytest.fixture(scope="module")
def local_server(start_overnight: StartOvernight, local_model_path: Path) -> ServerProcess:
    return start_overnight("--model-path", str(local_model_path), backend="local")


@pytest.fixture
def client(local_server: ServerProcess, make_client: Callable[..., anthropic.Anthropic]) -> anthropic.Anthropic:
    return make_client(local_server, timeout=120.0)


def params(messages: list[Any], max_tokens: int, **extra: Any) -> dict[str, Any]:
    return {"model": MODEL, "max_tokens": max_tokens, "messages": messages, **extra}


def test_a_batch_on_the_local_model(client: anthropic.Anthropic) -> None:
    sea = user("Write a sentence about the sea.")
    requests = [
        {"custom_id": "greedy", "params": params(sea, 8, temperature=0.0)},
        {
            "custom_id": "sampled-multi-turn",
            "params": params(
                [
                    {"role": "user", "content": "Hello."},
                    {"role": "assistant", "content": "Hello! How can I help?"},
                    {"role": "user", "content": [{"type": "text", "text": "Tell me about the moon."}]},
                ],
                6,
                system="You are an astronomer.",
            ),
        },
        {"custom_id": "short", "params": params(user("Count from one to ten."), 3, temperature=0.0)},
        {
            "custom_id": "stop",
            "params": params(user(STOP_PROMPT), 16, temperature=0.0, stop_sequences=["never-written-zzz", " "]),
        },
        {
            "custom_id": "image",
            "params": params(
                [
                    {
                        "role": "user",
                        "content": [
                            {"type": "text", "text": "What is in this picture?"},
                            {"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}},
                        ],
                    }
                ],
                8,
            ),
        },
    ]
    batch, results = run_batch(client, requests, timeout=150)
    assert (batch.request_counts.succeeded, batch.request_counts.errored) == (4, 1)

    for custom_id in ("greedy", "sampled-multi-turn", "short", "stop"):
        message = succeeded(results, custom_id)
        assert message.type == "message" and message.role == "assistant"
        assert message.id.startswith("msg_")
        assert message.model == MODEL
        assert message.usage.input_tokens > 0
        assert message.usage.output_tokens > 0
        assert message.usage.service_tier == "batch"

    greedy = succeeded(results, "greedy")
    assert text_of(greedy).strip(), greedy
    assert greedy.stop_reason in ("end_turn", "max_tokens")
    assert greedy.usage.output_tokens <= 8
    assert greedy.usage.input_tokens > 7  # the question's words plus the chat template's tokens

    # Sampled at the API's default temperature 1.0: anything may come, the first token may even end the turn.
    sampled = succeeded(results, "sampled-multi-turn")
    assert sampled.stop_reason in ("end_turn", "max_tokens")
    assert sampled.usage.output_tokens <= 6
    assert sampled.usage.input_tokens > greedy.usage.input_tokens  # system + three turns
    if sampled.stop_reason == "max_tokens":
        assert sampled.usage.output_tokens == 6

    # output_tokens counts every token produced (an end-of-turn one included), so max_tokens is exact.
    short = succeeded(results, "short")
    assert short.stop_reason == "max_tokens"
    assert short.stop_sequence is None
    assert short.usage.output_tokens == 3
    assert text_of(short).strip(), short

    stop = succeeded(results, "stop")
    assert stop.stop_reason == "stop_sequence", stop
    assert stop.stop_sequence == " "
    assert " " not in text_of(stop)
    assert stop.usage.output_tokens < 16

    error_type, message = errored(results, "image")
    assert error_type == "invalid_request_error"
    assert "image blocks" in message and "local backend" in message, message


def test_messages_create_and_count_tokens(client: anthropic.Anthropic) -> None:
    messages = user("Write a sentence about the sea.")
    message = client.messages.create(
        model=MODEL, max_tokens=4, messages=messages, system="You are a poet.", extra_body={"temperature": 0.0}
    )
    assert message.type == "message" and message.role == "assistant"
    assert message.id.startswith("msg_")
    assert message.model == MODEL
    assert message.stop_reason in ("end_turn", "max_tokens")
    assert text_of(message).strip()
    assert 0 < message.usage.output_tokens <= 4
    assert message.usage.service_tier == "standard"  # answered now, not in a batch

    counted = client.messages.count_tokens(model=MODEL, messages=messages, system="You are a poet.")
    # count_tokens tokenizes the very prompt a request would send: its usage counts the same tokens, those
    # llama.cpp found in its KV cache (the template's opening, after an earlier request) as cache reads.
    assert counted.input_tokens == message.usage.input_tokens + (message.usage.cache_read_input_tokens or 0)

    longer = client.messages.count_tokens(
        model=MODEL, messages=user("Write a sentence about the sea, the sky and the moon."), system="You are a poet."
    )
    assert longer.input_tokens > counted.input_tokens


def test_unsupported_features_are_refused_by_messages_create(client: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.BadRequestError) as caught:
        client.messages.create(
            model=MODEL,
            max_tokens=4,
            messages=user("What is the weather?"),
            tools=[{"name": "get_weather", "input_schema": {"type": "object"}}],
        )
    message = assert_sdk_error(caught.value, 400, "invalid_request_error")
    assert "tools" in message and "local backend" in message, message
