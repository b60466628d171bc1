"""Chat-completions request → Messages params, and a Message → ChatCompletion.

The backends speak the Messages API, so a chat-completions body (a synchronous call, or one line of an
OpenAI-format batch) is translated to `MessageCreateParams` and the answer back. Faithful or it refuses:
what has no Messages equivalent is a 400 naming the field. Choices where the formats differ:

- `system` and `developer` messages (text only) become the `system` prompt, joined with "\\n".
- `max_completion_tokens` (or the older `max_tokens`) becomes `max_tokens`; absent, `DEFAULT_MAX_TOKENS`.
- `temperature` above 1 (OpenAI allows up to 2, the Messages API up to 1) is refused, not rescaled.
- Text parts only: image, audio and file parts are refused by name.
- Function tools map to tools; `tool_calls` and `role: tool` messages to tool_use / tool_result blocks.
- `finish_reason`: end_turn/stop_sequence → stop, max_tokens → length, tool_use → tool_calls,
  refusal → content_filter.

The params keep the body as sent (`native_body`): an OpenAI-compatible upstream gets that body itself,
not a translation of the translation, and its completion comes back as it answered (`NATIVE_COMPLETION`
in the Message), normalised only where the SDK's types would reject it.
"""

from __future__ import annotations

import functools
import json
import time
from typing import Annotated, Any, Literal

import msgspec
from pydantic import PrivateAttr, ValidationError

from overnight import ids
from overnight.exceptions import InvalidRequestError
from overnight.protocol.decoding import decode_json
from overnight.protocol.fast_params import ParamsAssembler
from overnight.protocol.messages import (
    CacheControl,
    MessageCreateParams,
    MessageParam,
    Metadata,
    TextBlock,
    describe_validation_error,
)
from overnight.protocol.results import Message

DEFAULT_MAX_TOKENS = 4096
NATIVE_COMPLETION = "_openai_chat_completion"
"""Key of a Message under which an OpenAI-compatible backend leaves the completion it received."""
_FINISH_REASON_VALUES = {"stop", "length", "tool_calls", "content_filter", "function_call"}
_SERVICE_TIERS = {"auto", "default", "flex", "scale", "priority", "fast"}


class ChatCompletionParams(MessageCreateParams):
    """Messages params translated from a chat-completions body, which they keep for native sending."""

    _chat_body: dict[str, Any] | bytes | None = PrivateAttr(default=None)
    """The body as sent: decoded, or still JSON (the fast path decodes it only if it is sent natively)."""


def native_body(params: MessageCreateParams) -> dict[str, Any] | None:
    """The chat-completions body `params` were translated from, if they were."""
    if not isinstance(params, ChatCompletionParams):
        return None
    body = params._chat_body
    return msgspec.json.decode(body) if isinstance(body, bytes) else body


# The common request (text messages, the usual sampling options), checked in C by msgspec and then
# validated without the general translation's walk: a batch runs this per request. Anything else (or
# anything invalid, for its message) goes through `chat_to_params`.
_Probability = Annotated[float, msgspec.Meta(ge=0.0, le=1.0)]
_Positive = Annotated[int, msgspec.Meta(ge=1)]


