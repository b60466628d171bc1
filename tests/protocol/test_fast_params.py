"""The msgspec fast path for params must agree with pydantic on every input: the same model (fields,
set fields, extras, nested types) when it accepts, and no acceptance of anything pydantic refuses.

Both sides are the real validators; nothing is mocked.
"""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
from pydantic import BaseModel

from overnight.exceptions import InvalidRequestError
from overnight.protocol.messages import _fast, parse_params, parse_params_with_pydantic

_encode = msgspec.json.encode
BASE: dict[str, Any] = {"model": "claude-sonnet-4-5", "max_tokens": 16, "messages": [{"role": "user", "content": "Hi"}]}


def _with(**changes: Any) -> bytes:
    return _encode({**BASE, **changes})


# Inside the fast subset: the fast path must take these, and build what pydantic builds.
FAST_SHAPES = [
    _encode(BASE),
    _with(system="Be brief."),
    _with(system=[{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}]),
    _with(system=[{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral", "ttl": "1h"}}]),
    _with(system=None, temperature=None, top_p=None, top_k=None, stop_sequences=None, metadata=None, stream=None),
    _with(temperature=0, top_p=1, top_k=0),  # integers where numbers go
    _with(temperature=0.7, top_p=0.9, top_k=40, stop_sequences=["\n\n", "END"], stream=False),
    _with(metadata={"user_id": "u-1"}),
    _with(metadata={}),
    _with(metadata={"user_id": None}),
    _with(
        messages=[
            {
                "role": "user",
                "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b", "cache_control": None}],
            },
            {"role": "assistant", "content": "c"},
            {"role": "user", "content": 'd \u00e9\u4e2d\U0001f600 \\ " \t'},
        ]
    ),
    _with(model="m" * 256, max_tokens=2**62),
    b' {"max_tokens": 1, "messages": [{"content": "x", "role": "user"}], "model": "z"} ',
    b'{"model":"a","model":"b","max_tokens":1,"messages":[{"role":"user","content":"x"}]}',  # the last wins
]

# Outside it, or invalid: whatever pydantic says (a model or an error) must be what parse_params says.
OTHER_SHAPES = [
    _with(unknown_option=1),
    _with(**{"anthropic-beta": "a,b"}),
    _with(betas=["x"]),
    _with(tools=[{"name": "t", "input_schema": {"type": "object"}}], tool_choice={"type": "tool", "name": "t"}),
    _with(tool_choice={"type": "any"}),
    _with(thinking={"type": "enabled", "budget_tokens": 2048}, max_tokens=4096),
    _with(thinking={"type": "enabled", "budget_tokens": 2048}),
    _with(system=[{"type": "text", "text": "s", "extra_key": 1}]),
    _with(system=[{"type": "text", "text": "s", "cache_control": {"type": "ephemeral", "other": 1}}]),
    _with(system=[{"type": "text", "text": "s", "citations": [{"a": 1}]}]),
    _with(messages=[{"role": "user", "content": [{"type": "image", "source": {"type": "url", "url": "http://x"}}]}]),
    _with(messages=[{"role": "user", "content": [{"type": "text"}]}]),
    _with(messages=[{"role": "user"}]),
    _with(messages=[{"role": "system", "content": "x"}]),
    _with(messages=[{"role": "user", "content": "x", "name": "n"}]),
    _with(messages=[]),
    _with(messages="hi"),
    _with(max_tokens=0),
    _with(max_tokens=1.0),
    _with(max_tokens="5"),
    _with(max_tokens=True),
    _with(max_tokens=10**30),
    _with(max_tokens=None),
    _with(model=""),
    _with(model="m" * 257),
    _with(model=5),
    _with(temperature=1.5),
    _with(temperature=-0.1),
    _with(temperature="0.5"),
    _with(temperature=True),
    _with(top_k=-1),
    _with(top_k=1.5),
    _with(top_p=2),
    _with(stop_sequences=[1]),
    _with(stop_sequences="END"),
    _with(metadata={"user_id": "u" * 257}),
    _with(metadata={"user_id": 5}),
    _with(metadata={"other": 1}),
    _with(stream=True),
    _with(stream=0),
    _with(stream="false"),
    b'{"model":"x","max_tokens":1,"messages":[{"role":"user","content":"\\ud800"}]}',
    b'{"model":"x","max_tokens":1,"messages":[{"role":"user","content":"\xff"}]}',
    b'{"model":"x","max_tokens":1,"messages":[{"role":"user","content":"x"}]} trailing',
    b'{"model":"x","max_tokens":NaN,"messages":[{"role":"user","content":"x"}]}',
    b'{"model":"x","max_tokens":1,"temperature":NaN,"messages":[{"role":"user","content":"x"}]}',
    b'{"model":"x","max_tokens":1,"messages":[{"role":"user","content":"x"}],"metadata":'
    + b"[" * 5000
    + b"]" * 5000
    + b"}",
    b"[]",
    b"null",
    b"",
    b"{",
]


def _outcome(parse: Any, raw: bytes) -> tuple[str, Any]:
    try:
        return "ok", parse(raw)
    except InvalidRequestError as exc:
        return "error", exc.message


def _reference(raw: bytes) -> tuple[str, Any]:
    """What parse_params answered before the fast path existed: pydantic, then the same consistency checks."""
    from overnight.protocol.messages import _check_consistency

    def slow(data: bytes) -> Any:
        params = parse_params_with_pydantic(data)
        _check_consistency(params)
        return params

    return _outcome(slow, raw)


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


@pytest.mark.parametrize("raw", FAST_SHAPES)
def test_fast_path_builds_what_pydantic_builds(raw: bytes) -> None:
    fast = _fast.parse(raw)
    assert fast is not None, "this shape should take the fast path"
    expected = parse_params_with_pydantic(raw)
    assert _state(fast) == _state(expected)
    assert fast == expected
    assert fast.model_dump(mode="json") == expected.model_dump(mode="json")
    assert fast.forwardable() == expected.forwardable()
    assert fast.unknown_keys() == expected.unknown_keys() == []
    assert _state(parse_params(raw)) == _state(expected)


@pytest.mark.parametrize("raw", OTHER_SHAPES)
def test_other_shapes_answer_as_pydantic_does(raw: bytes) -> None:
    expected = _reference(raw)
    got = _outcome(parse_params, raw)
    assert got[0] == expected[0], (got, expected)
    if got[0] == "ok":
        assert _state(got[1]) == _state(expected[1])
    else:
        assert got[1] == expected[1]


@pytest.mark.parametrize("raw", [raw for raw in OTHER_SHAPES if _reference(raw)[0] == "error"])
def test_fast_path_never_accepts_what_pydantic_refuses(raw: bytes) -> None:
    # `stream: true` is valid to pydantic and refused by parse_params' own consistency check, on either path.
    if raw == _with(stream=True):
        assert _fast.parse(raw) is not None
    else:
        assert _fast.parse(raw) is None


def test_a_field_required_error_keeps_its_wording() -> None:
    with pytest.raises(InvalidRequestError, match=r"^messages\.0\.content: Field required$"):
        parse_params(_with(messages=[{"role": "user"}]))


def test_memoryview_and_bytearray_inputs() -> None:
    raw = _encode(BASE)
    assert _state(parse_params(memoryview(raw))) == _state(parse_params(bytearray(raw))) == _state(parse_params(raw))
