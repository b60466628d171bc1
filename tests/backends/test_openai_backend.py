"""OpenAIBackend end to end against llama-cpp-python's own OpenAI-compatible server on the default GGUF.

The model is SmolLM2-135M-Instruct, prompted by that server with the GGUF's own chat template; the
tests check what the backend owns — the round trip, stop reasons, usage and error mapping. That server
reports `finish_reason: "stop"` without saying which stop string matched, so a stop sequence comes back
as `end_turn` there (the backend uses only what the upstream reports; see the translation tests for
vLLM's `stop_reason`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from overnight.backends.openai import OpenAIBackend
from overnight.exceptions import ApiError, AuthenticationError, InvalidRequestError
from overnight.protocol.messages import MessageCreateParams
from tests.backends.conftest import LlamaServer
from tests.backends.upstreams import Reply, ScriptedUpstream
from tests.server import free_port


def make_params(**overrides: Any) -> MessageCreateParams:
    data: dict[str, Any] = {
        "model": "gemma-3-270m",
        "max_tokens": 16,
        "messages": [{"role": "user", "content": "Write a sentence about the sea."}],
        "temperature": 0.0,
    }
    data.update(overrides)
    return MessageCreateParams.model_validate(data)


@pytest.fixture
async def backend(llama_server: LlamaServer) -> AsyncIterator[OpenAIBackend]:
    backend = OpenAIBackend(
        base_url=llama_server.base_url, api_key=llama_server.api_key, upstream_model="gemma", timeout_seconds=60
    )
    yield backend
    await backend.aclose()


@pytest.mark.local_model
async def test_generates_real_text_with_usage(backend: OpenAIBackend) -> None:
    result = await backend.create_message(
        make_params(
            system="You are a poet.",
            messages=[
                {"role": "user", "content": "Hello."},
                {"role": "assistant", "content": "Hello! How can I help?"},
                {"role": "user", "content": [{"type": "text", "text": "Write a sentence about the sea."}]},
            ],
        )
    )
    assert result["type"] == "message"
    assert result["model"] == "gemma-3-270m"  # the client's name, not the upstream's
    assert result["id"].startswith("msg_")
    [block] = result["content"]
    assert block["type"] == "text" and block["text"].strip()
    assert result["stop_reason"] in ("end_turn", "max_tokens")
    assert result["usage"]["input_tokens"] > 10  # system + three turns + template
    assert 0 < result["usage"]["output_tokens"] <= 16
    assert result["usage"]["service_tier"] == "batch"


@pytest.mark.local_model
async def test_max_tokens_is_respected(backend: OpenAIBackend) -> None:
    result = await backend.create_message(make_params(max_tokens=3))
    assert result["stop_reason"] == "max_tokens"
    assert result["usage"]["output_tokens"] == 3


@pytest.mark.local_model
async def test_sampling_options_are_accepted(backend: OpenAIBackend) -> None:
    result = await backend.create_message(
        make_params(temperature=0.7, top_p=0.9, top_k=20, stop_sequences=["\n\n"], metadata={"user_id": "u1"})
    )
    assert result["usage"]["output_tokens"] > 0
    assert result["stop_reason"] in ("end_turn", "max_tokens")


@pytest.mark.local_model
async def test_context_overflow_is_an_invalid_request_with_the_upstream_message(backend: OpenAIBackend) -> None:
    params = make_params(messages=[{"role": "user", "content": "word " * 1500}])  # the server has n_ctx 1024
    with pytest.raises(InvalidRequestError, match="maximum context length"):
        await backend.create_message(params)


@pytest.mark.local_model
async def test_wrong_key_is_an_authentication_error(llama_server: LlamaServer) -> None:
    backend = OpenAIBackend(base_url=llama_server.base_url, api_key="wrong", timeout_seconds=30)
    try:
        with pytest.raises(AuthenticationError, match="Invalid API key"):
            await backend.create_message(make_params())
    finally:
        await backend.aclose()


async def test_refusals_happen_before_any_request() -> None:
    backend = OpenAIBackend(base_url=f"http://127.0.0.1:{free_port()}", timeout_seconds=5)  # nothing listens
    try:
        with pytest.raises(InvalidRequestError, match="extended thinking"):
            await backend.create_message(make_params(thinking={"type": "enabled", "budget_tokens": 1024}))
        with pytest.raises(ApiError, match="could not be reached"):
            await backend.create_message(make_params())
    finally:
        await backend.aclose()


@pytest.mark.parametrize(
    ("status", "expected"), [(429, "RateLimitError"), (503, "ApiError"), (422, "InvalidRequestError")]
)
async def test_openai_error_envelopes_map_like_anthropic_ones(
    scripted_upstream: ScriptedUpstream, status: int, expected: str
) -> None:
    """Failure injection (see `upstreams`): OpenAI's envelope and headers, answered by a real server."""
    backend = OpenAIBackend(base_url=scripted_upstream.base_url + "/v1", api_key="sk-test", timeout_seconds=5)
    envelope = {"error": {"message": f"status {status} here", "type": "requests", "param": None, "code": None}}
    scripted_upstream.queue(Reply(status, envelope, headers={"retry-after": "2"}))
    try:
        with pytest.raises(Exception) as caught:
            await backend.create_message(make_params())
    finally:
        await backend.aclose()
    assert type(caught.value).__name__ == expected
    assert caught.value.message == f"status {status} here"  # type: ignore[attr-defined]
    assert caught.value.retry_after_seconds == 2.0  # type: ignore[attr-defined]
    [sent] = scripted_upstream.requests
    assert sent.path == "/v1/chat/completions"
    assert sent.headers["authorization"] == "Bearer sk-test"