class _PlainMessage(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    role: Literal["system", "developer", "user", "assistant"]
    content: str


class _PlainChat(msgspec.Struct, forbid_unknown_fields=True):
    model: Annotated[str, msgspec.Meta(min_length=1, max_length=256)]
    messages: Annotated[list[_PlainMessage], msgspec.Meta(min_length=1)]
    max_tokens: _Positive | None = None
    max_completion_tokens: _Positive | None = None
    temperature: _Probability | None = None
    top_p: _Probability | None = None
    stop: str | list[str] | None = None
    stream: Literal[False] | None = None
    n: Literal[1] | None = None
    user: str | None = None
    seed: int | None = None


_decode_plain = msgspec.json.Decoder(_PlainChat).decode
_assemble = ParamsAssembler(ChatCompletionParams, MessageParam, TextBlock, CacheControl, Metadata)


def chat_params_from_json(raw: bytes) -> ChatCompletionParams:
    """`chat_to_params` for a JSON body, fast for the common request."""
    try:
        plain = _decode_plain(raw)
    except (msgspec.DecodeError, msgspec.ValidationError):
        plain = None
    params = _plain_params(plain, raw) if plain is not None else None
    return params or chat_to_params(decode_json(msgspec.json.decode, raw))


def _plain_params(plain: _PlainChat, raw: bytes) -> ChatCompletionParams | None:
    system: list[str] = []
    turns: list[Any] = []
    last_role = None
    for item in plain.messages:
        role = item.role
        if role == "system" or role == "developer":
            if turns:
                return None  # a system message later on: the general path handles it
            system.append(item.content)
        elif role == last_role:
            return None  # consecutive turns of one role merge: the general path
        else:
            turns.append(_assemble.text_turn(role, item.content))
            last_role = role
    if not turns:
        return None
    # `_PlainChat` already holds every value to the params' own rules, so they are assembled as
    # pydantic would build them rather than validated a second time.
    fields: dict[str, Any] = {
        "model": plain.model,
        "max_tokens": plain.max_completion_tokens or plain.max_tokens or DEFAULT_MAX_TOKENS,
        "messages": turns,
    }
    if system:
        fields["system"] = "\n".join(system)
    if plain.temperature is not None:
        fields["temperature"] = plain.temperature
    if plain.top_p is not None:
        fields["top_p"] = plain.top_p
    if plain.stop is not None:
        fields["stop_sequences"] = [plain.stop] if isinstance(plain.stop, str) else plain.stop
    return _assemble.build(fields, {"_chat_body": raw})


# Accepted and not needed by any backend (hints, bookkeeping) or with the only value we support.
_IGNORED_KEYS = {"user", "store", "metadata", "service_tier", "seed", "parallel_tool_calls", "prompt_cache_key"}
_HANDLED_KEYS = {
    "model",
    "messages",
    "max_tokens",
    "max_completion_tokens",
    "temperature",
    "top_p",
    "stop",
    "n",
    "stream",
    "tools",
    "tool_choice",
    "logprobs",
    "response_format",
    "top_k",
}


def chat_request_schema() -> dict[str, Any]:
    """The JSON Schema of a chat-completions body as `chat_to_params` takes it (for `/openapi.json`):
    every key it accepts, each no stricter than the translation (which refuses more, naming why)."""
    text_parts = {
        "type": "array",
        "items": {
            "type": "object",
            "properties": {"type": {"const": "text"}, "text": {"type": "string"}},
            "required": ["type", "text"],
        },
    }
    probability = {"type": ["number", "null"], "minimum": 0, "maximum": 1}
    positive = {"type": ["integer", "null"], "minimum": 1}
    message = {
        "type": "object",
        "properties": {
            "role": {"enum": ["system", "developer", "user", "assistant", "tool"]},
            "content": {"anyOf": [{"type": "string"}, text_parts, {"type": "null"}]},
            "tool_call_id": {"type": "string"},
            "tool_calls": {"type": ["array", "null"], "items": {"type": "object"}},
        },
        "required": ["role"],
        "description": "system, developer, user and tool messages need text content; an assistant message "
        "needs content or tool_calls; a tool message, its tool_call_id.",
    }
    properties: dict[str, Any] = {
        "model": {"type": "string", "minLength": 1, "maxLength": 256},
        "messages": {"type": "array", "minItems": 1, "items": message},
        "max_tokens": positive,
        "max_completion_tokens": {**positive, "description": f"Absent: {DEFAULT_MAX_TOKENS}."},
        "temperature": {**probability, "description": "Above 1 (OpenAI allows 2) is refused."},
        "top_p": probability,
        "top_k": {"type": ["integer", "null"], "minimum": 0},
        "stop": {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}, {"type": "null"}]},
        "n": {"enum": [1, None]},
        "stream": {"enum": [False, None], "description": "Streaming is not supported."},
        "logprobs": {"enum": [False, None]},
        "response_format": {"anyOf": [{"const": {"type": "text"}}, {"type": "null"}]},
        "tools": {
            "type": ["array", "null"],
            "items": {
                "type": "object",
                "properties": {
                    "type": {"const": "function"},
                    "function": {
                        "type": "object",
                        "properties": {
                            "name": {"type": "string", "minLength": 1, "maxLength": 128},
                            "description": {"type": ["string", "null"]},
                            "parameters": {"type": ["object", "null"]},
                        },
                        "required": ["name"],
                    },
                },
                "required": ["type", "function"],
            },
        },
        "tool_choice": {
            "anyOf": [
                {"enum": ["auto", "required", "none", None]},
                {
                    "type": "object",
                    "properties": {
                        "function": {
                            "type": "object",
                            "properties": {"name": {"type": "string"}},
                            "required": ["name"],
                        }
                    },
                    "required": ["function"],
                },
            ]
        },
    }
    properties |= {key: {"description": "Accepted and ignored."} for key in sorted(_IGNORED_KEYS)}
    assert set(properties) == _HANDLED_KEYS | _IGNORED_KEYS
    return {
        "type": "object",
        "properties": properties,
        "required": ["model", "messages"],
        "additionalProperties": False,
        "description": "A `/v1/chat/completions` body (also each line's `body` in an OpenAI batch input file).",
    }


_FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}
_FINISH_REASON_BYTES = {reason: finish.encode() for reason, finish in _FINISH_REASONS.items()}


def chat_to_params(body: Any) -> ChatCompletionParams:
    """Messages params for a chat-completions request body (already decoded JSON)."""
    if not isinstance(body, dict):
        raise InvalidRequestError("body: must be a JSON object")
    unknown = sorted(set(body) - _HANDLED_KEYS - _IGNORED_KEYS)
    if unknown:
        raise InvalidRequestError(f"{unknown[0]}: not supported by this server's chat completions")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidRequestError("model: Model parameter is required.")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidRequestError("messages: must be a non-empty list of messages")
    # Type checks first: a falsy value of the wrong type (0, "", {}) is refused, not taken for "off".
    if not _is_off(body.get("stream")):
        raise InvalidRequestError("stream: streaming is not supported here; send stream=false")
    n = body.get("n")
    if n is not None and (type(n) is not int or n != 1):
        raise InvalidRequestError("n: only n=1 is supported")
    if not _is_off(body.get("logprobs")):
        raise InvalidRequestError("logprobs: not supported by this server")
    response_format = body.get("response_format")
    if response_format is not None and response_format != {"type": "text"}:
        raise InvalidRequestError("response_format: only {'type': 'text'} is supported")

    system: list[str] = []
    turns: list[dict[str, Any]] = []
    for index, item in enumerate(messages):
        if not isinstance(item, dict):
            raise InvalidRequestError(f"messages.{index}: must be an object")
        role = item.get("role")
        if role in ("system", "developer"):
            system.append(_text_of(item.get("content"), f"messages.{index}.content"))
        elif role == "user":
            content = item.get("content")
            if isinstance(content, str) and (not turns or turns[-1]["role"] != "user"):
                turns.append({"role": "user", "content": content})  # the common case, kept a plain string
            else:
                _append(turns, "user", [_text_block(_text_of(content, f"messages.{index}.content"))])
        elif role == "assistant":
            _append(turns, "assistant", _assistant_blocks(item, index))
        elif role == "tool":
            call_id = item.get("tool_call_id")
            if not isinstance(call_id, str) or not call_id:
                raise InvalidRequestError(f"messages.{index}.tool_call_id: required for a tool message")
            text = _text_of(item.get("content"), f"messages.{index}.content")
            _append(turns, "user", [{"type": "tool_result", "tool_use_id": call_id, "content": text}])
        else:
            raise InvalidRequestError(f"messages.{index}.role: unsupported role {role!r}")
    if not turns:
        raise InvalidRequestError("messages: at least one user message is required")

    for key in ("max_completion_tokens", "max_tokens"):
        value = body.get(key)
        if value is not None and (type(value) is not int or value < 1):
            raise InvalidRequestError(f"{key}: must be an integer of at least 1")
    max_tokens = body.get("max_completion_tokens")
    if max_tokens is None:
        max_tokens = body.get("max_tokens")
    params: dict[str, Any] = {
        "model": model,
        "messages": turns,
        "max_tokens": DEFAULT_MAX_TOKENS if max_tokens is None else max_tokens,
    }
    if system:
        params["system"] = "\n".join(system)
    temperature = body.get("temperature")
    if isinstance(temperature, int | float) and not isinstance(temperature, bool) and temperature > 1:
        raise InvalidRequestError("temperature: values above 1 are not supported by this server's backends")
    for source, target in (("temperature", "temperature"), ("top_p", "top_p"), ("top_k", "top_k")):
        if body.get(source) is not None:
            params[target] = body[source]
    stop = body.get("stop")
    if stop is not None:
        params["stop_sequences"] = [stop] if isinstance(stop, str) else stop
    params.update(_tools(body))
    return _validated(params, body)


