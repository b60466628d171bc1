"""The per-format codecs' lines, checked against the SDKs' own types (no server needed: pure functions)."""

from __future__ import annotations

import json
import re
import time
from typing import Any

import jsonschema_rs
import msgspec
import pytest
from anthropic.types.messages import MessageBatchIndividualResponse
from openai.types.chat import ChatCompletion
from pydantic import BaseModel

from overnight.exceptions import InvalidRequestError, OverloadedError
from overnight.protocol.codecs import ANTHROPIC_CODEC, OPENAI_CODEC, _line
from overnight.protocol.openai.chat import (
    NATIVE_COMPLETION,
    ChatCompletionParams,
    _decode_plain,
    _plain_params,
    chat_completion,
    chat_completion_json,
    chat_params_from_json,
    chat_request_schema,
    chat_to_params,
    native_body,
)
from overnight.protocol.results import message, text_block
from overnight.store.postgres import _derived_line

BODY = b'{"model":"m","max_tokens":5,"messages":[{"role":"system","content":"s"},{"role":"user","content":"hi"}]}'


@pytest.mark.parametrize("state", ["canceled", "expired"])
def test_anthropic_derived_lines_match_the_stores_own(state: str) -> None:
    line = ANTHROPIC_CODEC.derived_line("req-1", state)
    assert line == _derived_line("req-1", state)  # what PostgreSQL (and SQLite's SQL) build
    parsed = MessageBatchIndividualResponse.model_validate_json(line)
    assert parsed.result.type == state


def test_openai_lines_have_the_batch_output_shape() -> None:
    params = OPENAI_CODEC.decode(BODY)
    answer = message(
        model="m", content=[text_block("hello")], stop_reason="max_tokens", input_tokens=3, output_tokens=5
    )
    ok = json.loads(OPENAI_CODEC.succeeded_line("a", answer, params))
    assert ok["id"].startswith("batch_req_") and ok["error"] is None
    assert ok["id"][len("batch_req_") :] == ok["response"]["request_id"][len("req_") :]
    completion = ChatCompletion.model_validate(ok["response"]["body"])
    assert completion.choices[0].finish_reason == "length" and completion.usage is not None
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (3, 5)

    failed = json.loads(OPENAI_CODEC.errored_line("b", OverloadedError("busy"), "overloaded_error"))
    assert failed["error"] is None and failed["response"]["status_code"] == 529
    assert failed["response"]["body"]["error"] == {
        "message": "busy",
        "type": "server_error",
        "param": None,
        "code": None,
    }
    cancelled = json.loads(OPENAI_CODEC.derived_line("c", "canceled"))
    assert cancelled["response"] is None and cancelled["error"]["code"] == "batch_cancelled"


def test_fast_and_general_paths_agree() -> None:
    fast = chat_params_from_json(BODY)
    general = chat_to_params(json.loads(BODY))
    assert fast.model_dump() == general.model_dump()
    assert fast.system == "s" and fast.max_tokens == 5


@pytest.mark.parametrize(
    "body",
    [
        b'{"model":"m","messages":[]}',
        b'{"model":"m","messages":[{"role":"user","content":"x"}],"temperature":2}',
        b'{"model":"m","messages":[{"role":"user","content":[{"type":"image_url"}]}]}',
        b"[1]",
        # Falsy values of the wrong type are refused, not taken for "off" (the OpenAPI schema says so).
        b'{"model":"m","messages":[{"role":"user","content":"x"}],"stream":0}',
        b'{"model":"m","messages":[{"role":"user","content":"x"}],"logprobs":""}',
        b'{"model":"m","messages":[{"role":"user","content":"x"}],"n":true}',
        b'{"model":"m","messages":[{"role":"user","content":"x"}],"n":1.0}',
        b'{"model":"m","messages":[{"role":"user","content":"x"}],"max_tokens":"x","max_completion_tokens":3}',
        b'{"model":"m","messages":[{"role":"user","content":"x"}],"max_completion_tokens":0}',
        b'{"model":"m","messages":[{"role":"user","content":"x"}],"tools":{}}',
        b'{"model":"m","messages":[{"role":"user","content":"x"}],"tools":[{"type":"function","function":'
        b'{"name":"f","parameters":5}}]}',
        b'{"model":"m","messages":[{"role":"user","content":"x"},{"role":"assistant","content":0,'
        b'"tool_calls":[{"id":"c","type":"function","function":{"name":"f","arguments":"{}"}}]}]}',
        b'{"model":"m","messages":[{"role":"user","content":"x"},{"role":"assistant","content":"y","tool_calls":{}}]}',
    ],
)
def test_invalid_bodies_are_named_400s(body: bytes) -> None:
    with pytest.raises(InvalidRequestError):
        chat_params_from_json(body)


def _state(model: Any) -> Any:
    """Everything pydantic keeps in a model, recursively, with the classes: equal states, equal models."""
    if isinstance(model, BaseModel):
        return (
            type(model),
            {name: _state(value) for name, value in model.__dict__.items()},
            sorted(model.model_fields_set),
            model.__pydantic_extra__,
            model.__pydantic_private__,
        )
    if isinstance(model, list):
        return [_state(item) for item in model]
    return (type(model), model)


_HI = {"role": "user", "content": "hi"}


