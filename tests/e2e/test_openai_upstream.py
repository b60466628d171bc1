"""`--backend openai` end to end: overnight in front of llama-cpp-python's own OpenAI-compatible server.

Two real servers on 127.0.0.1: `python -m llama_cpp.server` on the default SmolLM2-135M-Instruct GGUF (it
requires a bearer key) and `python -m overnight serve --backend openai --upstream-url ...`, driven by the
SDK. The checks are on the round trip: text, usage, stop
reasons, the client's model name, and a wrong key becoming an errored result without retries.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anthropic
import pytest

from tests.backends.conftest import LlamaServer
from tests.e2e.conftest import StartOvernight, errored, run_batch, succeeded, text_of, user
from tests.server import ServerProcess

pytestmark = pytest.mark.local_model

MODEL = "claude-via-llama"


@pytest.fixture(scope="module")
def front(start_overnight: StartOvernight, llama_server: LlamaServer) -> ServerProcess:
    return start_overnight(
        "--upstream-url",
        llama_server.base_url,
        "--upstream-api-key",
        llama_server.api_key,
        "--upstream-model",
        "gemma",
        backend="openai",
    )


@pytest.fixture
def client(front: ServerProcess, make_client: Callable[..., anthropic.Anthropic]) -> anthropic.Anthropic:
    return make_client(front, timeout=120.0)


def test_a_batch_through_llama_cpp_server(client: anthropic.Anthropic) -> None:
    requests: list[dict[str, Any]] = [
        {
            "custom_id": "sea",
            "params": {
                "model": MODEL,
                "max_tokens": 8,
                "temperature": 0.0,
                "messages": user("Write a sentence about the sea."),
            },
        },
        {
            "custom_id": "multi-turn",
            "params": {
                "model": MODEL,
                "max_tokens": 8,
                "temperature": 0.0,
                "system": "You are an astronomer.",
                "messages": [
                    {"role": "user", "content": "Hello."},
                    {"role": "assistant", "content": "Hello! How can I help?"},
                    {"role": "user", "content": [{"type": "text", "text": "Tell me about the moon."}]},
                ],
            },
        },
        {
            "custom_id": "short",
            "params": {"model": MODEL, "max_tokens": 3, "temperature": 0.0, "messages": user("Count to ten.")},
        },
    ]
    batch, results = run_batch(client, requests, timeout=120)
    assert batch.request_counts.succeeded == 3

    for request in requests:
        message = succeeded(results, request["custom_id"])
        assert message.type == "message" and message.role == "assistant"
        assert message.id.startswith("msg_")
        assert message.model == MODEL  # the client's name, though "gemma" went upstream
        assert text_of(message).strip(), message
        assert message.usage.input_tokens > 0
        assert 0 < message.usage.output_tokens <= request["params"]["max_tokens"]
        assert message.usage.service_tier == "batch"
        assert message.stop_reason in ("end_turn", "max_tokens")

    assert succeeded(results, "multi-turn").usage.input_tokens > succeeded(results, "sea").usage.input_tokens
    short = succeeded(results, "short")
    assert short.stop_reason == "max_tokens"
    assert short.usage.output_tokens == 3


def test_messages_create_and_count_tokens(client: anthropic.Anthropic) -> None:
    messages = user("Write a sentence about the sea.")
    message = client.messages.create(model=MODEL, max_tokens=4, messages=messages, extra_body={"temperature": 0.0})
    assert message.model == MODEL
    assert text_of(message).strip()
    assert 0 < message.usage.output_tokens <= 4
    assert message.usage.service_tier == "standard"

    counted = client.messages.count_tokens(model=MODEL, messages=messages)
    assert counted.input_tokens == message.usage.input_tokens


def test_a_wrong_upstream_key_errors_without_retries(
    start_overnight: StartOvernight,
    llama_server: LlamaServer,
    make_client: Callable[..., anthropic.Anthropic],
) -> None:
    wrong = start_overnight(
        "--upstream-url",
        llama_server.base_url,
        "--upstream-api-key",
        "not-the-key",
        "--retry-base-delay",
        "0.01",
        backend="openai",
    )
    before = llama_server.calls()
    requests: list[dict[str, Any]] = [
        {"custom_id": f"r{i}", "params": {"model": MODEL, "max_tokens": 4, "messages": user(f"Hello {i}.")}}
        for i in range(2)
    ]
    batch, results = run_batch(make_client(wrong), requests)
    assert batch.request_counts.errored == 2
    for custom_id in ("r0", "r1"):
        error_type, message = errored(results, custom_id)
        assert error_type == "authentication_error"
        assert message.strip()

    # One upstream call per request, as the llama server's own access log shows: 401 is not retried.
    calls = llama_server.calls()[len(before) :]
    assert len(calls) == 2, calls
    assert all(" 401 " in line for line in calls), calls
    assert "; retry " not in wrong.stderr_tail()


def test_stop_sequences_through_llama_cpp_server(client: anthropic.Anthropic) -> None:
    """llama-cpp-python applies the stop string but cannot say that it matched, so overnight says end_turn.

    Its server answers `finish_reason: "stop"` alike for an end-of-generation token, for the chat
    format's own stop string (`<|im_end|>` for SmolLM2's ChatML) and for a client's stop string, cuts the
    text before the match and reports nothing else: no `stop_reason` field as vLLM has. Overnight never
    claims a stop sequence it cannot prove matched (see `_stop_reason`). That the stop string did act
    is shown by the same greedy request without it, whose text runs past where the stopped one ends.
    """
    base = {"model": MODEL, "max_tokens": 32, "temperature": 0.0, "messages": user("Write a sentence about the sea.")}
    requests: list[dict[str, Any]] = [
        {"custom_id": "stopped", "params": {**base, "stop_sequences": [" "]}},
        {"custom_id": "free", "params": base},
    ]
    batch, results = run_batch(client, requests, timeout=120)
    assert batch.request_counts.succeeded == 2

    free_text = text_of(succeeded(results, "free"))
    stopped = succeeded(results, "stopped")
    text = text_of(stopped)
    assert stopped.type == "message" and stopped.role == "assistant"
    assert stopped.id.startswith("msg_") and stopped.model == MODEL
    assert stopped.usage.input_tokens > 0
    assert " " not in text
    # The stop string acted: the free reply goes on past it, and the stopped one is the text before it.
    assert " " in free_text, free_text
    assert text == free_text[: free_text.index(" ")]
    assert 0 < stopped.usage.output_tokens < 32
    # Nothing tells overnight which stop ended generation, so it claims no stop sequence.
    assert (stopped.stop_reason, stopped.stop_sequence) == ("end_turn", None)
