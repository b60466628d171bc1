"""Results: the fake backend's exact outputs, errored lines, the JSONL body and `results_url`."""

from __future__ import annotations

import json
from typing import Any

import anthropic
import httpx
import pytest

from tests.api.helpers import (
    MESSAGE_ID_RE,
    MODEL,
    REQUEST_ID_RE,
    assert_error,
    assert_request_id,
    async_sdk_results,
    async_wait_for_end,
    compact,
    expected_text,
    make_requests,
    parse_jsonl,
    request,
    sdk_results,
    wait_for_end,
)
from tests.server import ServerProcess

# custom_id -> (request, expected text, stop_reason, stop_sequence, input_tokens, output_tokens)
FAKE_CASES: dict[str, tuple[dict[str, Any], str, str, str | None, int, int]] = {
    "plain": (
        request("plain", "hello there general kenobi", max_tokens=100),
        "hello there general kenobi",
        "end_turn",
        None,
        4,
        4,
    ),
    "system": (request("system", "one two", system="be very brief"), "one two", "end_turn", None, 5, 2),
    "system-blocks": (
        request(
            "system-blocks", "x y", system=[{"type": "text", "text": "sys a"}, {"type": "text", "text": "sys b c"}]
        ),
        "x y",
        "end_turn",
        None,
        7,
        2,
    ),
    "stop": (
        request("stop", "alpha beta STOP gamma", stop_sequences=["STOP"]),
        "alpha beta ",
        "stop_sequence",
        "STOP",
        4,
        2,
    ),
    "stop-earliest": (
        request("stop-earliest", "a b END c STOP d", stop_sequences=["STOP", "END"]),
        "a b ",
        "stop_sequence",
        "END",
        6,
        2,
    ),
    "stop-before-max": (
        request("stop-before-max", "w1 w2 w3 HALT w4", stop_sequences=["HALT"], max_tokens=2),
        "w1 w2 w3 ",
        "stop_sequence",
        "HALT",
        5,
        3,
    ),
    "stop-at-start": (request("stop-at-start", "HALT now", stop_sequences=["HALT"]), "", "stop_sequence", "HALT", 2, 1),
    "stop-absent": (
        request("stop-absent", "nothing here", stop_sequences=["zzz"]),
        "nothing here",
        "end_turn",
        None,
        2,
        2,
    ),
    "maxtok": (request("maxtok", "a b c d e f", max_tokens=3), "a b c", "max_tokens", None, 6, 3),
    "exact-max": (request("exact-max", "a b c", max_tokens=3), "a b c", "end_turn", None, 3, 3),
    "maxtok-one": (request("maxtok-one", "first second", max_tokens=1), "first", "max_tokens", None, 2, 1),
    "blocks": (
        request(
            "blocks",
            "ignored",
            messages=[
                {"role": "user", "content": [{"type": "text", "text": "foo bar"}, {"type": "text", "text": "baz"}]}
            ],
        ),
        "foo bar baz",
        "end_turn",
        None,
        3,
        3,
    ),
    "multi-turn": (
        request(
            "multi-turn",
            "ignored",
            messages=[
                {"role": "user", "content": "first question here"},
                {"role": "assistant", "content": "an answer"},
                {"role": "user", "content": "second question"},
            ],
        ),
        "second question",
        "end_turn",
        None,
        7,
        2,
    ),
    "prefill": (
        request(
            "prefill",
            "ignored",
            messages=[{"role": "user", "content": "hi there"}, {"role": "assistant", "content": "prefill words"}],
        ),
        "hi there",
        "end_turn",
        None,
        4,
        2,
    ),
    "whitespace": (request("whitespace", "  spaced   out\twords  "), "  spaced   out\twords  ", "end_turn", None, 3, 3),
    "unicode": (request("unicode", 'héllo wörld ☃ "quoted"'), 'héllo wörld ☃ "quoted"', "end_turn", None, 4, 4),
    "model-echo": (
        request("model-echo", "any model works", model="definitely-not-a-real-model-7"),
        "any model works",
        "end_turn",
        None,
        3,
        3,
    ),
}

