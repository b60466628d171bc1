"""AnthropicBackend against a real HTTP upstream on 127.0.0.1.

The upstream is the failure-injecting `ScriptedUpstream` (see its docstring for why that is legitimate
here): it lets each test make the upstream answer 429 with `retry-after`, 529, 5xx, 413, slowly, or
with a Message, and records exactly what the backend sent.
"""

from __future__ import annotations

import email.utils
import time
from typing import Any

import pytest

from overnight.backends.anthropic import AnthropicBackend
from overnight.exceptions import (
    ApiError,
    AuthenticationError,
    InvalidRequestError,
    NotFoundError,
    OverloadedError,
    OvernightError,
    PermissionDeniedError,
    RateLimitError,
    RequestTooLargeError,
    UpstreamTimeoutError,
)
from overnight.protocol.messages import MessageCreateParams
from tests.backends.upstreams import Reply, ScriptedUpstream
from tests.server import free_port

# What the real API returns for a simple request (shape from the Messages API reference).
UPSTREAM_MESSAGE: dict[str, Any] = {
    "id": "msg_013Zva2CMHLNnXjNJJKqJ2EF",
    "type": "message",
    "role": "assistant",
    "model": "claude-sonnet-4-5-20250929",
    "content": [{"type": "text", "text": "Hi! My name is Claude."}],
    "stop_reason": "end_turn",
    "stop_sequence": None,
    "usage": {
        "input_tokens": 12,
        "output_tokens": 9,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
        "service_tier": "standard",
    },
}


def make_params(**overrides: Any) -> MessageCreateParams:
    data: dict[str, Any] = {
        "model": "claude-sonnet-4-5",
        "max_tokens": 64,
        "messages": [{"role": "user", "content": "Hello, Claude"}],
    }
    data.update(overrides)
    return MessageCreateParams.model_validate(data)


def error_body(error_type: str, message: str) -> dict[str, Any]:
    return {
        "type": "error",
        "error": {"type": error_type, "message": message},
        "request_id": "req_011CSHoEeqs5C35K2UUqR7Fy",
    }


@pytest.fixture
async def backend(scripted_upstream: ScriptedUpstream) -> Any:
    backend = AnthropicBackend(base_url=scripted_upstream.base_url, api_key="sk-ant-test", timeout_seconds=5)
    yield backend
    await backend.aclose()


async def test_success_passes_the_message_through(
    backend: AnthropicBackend, scripted_upstream: ScriptedUpstream
) -> None:
    scripted_upstream.queue(Reply(200, UPSTREAM_MESSAGE))
    params = make_params(
        system=[{"type": "text", "text": "Be terse.", "cache_control": {"type": "ephemeral"}}],
        temperature=0.2,
        stop_sequences=["\n\nHuman:"],
        metadata={"user_id": "u-1"},
        **{"anthropic-beta": "context-1m-2025-08-07,files-api-2025-04-14"},
    )

    result = await backend.create_message(params)

    expected = {**UPSTREAM_MESSAGE, "usage": {**UPSTREAM_MESSAGE["usage"], "service_tier": "batch"}}
    assert result == expected  # untouched but for the batch tier; the upstream's resolved model name stays
    [sent] = scripted_upstream.requests
    assert sent.path == "/v1/messages"
    assert sent.headers["x-api-key"] == "sk-ant-test"
    assert sent.headers["anthropic-version"] == "2023-06-01"
    assert sent.headers["anthropic-beta"] == "context-1m-2025-08-07,files-api-2025-04-14"
    assert sent.body == {**params.forwardable(), "stream": False}
    assert "anthropic-beta" not in sent.body and "betas" not in sent.body


async def test_upstream_model_rename_is_sent_and_the_client_name_echoed(scripted_upstream: ScriptedUpstream) -> None:
    backend = AnthropicBackend(
        base_url=scripted_upstream.base_url + "/v1/", upstream_model="claude-haiku-4-5", timeout_seconds=5
    )
    try:
        scripted_upstream.queue(Reply(200, {**UPSTREAM_MESSAGE, "model": "claude-haiku-4-5-20251001"}))
        result = await backend.create_message(make_params(model="house-model"))
    finally:
        await backend.aclose()
    [sent] = scripted_upstream.requests
    assert sent.path == "/v1/messages"  # a base URL ending in /v1 is understood
    assert sent.body["model"] == "claude-haiku-4-5"
    assert "x-api-key" not in sent.headers  # none configured, none sent
    assert result["model"] == "house-model"