def _is_off(value: Any) -> bool:
    """Absent, null or false (`in (None, False)` would also pass 0, since 0 == False)."""
    return value is None or value is False


def _validated(params: dict[str, Any], body: dict[str, Any]) -> ChatCompletionParams:
    try:
        validated = ChatCompletionParams.model_validate(params)
    except ValidationError as exc:
        raise InvalidRequestError(describe_validation_error(exc)) from None
    validated._chat_body = body
    return validated


def _append(turns: list[dict[str, Any]], role: str, blocks: list[dict[str, Any]]) -> None:
    """Consecutive messages of one role merge into one turn (tool results and the user's text alike)."""
    if turns and turns[-1]["role"] == role:
        previous = turns[-1]["content"]
        if isinstance(previous, str):
            turns[-1]["content"] = previous = [_text_block(previous)]
        previous.extend(blocks)
    else:
        turns.append({"role": role, "content": blocks})


def _text_block(text: str) -> dict[str, Any]:
    return {"type": "text", "text": text}


def _text_of(content: Any, where: str) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for index, part in enumerate(content):
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                kind = part.get("type") if isinstance(part, dict) else type(part).__name__
                raise InvalidRequestError(f"{where}.{index}: only text parts are supported, got {kind!r}")
            texts.append(part["text"])
        return "\n".join(texts)
    raise InvalidRequestError(f"{where}: must be a string or a list of text parts")


def _assistant_blocks(item: dict[str, Any], index: int) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    content = item.get("content")
    if content is not None and content != "" and content != []:
        blocks.append(_text_block(_text_of(content, f"messages.{index}.content")))
    calls = item.get("tool_calls")
    if calls is not None and not isinstance(calls, list):
        raise InvalidRequestError(f"messages.{index}.tool_calls: must be a list")
    for call_index, call in enumerate(calls or []):
        where = f"messages.{index}.tool_calls.{call_index}"
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise InvalidRequestError(f"{where}: must be a function call with a name")
        try:
            arguments = json.loads(function.get("arguments") or "{}")
        except (TypeError, ValueError):
            raise InvalidRequestError(f"{where}.function.arguments: must be a JSON object string") from None
        if not isinstance(arguments, dict):
            raise InvalidRequestError(f"{where}.function.arguments: must be a JSON object string")
        blocks.append(
            {
                "type": "tool_use",
                "id": str(call.get("id") or ids.tool_use_id()),
                "name": function["name"],
                "input": arguments,
            }
        )
    if not blocks:
        raise InvalidRequestError(f"messages.{index}: an assistant message needs content or tool_calls")
    return blocks