# custom_id -> (params, field the message must start with)
INVALID_CASES: dict[str, tuple[dict[str, Any], str]] = {
    "no-max-tokens": ({"model": MODEL, "messages": [{"role": "user", "content": "x"}]}, "max_tokens"),
    "zero-max-tokens": (
        {"model": MODEL, "max_tokens": 0, "messages": [{"role": "user", "content": "x"}]},
        "max_tokens",
    ),
    "string-max-tokens": (
        {"model": MODEL, "max_tokens": "many", "messages": [{"role": "user", "content": "x"}]},
        "max_tokens",
    ),
    "no-model": ({"max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}, "model"),
    "no-messages": ({"model": MODEL, "max_tokens": 5}, "messages"),
    "empty-messages": ({"model": MODEL, "max_tokens": 5, "messages": []}, "messages"),
    "bad-role": (
        {"model": MODEL, "max_tokens": 5, "messages": [{"role": "system", "content": "x"}]},
        "messages.0.role",
    ),
    "second-bad-role": (
        {
            "model": MODEL,
            "max_tokens": 5,
            "messages": [{"role": "user", "content": "x"}, {"role": "robot", "content": "y"}],
        },
        "messages.1.role",
    ),
    "no-content": ({"model": MODEL, "max_tokens": 5, "messages": [{"role": "user"}]}, "messages.0.content"),
    "hot": (
        {"model": MODEL, "max_tokens": 5, "temperature": 1.5, "messages": [{"role": "user", "content": "x"}]},
        "temperature",
    ),
    "top-p": ({"model": MODEL, "max_tokens": 5, "top_p": 2, "messages": [{"role": "user", "content": "x"}]}, "top_p"),
    "top-k": ({"model": MODEL, "max_tokens": 5, "top_k": -1, "messages": [{"role": "user", "content": "x"}]}, "top_k"),
    "stream": (
        {"model": MODEL, "max_tokens": 5, "stream": True, "messages": [{"role": "user", "content": "x"}]},
        "stream",
    ),
    "unknown-key": (
        {"model": MODEL, "max_tokens": 5, "frobnicate": 1, "messages": [{"role": "user", "content": "x"}]},
        "frobnicate",
    ),
    "system-int": (
        {"model": MODEL, "max_tokens": 5, "system": 42, "messages": [{"role": "user", "content": "x"}]},
        "system",
    ),
    "bad-block": (
        {"model": MODEL, "max_tokens": 5, "messages": [{"role": "user", "content": [{"type": "bogus"}]}]},
        "messages.0.content",
    ),
    "thinking-budget": (
        {
            "model": MODEL,
            "max_tokens": 5,
            "thinking": {"type": "enabled", "budget_tokens": 10},
            "messages": [{"role": "user", "content": "x"}],
        },
        "thinking",
    ),
    "tool-choice": (
        {
            "model": MODEL,
            "max_tokens": 5,
            "tool_choice": {"type": "sometimes"},
            "messages": [{"role": "user", "content": "x"}],
        },
        "tool_choice",
    ),
    "tools-not-list": (
        {"model": MODEL, "max_tokens": 5, "tools": {"name": "t"}, "messages": [{"role": "user", "content": "x"}]},
        "tools",
    ),
    "metadata-extra": (
        {
            "model": MODEL,
            "max_tokens": 5,
            "metadata": {"user_id": "u", "secret": 1},
            "messages": [{"role": "user", "content": "x"}],
        },
        "metadata",
    ),
    "stop-not-list": (
        {"model": MODEL, "max_tokens": 5, "stop_sequences": "STOP", "messages": [{"role": "user", "content": "x"}]},
        "stop_sequences",
    ),
    # Types are strict, as the API's: a numeric string is not a number, 0 is not false.
    "numeric-string-max-tokens": (
        {"model": MODEL, "max_tokens": "5", "messages": [{"role": "user", "content": "x"}]},
        "max_tokens",
    ),
    "numeric-string-temperature": (
        {"model": MODEL, "max_tokens": 5, "temperature": "0.5", "messages": [{"role": "user", "content": "x"}]},
        "temperature",
    ),
    "bool-max-tokens": (
        {"model": MODEL, "max_tokens": True, "messages": [{"role": "user", "content": "x"}]},
        "max_tokens",
    ),
    "stream-zero": (
        {"model": MODEL, "max_tokens": 5, "stream": 0, "messages": [{"role": "user", "content": "x"}]},
        "stream",
    ),
    # Rules between fields.
    "budget-over-max-tokens": (
        {
            "model": MODEL,
            "max_tokens": 2000,
            "thinking": {"type": "enabled", "budget_tokens": 2000},
            "messages": [{"role": "user", "content": "x"}],
        },
        "thinking.budget_tokens",
    ),
    "tool-choice-without-tools": (
        {
            "model": MODEL,
            "max_tokens": 5,
            "tool_choice": {"type": "any"},
            "messages": [{"role": "user", "content": "x"}],
        },
        "tool_choice",
    ),
    "tool-choice-unknown-tool": (
        {
            "model": MODEL,
            "max_tokens": 5,
            "tool_choice": {"type": "tool", "name": "b"},
            "tools": [{"name": "a", "input_schema": {"type": "object"}}],
            "messages": [{"role": "user", "content": "x"}],
        },
        "tool_choice.name",
    ),
}


class ServerProcessView:
    """Just enough of a ServerProcess for make_client: another URL for the same server."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url


def _submit_and_wait(client: anthropic.Anthropic, requests: list[dict[str, Any]]) -> str:
    batch = client.messages.batches.create(requests=requests)  # type: ignore[arg-type]
    ended = wait_for_end(client, batch.id, total=len(requests))
    assert ended.processing_status == "ended"
    return batch.id


def _raw_lines(raw: httpx.Client, results_url: str) -> list[dict[str, Any]]:
    response = raw.get(results_url, headers={"accept": "application/binary"})
    assert response.status_code == 200, response.text
    assert_request_id(response)
    assert response.headers["content-type"].startswith("application/x-jsonl"), response.headers
    return parse_jsonl(response.content)


def test_fake_backend_outputs_exactly(client: anthropic.Anthropic, raw: httpx.Client) -> None:
    requests = [case[0] for case in FAKE_CASES.values()]
    batch_id = _submit_and_wait(client, requests)
    batch = client.messages.batches.retrieve(batch_id)
    assert batch.request_counts.succeeded == len(FAKE_CASES)
    assert batch.request_counts.errored == 0

    assert batch.results_url is not None
    lines = {line["custom_id"]: line for line in _raw_lines(raw, batch.results_url)}
    assert set(lines) == set(FAKE_CASES)
    for custom_id, (req, text, stop_reason, stop_sequence, input_tokens, output_tokens) in FAKE_CASES.items():
        line = lines[custom_id]
        assert set(line) == {"custom_id", "result"}, line
        assert line["result"]["type"] == "succeeded", line
        assert set(line["result"]) == {"type", "message"}, line
        message = line["result"]["message"]
        assert MESSAGE_ID_RE.match(message["id"]), message
        assert message["type"] == "message"
        assert message["role"] == "assistant"
        assert message["model"] == req["params"]["model"], (custom_id, message)
        assert message["content"] == [{"type": "text", "text": text, "citations": None}], (custom_id, message)
        assert message["stop_reason"] == stop_reason, (custom_id, message)
        assert "stop_sequence" in message and message["stop_sequence"] == stop_sequence, (custom_id, message)
        usage = message["usage"]
        assert usage["input_tokens"] == input_tokens, (custom_id, usage)
        assert usage["output_tokens"] == output_tokens, (custom_id, usage)
        assert "cache_creation_input_tokens" in usage and usage["cache_creation_input_tokens"] is None
        assert "cache_read_input_tokens" in usage and usage["cache_read_input_tokens"] is None
        assert usage["service_tier"] == "batch"

    # The SDK decodes the same results into typed objects.
    typed = sdk_results(client, batch_id)
    assert set(typed) == set(FAKE_CASES)
    for custom_id, (_req, text, stop_reason, stop_sequence, _i, _o) in FAKE_CASES.items():
        result = typed[custom_id].result
        assert result.type == "succeeded"
        assert result.message.content[0].type == "text"
        assert result.message.content[0].text == text
        assert result.message.stop_reason == stop_reason
        assert result.message.stop_sequence == stop_sequence
    message_ids = [typed[c].result.message.id for c in typed]
    assert len(set(message_ids)) == len(message_ids), "message ids repeat"


def test_invalid_params_become_errored_results(client: anthropic.Anthropic, raw: httpx.Client) -> None:
    requests: list[dict[str, Any]] = [request("valid-before", "fine one")]
    requests += [{"custom_id": cid, "params": params} for cid, (params, _field) in INVALID_CASES.items()]
    requests.append(request("valid-after", "fine two"))
    batch_id = _submit_and_wait(client, requests)
    batch = client.messages.batches.retrieve(batch_id)
    assert batch.request_counts.errored == len(INVALID_CASES)
    assert batch.request_counts.succeeded == 2
    assert batch.request_counts.canceled == batch.request_counts.expired == 0

    assert batch.results_url is not None
    lines = {line["custom_id"]: line for line in _raw_lines(raw, batch.results_url)}
    assert set(lines) == {r["custom_id"] for r in requests}
    assert lines["valid-before"]["result"]["message"]["content"][0]["text"] == "fine one"
    assert lines["valid-after"]["result"]["message"]["content"][0]["text"] == "fine two"
    for custom_id, (_params, field) in INVALID_CASES.items():
        result = lines[custom_id]["result"]
        assert result["type"] == "errored", (custom_id, result)
        assert set(result) == {"type", "error"}, result
        envelope = result["error"]
        assert set(envelope) == {"type", "error", "request_id"}, envelope
        assert envelope["type"] == "error", envelope
        assert REQUEST_ID_RE.match(envelope["request_id"]), envelope
        assert envelope["error"]["type"] == "invalid_request_error", (custom_id, envelope)
        message = envelope["error"]["message"]
        assert isinstance(message, str)
        assert message.startswith(f"{field}:") or message.startswith(f"{field}."), (custom_id, message)
    assert "required" in lines["no-max-tokens"]["result"]["error"]["error"]["message"].lower()

    typed = sdk_results(client, batch_id)
    for custom_id in INVALID_CASES:
        result = typed[custom_id].result
        assert result.type == "errored"
        assert result.error.type == "error"
        assert result.error.error.type == "invalid_request_error"


def test_tolerated_and_rich_params_succeed(client: anthropic.Anthropic) -> None:
    requests = [
        request(
            "renamed-headers",
            "renamed ok",
            **{"anthropic-beta": ["some-beta-2025-01-01"], "anthropic-user-profile-id": "profile-1"},
        ),
        request("plain-headers", "plain ok", betas=["some-beta-2025-01-01"], user_profile_id="profile-1"),
        request(
            "rich",
            "rich ok",
            temperature=0.5,
            top_p=0.9,
            top_k=5,
            metadata={"user_id": "u-1"},
            stop_sequences=[],
            stream=False,
            tools=[
                {
                    "name": "get_weather",
                    "description": "weather",
                    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
                }
            ],
            tool_choice={"type": "auto"},
        ),
        request("boundaries", "bounds ok", temperature=1, top_p=0, top_k=0, max_tokens=1),
    ]
    batch_id = _submit_and_wait(client, requests)
    results = sdk_results(client, batch_id)
    assert {cid: r.result.type for cid, r in results.items()} == {r["custom_id"]: "succeeded" for r in requests}
    assert results["renamed-headers"].result.message.content[0].text == "renamed ok"
    assert results["plain-headers"].result.message.content[0].text == "plain ok"
    assert results["rich"].result.message.content[0].text == "rich ok"
    assert results["boundaries"].result.message.content[0].text == "bounds"
    assert results["boundaries"].result.message.stop_reason == "max_tokens"


def test_raw_results_body_is_strict_jsonl(client: anthropic.Anthropic, raw: httpx.Client) -> None:
    requests = make_requests(60, prefix="jsonl")
    batch_id = _submit_and_wait(client, requests)
    batch = client.messages.batches.retrieve(batch_id)
    assert batch.results_url is not None
    response = raw.get(batch.results_url, headers={"accept": "application/binary"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/x-jsonl")
    body = response.content
    lines = parse_jsonl(body)
    assert len(lines) == 60
    assert sorted(line["custom_id"] for line in lines) == sorted(r["custom_id"] for r in requests)
    by_id = {line["custom_id"]: line for line in lines}
    for req in requests:
        assert by_id[req["custom_id"]]["result"]["message"]["content"][0]["text"] == expected_text(req)
    # Each line is one compact JSON object.
    for raw_line in body.split(b"\n")[:-1]:
        assert raw_line == compact(json.loads(raw_line)), raw_line[:200]


def test_results_url_is_absolute_for_this_server(client: anthropic.Anthropic, server: ServerProcess) -> None:
    batch_id = _submit_and_wait(client, make_requests(1, prefix="url"))
    batch = client.messages.batches.retrieve(batch_id)
    assert batch.results_url == f"{server.base_url}/v1/messages/batches/{batch_id}/results"
    assert "{" not in batch.results_url and "}" not in batch.results_url


def test_results_url_follows_the_request_host(make_client: Any, server: ServerProcess) -> None:
    """Without --public-url the base is the scheme/host the request came in on."""
    seed = make_client(server)
    batch_id = _submit_and_wait(seed, make_requests(1, prefix="host"))
    via_localhost = make_client(ServerProcessView(f"http://localhost:{server.port}"))
    batch = via_localhost.messages.batches.retrieve(batch_id)
    assert batch.results_url == f"http://localhost:{server.port}/v1/messages/batches/{batch_id}/results"
    assert [r.custom_id for r in via_localhost.messages.batches.results(batch_id)] == ["host-0"]


def test_every_request_has_exactly_one_line_in_a_larger_batch(client: anthropic.Anthropic) -> None:
    requests = make_requests(300, prefix="big")
    batch_id = _submit_and_wait(client, requests)
    results = sdk_results(client, batch_id)
    assert len(results) == 300
    for req in requests:
        result = results[req["custom_id"]].result
        assert result.type == "succeeded"
        assert result.message.content[0].text == expected_text(req)


async def test_async_results(async_client: anthropic.AsyncAnthropic) -> None:
    requests = make_requests(7, prefix="aresults")
    batch = await async_client.messages.batches.create(requests=requests)  # type: ignore[arg-type]
    await async_wait_for_end(async_client, batch.id, total=7)
    results = await async_sdk_results(async_client, batch.id)
    assert set(results) == {r["custom_id"] for r in requests}
    for req in requests:
        assert results[req["custom_id"]].result.message.content[0].text == expected_text(req)


@pytest.mark.parametrize("batch_id", ["msgbatch_000000000000000000000000", "msgbatch_nope", "garbage"])
def test_results_of_unknown_batch_is_404(raw: httpx.Client, batch_id: str) -> None:
    assert_error(raw.get(f"/v1/messages/batches/{batch_id}/results"), 404, "not_found_error")


def test_results_before_end_is_400(slow_server: ServerProcess, make_client: Any, make_raw: Any) -> None:
    client = make_client(slow_server)
    http = make_raw(slow_server)
    batch = client.messages.batches.create(requests=make_requests(10, prefix="early"))  # type: ignore[arg-type]
    try:
        response = http.get(f"/v1/messages/batches/{batch.id}/results")
        assert_error(response, 400, "invalid_request_error")
        # The SDK refuses client-side because results_url is still null.
        with pytest.raises(anthropic.AnthropicError, match="results_url"):
            client.messages.batches.results(batch.id)
    finally:
        client.messages.batches.cancel(batch.id)
    wait_for_end(client, batch.id, total=10)


def test_public_url_is_used_for_results_url(server_factory: Any, make_client: Any, make_raw: Any) -> None:
    proc = server_factory("--public-url", "http://batches.example.test:9999")
    client = make_client(proc)
    batch_id = _submit_and_wait(client, make_requests(2, prefix="pub"))
    batch = client.messages.batches.retrieve(batch_id)
    assert batch.results_url == f"http://batches.example.test:9999/v1/messages/batches/{batch_id}/results"
    # The same path works on the real address.
    lines = _raw_lines(make_raw(proc), f"/v1/messages/batches/{batch_id}/results")
    assert sorted(line["custom_id"] for line in lines) == ["pub-0", "pub-1"]