@pytest.mark.parametrize(
    ("status", "error_type", "expected"),
    [
        (400, "invalid_request_error", InvalidRequestError),
        (401, "authentication_error", AuthenticationError),
        (403, "permission_error", PermissionDeniedError),
        (404, "not_found_error", NotFoundError),
        (413, "request_too_large", RequestTooLargeError),
        (429, "rate_limit_error", RateLimitError),
        (500, "api_error", ApiError),
        (502, "api_error", ApiError),
        (529, "overloaded_error", OverloadedError),
    ],
)
async def test_upstream_errors_map_to_typed_errors_with_their_message(
    backend: AnthropicBackend,
    scripted_upstream: ScriptedUpstream,
    status: int,
    error_type: str,
    expected: type[OvernightError],
) -> None:
    scripted_upstream.queue(Reply(status, error_body(error_type, f"upstream says {status}")))
    with pytest.raises(OvernightError) as caught:
        await backend.create_message(make_params())
    assert type(caught.value) is expected
    assert caught.value.message == f"upstream says {status}"
    assert caught.value.retry_after_seconds is None


async def test_rate_limit_carries_retry_after_seconds(
    backend: AnthropicBackend, scripted_upstream: ScriptedUpstream
) -> None:
    scripted_upstream.queue(Reply(429, error_body("rate_limit_error", "slow down"), headers={"retry-after": "17"}))
    with pytest.raises(RateLimitError) as caught:
        await backend.create_message(make_params())
    assert caught.value.retry_after_seconds == 17.0
    assert caught.value.retryable


async def test_retry_after_ms_is_preferred(backend: AnthropicBackend, scripted_upstream: ScriptedUpstream) -> None:
    scripted_upstream.queue(
        Reply(429, error_body("rate_limit_error", "slow down"), headers={"retry-after": "3", "retry-after-ms": "2500"})
    )
    with pytest.raises(RateLimitError) as caught:
        await backend.create_message(make_params())
    assert caught.value.retry_after_seconds == 2.5


async def test_retry_after_as_http_date_on_overload(
    backend: AnthropicBackend, scripted_upstream: ScriptedUpstream
) -> None:
    when = email.utils.formatdate(time.time() + 30, usegmt=True)
    scripted_upstream.queue(Reply(529, error_body("overloaded_error", "Overloaded"), headers={"retry-after": when}))
    with pytest.raises(OverloadedError) as caught:
        await backend.create_message(make_params())
    assert caught.value.retry_after_seconds is not None
    assert 25 <= caught.value.retry_after_seconds <= 31


async def test_error_body_that_is_not_json_is_quoted(
    backend: AnthropicBackend, scripted_upstream: ScriptedUpstream
) -> None:
    scripted_upstream.queue(Reply(503, raw=b"upstream connect error or disconnect/reset before headers"))
    with pytest.raises(ApiError, match="upstream connect error"):
        await backend.create_message(make_params())


async def test_413_without_envelope_says_request_too_large(
    backend: AnthropicBackend, scripted_upstream: ScriptedUpstream
) -> None:
    scripted_upstream.queue(Reply(413, raw=b""))
    with pytest.raises(RequestTooLargeError, match="request_too_large"):
        await backend.create_message(make_params())


async def test_success_status_with_a_non_message_body_is_an_api_error(
    backend: AnthropicBackend, scripted_upstream: ScriptedUpstream
) -> None:
    scripted_upstream.queue(Reply(200, {"type": "completion", "completion": "hi"}))
    with pytest.raises(ApiError, match="not a message"):
        await backend.create_message(make_params())


async def test_slow_upstream_is_an_upstream_timeout(scripted_upstream: ScriptedUpstream) -> None:
    backend = AnthropicBackend(base_url=scripted_upstream.base_url, timeout_seconds=0.3)
    scripted_upstream.queue(Reply(200, UPSTREAM_MESSAGE, delay_seconds=2))
    try:
        with pytest.raises(UpstreamTimeoutError) as caught:
            await backend.create_message(make_params())
    finally:
        await backend.aclose()
    assert caught.value.retryable


async def test_unreachable_upstream_is_a_retryable_api_error() -> None:
    backend = AnthropicBackend(base_url=f"http://127.0.0.1:{free_port()}", timeout_seconds=5)
    try:
        with pytest.raises(ApiError, match="could not be reached") as caught:
            await backend.create_message(make_params())
    finally:
        await backend.aclose()
    assert type(caught.value) is ApiError
    assert caught.value.retryable


async def test_parameters_overnight_does_not_know_go_upstream_as_sent(
    backend: AnthropicBackend, scripted_upstream: ScriptedUpstream
) -> None:
    # Newer API parameters (the SDK already sends these) reach an Anthropic upstream untouched, while
    # the header-like keys never travel as params, whichever spelling (or both) was used.
    scripted_upstream.queue(Reply(200, UPSTREAM_MESSAGE))
    fallbacks = [{"model": "claude-haiku-4-5"}]
    params = make_params(fallbacks=fallbacks, thread={"id": "thr_1"}, betas=["a-2025"], **{"anthropic-beta": "b-2025"})
    assert params.unknown_keys() == ["fallbacks", "thread"]
    await backend.create_message(params)
    [sent] = scripted_upstream.requests
    assert sent.body["fallbacks"] == fallbacks and sent.body["thread"] == {"id": "thr_1"}
    assert not {"betas", "anthropic-beta"} & set(sent.body)
