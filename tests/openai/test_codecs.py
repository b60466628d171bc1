"""The per-format codecs' lines, checked against the SDKs' own types (no server needed: pure functions)."""

from __future__ import annotations

import json

import pytest
from anthropic.types.messages import MessageBatchIndividualResponse
from openai.types.chat import ChatCompletion

from overnight.exceptions import InvalidRequestError, OverloadedError
from overnight.protocol.codecs import ANTHROPIC_CODEC, OPENAI_CODEC
from overnight.protocol.openai.chat import chat_params_from_json, chat_to_params
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
    ],
)
def test_invalid_bodies_are_named_400s(body: bytes) -> None:
    with pytest.raises(InvalidRequestError):
        chat_params_from_json(body)