@pytest.mark.parametrize(
    ("body", "fields"),
    [
        ({"model": "m", "messages": [_HI]}, {"model": "m", "max_tokens": 4096, "messages": [_HI]}),
        (
            {
                "model": "m",
                "messages": [{"role": "developer", "content": "a"}, {"role": "system", "content": "b"}, _HI],
            },
            {"model": "m", "max_tokens": 4096, "messages": [_HI], "system": "a\nb"},
        ),
        (
            {"model": "m", "max_tokens": 7, "max_completion_tokens": 3, "messages": [_HI], "temperature": 1},
            {"model": "m", "max_tokens": 3, "messages": [_HI], "temperature": 1.0},
        ),
        (
            {"model": "m", "max_tokens": 7, "messages": [_HI], "top_p": 0.5, "stop": "x", "seed": 1, "user": "u"},
            {"model": "m", "max_tokens": 7, "messages": [_HI], "top_p": 0.5, "stop_sequences": ["x"]},
        ),
        (
            {
                "model": "m",
                "messages": [_HI, {"role": "assistant", "content": "yo"}, _HI],
                "stop": ["a", "b"],
                "n": 1,
                "stream": False,
            },
            {
                "model": "m",
                "max_tokens": 4096,
                "messages": [_HI, {"role": "assistant", "content": "yo"}, _HI],
                "stop_sequences": ["a", "b"],
            },
        ),
    ],
)
def test_fast_path_assembles_what_pydantic_validates(body: dict[str, Any], fields: dict[str, Any]) -> None:
    raw = json.dumps(body).encode()
    plain = _decode_plain(raw)
    fast = _plain_params(plain, raw)
    assert fast is not None, "this body should take the fast path"
    expected = ChatCompletionParams.model_validate(fields)
    expected._chat_body = raw
    assert _state(fast) == _state(expected)
    assert fast == expected and fast.forwardable() == expected.forwardable()
    assert _state(chat_params_from_json(raw)) == _state(expected)
    assert native_body(fast) == body


def _answer(**changes: Any) -> dict[str, Any]:
    answer = message(model="m", content=[text_block("hello")], stop_reason="end_turn", input_tokens=3, output_tokens=5)
    return {**answer, **changes}


@pytest.mark.parametrize(
    "answer",
    [
        _answer(),
        _answer(stop_reason="max_tokens"),
        _answer(stop_reason="stop_sequence", stop_sequence="x"),
        _answer(stop_reason="something new"),
        _answer(stop_reason=None),
        _answer(content=[text_block('quote " backslash \\ newline \n tab \t \x00 é 日本 🙂')]),
        _answer(content=[text_block("a"), {"type": "thinking", "thinking": "t", "signature": "s"}, text_block("b")]),
        _answer(content=[]),
        _answer(content=None),
        _answer(content=[text_block("a"), {"type": "tool_use", "id": "t1", "name": "f", "input": {"x": 1}}]),
        _answer(id='msg_odd"id'),
        _answer(usage={"input_tokens": 3, "output_tokens": 5, "cache_read_input_tokens": 2}),
        _answer(usage={"input_tokens": 3, "output_tokens": 5, "cache_creation_input_tokens": 4}),
        _answer(usage={"input_tokens": 3.0, "output_tokens": 5}),
        _answer(usage=None),
        _answer(**{NATIVE_COMPLETION: {"id": "chatcmpl-up", "choices": [], "usage": None}}),
    ],
)
def test_completion_json_is_the_encoded_completion(answer: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(time, "time", lambda: 1_700_000_000.7)
    for model in ("m", 'odd "model" ✓'):
        rendered = chat_completion_json(answer, model=model)
        assert rendered == msgspec.json.encode(chat_completion(answer, model=model))
        ChatCompletion.model_validate_json(rendered)


@pytest.mark.parametrize("custom_id", ["a", 'q"uote\\', "ünï ✓"])
def test_succeeded_line_is_the_general_lines_shape(custom_id: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(time, "time", lambda: 1_700_000_000.0)
    params = OPENAI_CODEC.decode(BODY)
    answer = _answer(content=[text_block('hé "x"')])
    line = OPENAI_CODEC.succeeded_line(custom_id, answer, params)
    assert line.endswith(b"}\n") and line.count(b"\n") == 1
    parsed = json.loads(line)
    request_id = parsed["response"]["request_id"]
    assert re.fullmatch(r"req_[0-9A-Za-z]{24}", request_id)
    assert line == _line(
        custom_id,
        {"status_code": 200, "request_id": request_id, "body": chat_completion(answer, model="m")},
        None,
        request_id,
    )


ACCEPTED_BODIES = [
    {"model": "m", "messages": [_HI]},
    {
        "model": "m",
        "messages": [
            {"role": "developer", "content": [{"type": "text", "text": "be brief"}]},
            _HI,
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}],
            },
            {"role": "tool", "tool_call_id": "c1", "content": "42"},
        ],
        "max_completion_tokens": 10,
        "max_tokens": None,
        "temperature": 0,
        "top_p": 1,
        "top_k": 3,
        "stop": ["a"],
        "n": 1,
        "stream": False,
        "logprobs": None,
        "response_format": {"type": "text"},
        "tools": [{"type": "function", "function": {"name": "f", "description": None, "parameters": None}}],
        "tool_choice": {"type": "function", "function": {"name": "f"}},
        "user": 5,
        "seed": "any",
        "metadata": {"k": "v"},
    },
    {"model": "m", "messages": [_HI], "stop": "x", "tool_choice": "none", "tools": None},
]


@pytest.mark.parametrize("body", ACCEPTED_BODIES)
def test_the_openapi_request_schema_accepts_what_the_server_accepts(body: dict[str, Any]) -> None:
    chat_to_params(body)  # accepted
    jsonschema_rs.Draft202012Validator(chat_request_schema()).validate(body)
