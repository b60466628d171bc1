"""Messages ⇄ chat completions translation, on realistic payloads both ways.

The responses below are shaped as OpenAI, vLLM, Ollama and Azure return them (the fields each sends,
including the ones the translation ignores), so the tests exercise what real upstreams say.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from overnight.backends.openai_translation import from_chat_completion, to_chat_completion
from overnight.exceptions import ApiError, InvalidRequestError
from overnight.protocol.messages import MessageCreateParams

WEATHER_TOOL = {
    "name": "get_weather",
    "description": "Get the current weather in a given location",
    "input_schema": {
        "type": "object",
        "properties": {"location": {"type": "string", "description": "City and state"}},
        "required": ["location"],
    },
}
TOOL_USE_ID = re.compile(r"^toolu_[0-9A-Za-z]{24}$")
PNG_BASE64 = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="


def make_params(**overrides: Any) -> MessageCreateParams:
    data: dict[str, Any] = {
        "model": "claude-sonnet-4-5",
        "max_tokens": 256,
        "messages": [{"role": "user", "content": "Hello"}],
    }
    data.update(overrides)
    return MessageCreateParams.model_validate(data)


# --- request --------------------------------------------------------------------------------------


def test_a_full_tool_conversation_translates_in_order() -> None:
    params = make_params(
        system=[{"type": "text", "text": "You are a weather bot."}, {"type": "text", "text": "Be brief."}],
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is in this picture, and the weather in SF?"},
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG_BASE64}},
                    {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
                ],
            },
            {
                "role": "assistant",
                "content": [
                    {"type": "thinking", "thinking": "I should call the tool.", "signature": "sig"},
                    {"type": "text", "text": "A cat. Checking the weather."},
                    {
                        "type": "tool_use",
                        "id": "toolu_01A",
                        "name": "get_weather",
                        "input": {"location": "San Francisco, CA"},
                    },
                    {
                        "type": "tool_use",
                        "id": "toolu_01B",
                        "name": "get_weather",
                        "input": {"location": "Oakland, CA"},
                    },
                ],
            },
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_01A", "content": "15 degrees, fog"},
                    {
                        "type": "tool_result",
                        "tool_use_id": "toolu_01B",
                        "content": [{"type": "text", "text": "station offline"}],
                        "is_error": True,
                    },
                    {"type": "text", "text": "Thanks. Summarise."},
                ],
            },
        ],
        tools=[WEATHER_TOOL],
        tool_choice={"type": "auto", "disable_parallel_tool_use": True},
        stop_sequences=["END", "###"],
        temperature=0.5,
        top_p=0.9,
        top_k=40,
        metadata={"user_id": "user-42"},
    )

    body = to_chat_completion(params, model="Qwen/Qwen2.5-7B-Instruct")

    assert body == {
        "model": "Qwen/Qwen2.5-7B-Instruct",
        "messages": [
            {"role": "system", "content": "You are a weather bot.\nBe brief."},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is in this picture, and the weather in SF?"},
                    {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG_BASE64}"}},
                    {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}},
                ],
            },
            {
                "role": "assistant",
                "content": "A cat. Checking the weather.",
                "tool_calls": [
                    {
                        "id": "toolu_01A",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"location": "San Francisco, CA"}'},
                    },
                    {
                        "id": "toolu_01B",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"location": "Oakland, CA"}'},
                    },
                ],
            },
            {"role": "tool", "tool_call_id": "toolu_01A", "content": "15 degrees, fog"},
            {"role": "tool", "tool_call_id": "toolu_01B", "content": "Error: station offline"},
            {"role": "user", "content": "Thanks. Summarise."},
        ],
        "max_tokens": 256,
        "temperature": 0.5,
        "top_p": 0.9,
        "top_k": 40,
        "stop": ["END", "###"],
        "user": "user-42",
        "tools": [
            {
                "type": "function",
                "function": {
                    "name": "get_weather",
                    "parameters": WEATHER_TOOL["input_schema"],
                    "description": "Get the current weather in a given location",
                },
            }
        ],
        "tool_choice": "auto",
        "parallel_tool_calls": False,
    }


def test_plain_request_is_minimal_and_keeps_the_client_model() -> None:
    body = to_chat_completion(make_params(system="Be kind."))
    assert body == {
        "model": "claude-sonnet-4-5",
        "messages": [{"role": "system", "content": "Be kind."}, {"role": "user", "content": "Hello"}],
        "max_tokens": 256,
    }


def test_text_only_blocks_become_one_string() -> None:
    params = make_params(
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "one"},
                    {"type": "text", "text": "two", "cache_control": {"type": "ephemeral"}},
                ],
            },
            {"role": "assistant", "content": "Sure."},
            {"role": "user", "content": "three"},
        ]
    )
    assert to_chat_completion(params)["messages"] == [
        {"role": "user", "content": "one\ntwo"},
        {"role": "assistant", "content": "Sure."},
        {"role": "user", "content": "three"},
    ]


def test_a_user_turn_of_only_tool_results_adds_no_empty_user_message() -> None:
    params = make_params(
        messages=[
            {"role": "user", "content": "Weather?"},
            {
                "role": "assistant",
                "content": [{"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {}}],
            },
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "call_1"}]},
        ],
        tools=[WEATHER_TOOL],
    )
    messages = to_chat_completion(params)["messages"]
    assert messages[1] == {
        "role": "assistant",
        "content": None,
        "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}],
    }
    assert messages[2:] == [{"role": "tool", "tool_call_id": "call_1", "content": ""}]


@pytest.mark.parametrize(
    ("tool_choice", "expected"),
    [
        ({"type": "auto"}, {"tool_choice": "auto"}),
        ({"type": "any"}, {"tool_choice": "required"}),
        ({"type": "any", "disable_parallel_tool_use": True}, {"tool_choice": "required", "parallel_tool_calls": False}),
        (
            {"type": "tool", "name": "get_weather"},
            {"tool_choice": {"type": "function", "function": {"name": "get_weather"}}},
        ),
        ({"type": "none"}, {"tool_choice": "none"}),
        (None, {}),
    ],
)
def test_tool_choice(tool_choice: dict[str, Any] | None, expected: dict[str, Any]) -> None:
    body = to_chat_completion(make_params(tools=[WEATHER_TOOL], tool_choice=tool_choice))
    assert {key: body[key] for key in ("tool_choice", "parallel_tool_calls") if key in body} == expected


def test_tool_without_schema_gets_an_empty_object_schema_and_strict_passes() -> None:
    body = to_chat_completion(make_params(tools=[{"name": "ping", "strict": True}]))
    assert body["tools"] == [
        {
            "type": "function",
            "function": {"name": "ping", "parameters": {"type": "object", "properties": {}}, "strict": True},
        }
    ]


def test_hints_are_accepted() -> None:
    params = make_params(
        thinking={"type": "adaptive"},
        service_tier="auto",
        cache_control={"type": "ephemeral"},
        output_config={"effort": "low"},
        tool_choice={"type": "none"},
    )
    assert "tool_choice" not in to_chat_completion(params)  # no tools: nothing to choose between


@pytest.mark.parametrize(
    ("overrides", "feature"),
    [
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {
                                "type": "document",
                                "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0="},
                            }
                        ],
                    }
                ]
            },
            "document blocks",
        ),
        ({"thinking": {"type": "enabled", "budget_tokens": 2048}}, "extended thinking"),
        ({"mcp_servers": [{"type": "url", "url": "https://mcp.example.com/sse", "name": "example"}]}, "mcp_servers"),
        (
            {"tools": [{"type": "web_search_20250305", "name": "web_search", "max_uses": 5}]},
            "server tool 'web_search_20250305'",
        ),
        ({"tools": [{**WEATHER_TOOL, "defer_loading": True}]}, "tools.0.defer_loading"),
        (
            {
                "messages": [
                    {"role": "user", "content": [{"type": "image", "source": {"type": "file", "file_id": "file_011"}}]}
                ]
            },
            "image file sources",
        ),
        (
            {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "The answer is"}]},
            "assistant prefill",
        ),
        (
            {
                "messages": [
                    {"role": "user", "content": "Shot?"},
                    {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "shot", "input": {}}]},
                    {
                        "role": "user",
                        "content": [
                            {
                                "type": "tool_result",
                                "tool_use_id": "t1",
                                "content": [
                                    {"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}}
                                ],
                            }
                        ],
                    },
                ]
            },
            "image blocks inside tool_result content",
        ),
        ({"output_format": {"type": "json_schema", "schema": {"type": "object"}}}, "structured outputs"),
        ({"output_config": {"format": {"type": "json_schema", "schema": {"type": "object"}}}}, "output_config.format"),
        ({"container": "container_abc"}, "container"),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [{"type": "search_result", "source": "https://x", "title": "t", "content": []}],
                    }
                ]
            },
            "search_result blocks",
        ),
        ({"tool_choice": {"type": "any"}}, "tool_choice.type: any requires tools"),
    ],
)
def test_what_chat_completions_cannot_express_is_refused_by_name(overrides: dict[str, Any], feature: str) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        to_chat_completion(make_params(**overrides))
    assert feature in caught.value.message


# --- response -------------------------------------------------------------------------------------

OPENAI_TOOL_CALLS = {
    "id": "chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG",
    "object": "chat.completion",
    "created": 1741570283,
    "model": "gpt-4o-2024-08-06",
    "choices": [
        {
            "index": 0,
            "message": {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_Dn2RJJSxzDm49vlVTehseJ0k",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"location":"Boston, MA"}'},
                    }
                ],
                "refusal": None,
                "annotations": [],
            },
            "logprobs": None,
            "finish_reason": "tool_calls",
        }
    ],
    "usage": {
        "prompt_tokens": 82,
        "completion_tokens": 17,
        "total_tokens": 99,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    },
    "service_tier": "default",
    "system_fingerprint": "fp_fc9f1d7035",
}

VLLM_STOP_STRING = {
    "id": "chatcmpl-5f3b2a0e9c3d4e0f8a7b6c5d4e3f2a1b",
    "object": "chat.completion",
    "created": 1733829284,
    "model": "meta-llama/Llama-3.1-8B-Instruct",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "reasoning_content": None, "content": "1, 2, 3, 4", "tool_calls": []},
            "logprobs": None,
            "finish_reason": "stop",
            "stop_reason": ", 5",
        }
    ],
    "usage": {"prompt_tokens": 20, "total_tokens": 32, "completion_tokens": 12, "prompt_tokens_details": None},
    "prompt_logprobs": None,
}

OLLAMA_TEXT = {
    "id": "chatcmpl-245",
    "object": "chat.completion",
    "created": 1733829284,
    "model": "llama3.2",
    "system_fingerprint": "fp_ollama",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "The sky is blue because of Rayleigh scattering."},
            "finish_reason": "stop",
        }
    ],
    "usage": {"prompt_tokens": 31, "completion_tokens": 11, "total_tokens": 42},
}


def test_openai_tool_calls_become_tool_use_blocks() -> None:
    result = from_chat_completion(OPENAI_TOOL_CALLS, make_params(tools=[WEATHER_TOOL]))
    [block] = result["content"]
    assert TOOL_USE_ID.match(block["id"]), block["id"]  # ours, not the upstream's call_Dn2RJJSxzDm49vlVTehseJ0k
    assert block == {"type": "tool_use", "id": block["id"], "name": "get_weather", "input": {"location": "Boston, MA"}}
    assert result["stop_reason"] == "tool_use"
    assert result["stop_sequence"] is None
    assert result["usage"]["input_tokens"] == 82
    assert result["usage"]["output_tokens"] == 17
    assert result["usage"]["cache_read_input_tokens"] is None  # zero cached tokens: nothing to report
    assert result["model"] == "claude-sonnet-4-5"
    assert result["type"] == "message" and result["role"] == "assistant"
    assert result["id"].startswith("msg_")


def test_upstream_call_ids_are_replaced_by_distinct_toolu_ids() -> None:
    # llama-cpp-python's server names calls after the completion: call__0_<name>_<completion id>.
    reply = json.loads(json.dumps(OPENAI_TOOL_CALLS))
    reply["choices"][0]["message"]["tool_calls"] = [
        {
            "id": f"call__{index}_get_weather_cmpl-2c1c3b0e-8f3a-4a5e-9a36-0d4b1c6f9e21",
            "type": "function",
            "function": {"name": "get_weather", "arguments": json.dumps({"location": city})},
        }
        for index, city in enumerate(["Paris", "Oslo"])
    ]
    blocks = from_chat_completion(reply, make_params(tools=[WEATHER_TOOL]))["content"]
    assert [block["input"]["location"] for block in blocks] == ["Paris", "Oslo"]
    assert all(TOOL_USE_ID.match(block["id"]) for block in blocks), blocks
    assert blocks[0]["id"] != blocks[1]["id"]


def test_an_upstream_toolu_id_is_kept() -> None:
    # An upstream that already speaks our id form (e.g. another overnight or a proxy in front of Claude).
    reply = json.loads(json.dumps(OPENAI_TOOL_CALLS))
    reply["choices"][0]["message"]["tool_calls"][0]["id"] = "toolu_01A09q90qw90lq917835lq9"
    [block] = from_chat_completion(reply, make_params(tools=[WEATHER_TOOL]))["content"]
    assert block["id"] == "toolu_01A09q90qw90lq917835lq9"


def test_our_tool_use_id_round_trips_to_the_upstream() -> None:
    first = make_params(tools=[WEATHER_TOOL], messages=[{"role": "user", "content": "Weather in Boston?"}])
    [block] = from_chat_completion(OPENAI_TOOL_CALLS, first)["content"]

    # The client's next turn sends the tool_use back with our id and answers it by that id.
    second = make_params(
        tools=[WEATHER_TOOL],
        messages=[
            {"role": "user", "content": "Weather in Boston?"},
            {"role": "assistant", "content": [block]},
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": block["id"], "content": "22 degrees, sunny"}],
            },
        ],
    )
    messages = to_chat_completion(second)["messages"]
    assert messages[1] == {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": block["id"],
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"location": "Boston, MA"}'},
            }
        ],
    }
    assert messages[2] == {"role": "tool", "tool_call_id": block["id"], "content": "22 degrees, sunny"}
    assert messages[1]["tool_calls"][0]["id"] == messages[2]["tool_call_id"]


def test_text_and_tool_calls_with_finish_reason_stop_still_mean_tool_use() -> None:
    reply = json.loads(json.dumps(OPENAI_TOOL_CALLS))
    reply["choices"][0]["message"]["content"] = "Let me check."
    reply["choices"][0]["finish_reason"] = "stop"  # what some servers say alongside tool calls
    result = from_chat_completion(reply, make_params())
    assert [block["type"] for block in result["content"]] == ["text", "tool_use"]
    assert result["content"][0]["text"] == "Let me check."
    assert result["stop_reason"] == "tool_use"


def test_vllm_reported_stop_string_becomes_stop_sequence() -> None:
    result = from_chat_completion(VLLM_STOP_STRING, make_params(stop_sequences=["###", ", 5"]))
    assert result["content"] == [{"type": "text", "text": "1, 2, 3, 4", "citations": None}]
    assert result["stop_reason"] == "stop_sequence"
    assert result["stop_sequence"] == ", 5"
    assert (result["usage"]["input_tokens"], result["usage"]["output_tokens"]) == (20, 12)


def test_stop_without_a_named_match_is_end_turn_even_with_one_stop_sequence() -> None:
    # llama-cpp-python's server: the text is cut before the stop string and nothing names it; the same
    # answer comes for an end-of-turn token, so no stop sequence can be claimed.
    reply = {
        "id": "chatcmpl-6f0d3c8e-1d2b-4c4e-9b0a-5e7f3a2b1c0d",
        "object": "chat.completion",
        "created": 1733829284,
        "model": "gemma",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Write"},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 16, "completion_tokens": 2, "total_tokens": 18},
    }
    result = from_chat_completion(reply, make_params(stop_sequences=[" "]))
    assert result["content"] == [{"type": "text", "text": "Write", "citations": None}]
    assert (result["stop_reason"], result["stop_sequence"]) == ("end_turn", None)


def test_plain_stop_is_end_turn() -> None:
    result = from_chat_completion(OLLAMA_TEXT, make_params(stop_sequences=["###"]))
    assert result["content"] == [
        {"type": "text", "text": "The sky is blue because of Rayleigh scattering.", "citations": None}
    ]
    assert (result["stop_reason"], result["stop_sequence"]) == ("end_turn", None)


@pytest.mark.parametrize(
    ("finish_reason", "completion_tokens", "stop_reason"),
    [
        ("length", 256, "max_tokens"),
        ("length", 100, "model_context_window_exceeded"),  # cut off before max_tokens (256)
        ("content_filter", 3, "refusal"),
        ("function_call", 5, "tool_use"),
        (None, 5, "end_turn"),
    ],
)
def test_finish_reasons(finish_reason: str | None, completion_tokens: int, stop_reason: str) -> None:
    reply = json.loads(json.dumps(OLLAMA_TEXT))
    reply["choices"][0]["finish_reason"] = finish_reason
    reply["usage"]["completion_tokens"] = completion_tokens
    assert from_chat_completion(reply, make_params())["stop_reason"] == stop_reason


def test_cached_prompt_tokens_are_reported_apart() -> None:
    reply = json.loads(json.dumps(OPENAI_TOOL_CALLS))
    reply["usage"]["prompt_tokens_details"]["cached_tokens"] = 64
    usage = from_chat_completion(reply, make_params())["usage"]
    assert (usage["input_tokens"], usage["cache_read_input_tokens"]) == (18, 64)
    assert usage["service_tier"] == "batch"


def test_empty_content_gives_an_empty_content_list() -> None:
    reply = json.loads(json.dumps(OLLAMA_TEXT))
    reply["choices"][0]["message"]["content"] = ""
    assert from_chat_completion(reply, make_params())["content"] == []


def test_legacy_function_call_and_dict_arguments() -> None:
    reply = json.loads(json.dumps(OLLAMA_TEXT))
    reply["choices"][0]["message"] = {
        "role": "assistant",
        "content": None,
        "function_call": {"name": "get_weather", "arguments": {"location": "Paris"}},
    }
    reply["choices"][0]["finish_reason"] = "function_call"
    [block] = from_chat_completion(reply, make_params())["content"]
    assert block["name"] == "get_weather" and block["input"] == {"location": "Paris"}
    assert block["id"].startswith("toolu_")  # the legacy form has no call id


@pytest.mark.parametrize(
    ("arguments", "match"),
    [('{"location": "Bos', "not valid JSON"), ('["Boston"]', "not a JSON object")],
)
def test_unusable_tool_arguments_are_an_api_error(arguments: str, match: str) -> None:
    reply = json.loads(json.dumps(OPENAI_TOOL_CALLS))
    reply["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"] = arguments
    with pytest.raises(ApiError, match=match) as caught:
        from_chat_completion(reply, make_params())
    assert "get_weather" in caught.value.message


@pytest.mark.parametrize(
    "reply",
    [
        {"object": "chat.completion", "choices": []},
        {"choices": [{"index": 0, "finish_reason": "stop"}]},
        {"error": "x"},
    ],
)
def test_completion_without_a_message_is_an_api_error(reply: dict[str, Any]) -> None:
    with pytest.raises(ApiError):
        from_chat_completion(reply, make_params())