def _tools(body: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    tools = body.get("tools")
    if tools is not None and not isinstance(tools, list):
        raise InvalidRequestError("tools: must be a list of function tools")
    if tools:
        converted = []
        for index, tool in enumerate(tools):
            function = tool.get("function") if isinstance(tool, dict) else None
            if not isinstance(tool, dict) or tool.get("type") != "function" or not isinstance(function, dict):
                raise InvalidRequestError(f"tools.{index}: only function tools are supported")
            parameters = function.get("parameters")
            if parameters is not None and not isinstance(parameters, dict):
                raise InvalidRequestError(f"tools.{index}.function.parameters: must be a JSON Schema object")
            converted_tool: dict[str, Any] = {
                "name": function.get("name"),
                "input_schema": parameters or {"type": "object", "properties": {}},
            }
            if function.get("description") is not None:
                converted_tool["description"] = function["description"]
            converted.append(converted_tool)
        result["tools"] = converted
    choice = body.get("tool_choice")
    if choice is None:
        return result
    if choice == "auto":
        result["tool_choice"] = {"type": "auto"}
    elif choice == "required":
        result["tool_choice"] = {"type": "any"}
    elif choice == "none":
        result["tool_choice"] = {"type": "none"}
    elif isinstance(choice, dict) and isinstance(choice.get("function"), dict):
        result["tool_choice"] = {"type": "tool", "name": choice["function"].get("name")}
    else:
        raise InvalidRequestError("tool_choice: must be 'auto', 'required', 'none' or a function")
    return result


def chat_completion(message: Message, *, model: str) -> dict[str, Any]:
    """The ChatCompletion for a Message (every key the SDK requires; usage always present); the
    upstream's own completion where an OpenAI-compatible backend answered natively."""
    native = message.get(NATIVE_COMPLETION)
    if isinstance(native, dict):
        return _normalized(native, message, model=model)
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for block in message.get("content") or ():
        kind = block.get("type")
        if kind == "text":
            texts.append(block["text"])
        elif kind == "tool_use":
            calls.append(
                {
                    "id": block["id"],
                    "type": "function",
                    "function": {"name": block["name"], "arguments": json.dumps(block.get("input") or {})},
                }
            )
    reply: dict[str, Any] = {
        "role": "assistant",
        "content": "".join(texts) if texts or not calls else None,
        "refusal": None,
    }
    if calls:
        reply["tool_calls"] = calls
    usage = message.get("usage") or {}
    cached = usage.get("cache_read_input_tokens") or 0
    prompt = (usage.get("input_tokens") or 0) + cached + (usage.get("cache_creation_input_tokens") or 0)
    completion = usage.get("output_tokens") or 0
    message_id = message.get("id")
    return {
        "id": "chatcmpl-" + (message_id[4:] if isinstance(message_id, str) else ids.message_id()[4:]),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": reply,
                "logprobs": None,
                "finish_reason": _FINISH_REASONS.get(str(message.get("stop_reason")), "stop"),
            }
        ],
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": cached},
        },
        "system_fingerprint": None,
    }


_encode = msgspec.json.Encoder().encode
TEXT_COMPLETION = (
    b'{"id":%s,"object":"chat.completion","created":%d,"model":%s,"choices":[{"index":0,"message":'
    b'{"role":"assistant","content":%s,"refusal":null},"logprobs":null,"finish_reason":"%s"}],'
    b'"usage":{"prompt_tokens":%d,"completion_tokens":%d,"total_tokens":%d,'
    b'"prompt_tokens_details":{"cached_tokens":%d}},"system_fingerprint":null}'
)
"""`chat_completion` for a reply without tool calls, as the bytes msgspec would encode it (same keys, same
order), to fill with `text_completion_values`: a batch renders one per request, and a template skips
building the dicts."""


def chat_completion_json(message: Message, *, model: str) -> bytes:
    """`chat_completion(message, model=model)` encoded as JSON."""
    values = text_completion_values(message, model=model)
    return TEXT_COMPLETION % values if values is not None else _encode(chat_completion(message, model=model))


def text_completion_values(message: Message, *, model: str) -> tuple[bytes | int, ...] | None:
    """What `TEXT_COMPLETION` takes for `chat_completion(message, model=model)`; None where the template
    does not fit (tool calls, an upstream's own completion, usage that is not plain integers)."""
    text = _plain_reply_text(message)
    usage = message.get("usage") or {}
    input_tokens = usage.get("input_tokens") or 0
    cached = usage.get("cache_read_input_tokens") or 0
    creation = usage.get("cache_creation_input_tokens") or 0
    completion = usage.get("output_tokens") or 0
    if text is None or not (
        type(input_tokens) is int and type(cached) is int and type(creation) is int and type(completion) is int
    ):
        return None
    message_id = message.get("id")
    prompt = input_tokens + cached + creation
    return (
        _encode("chatcmpl-" + (message_id[4:] if isinstance(message_id, str) else ids.message_id()[4:])),
        int(time.time()),
        _encoded_model(model),
        _encode(text),
        _FINISH_REASON_BYTES.get(reason, b"stop") if type(reason := message.get("stop_reason")) is str else b"stop",
        prompt,
        completion,
        prompt + completion,
        cached,
    )


@functools.lru_cache(maxsize=256)
def _encoded_model(model: str) -> bytes:
    """A model name as JSON: a batch names the same one in every line."""
    return _encode(model)


def _plain_reply_text(message: Message) -> str | None:
    """The reply's text if `chat_completion` would answer with text alone (None: tool calls, or an
    OpenAI-compatible upstream's own completion)."""
    if NATIVE_COMPLETION in message:
        return None
    blocks: list[dict[str, Any]] = message.get("content") or []
    if len(blocks) == 1 and blocks[0].get("type") == "text":
        text = blocks[0]["text"]
        return text if type(text) is str else None  # the general path says what is wrong
    texts = []
    for block in blocks:
        kind = block.get("type")
        if kind == "tool_use":
            return None
        if kind == "text":
            texts.append(block["text"])
    return "".join(texts)


def _normalized(data: dict[str, Any], message: Message, *, model: str) -> dict[str, Any]:
    """An upstream's completion as the SDK's strict types accept it: the client's model name, a
    finish_reason among OpenAI's, usage with all three counts, no service tier OpenAI does not name."""
    translated = chat_completion({k: v for k, v in message.items() if k != NATIVE_COMPLETION}, model=model)
    completion = {**translated, **data, "object": "chat.completion", "model": model}
    if not isinstance(completion.get("id"), str):
        completion["id"] = translated["id"]
    if not isinstance(completion.get("created"), int):
        completion["created"] = translated["created"]
    choices = []
    raw_choices = data.get("choices")
    for index, choice in enumerate(raw_choices if isinstance(raw_choices, list) else []):
        if not isinstance(choice, dict) or not isinstance(choice.get("message"), dict):
            continue
        reason = choice.get("finish_reason")
        choices.append(
            {
                **choice,
                "index": choice.get("index") if isinstance(choice.get("index"), int) else index,
                "message": {**choice["message"], "role": "assistant"},
                "finish_reason": reason
                if reason in _FINISH_REASON_VALUES
                else translated["choices"][0]["finish_reason"],
            }
        )
    completion["choices"] = choices or translated["choices"]
    usage = data.get("usage")
    if not (
        isinstance(usage, dict)
        and all(isinstance(usage.get(key), int) for key in ("prompt_tokens", "completion_tokens", "total_tokens"))
    ):
        completion["usage"] = translated["usage"]
    if completion.get("service_tier") not in _SERVICE_TIERS:
        completion["service_tier"] = None
    return completion
