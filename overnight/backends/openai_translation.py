"""Messages API params → OpenAI chat-completions request, and the completion back → Message.

Pure functions, no I/O. The translation is faithful or it refuses: what chat completions cannot
express raises `InvalidRequestError` naming the feature (see `features.py` for the top-level options
that are ignored as hints). Choices made where the formats differ:

- `system` (string or text blocks) becomes one leading `system` message; blocks are joined with "\\n".
- A user turn's `tool_result` blocks become `role: tool` messages placed first (they must follow the
  assistant message holding the calls); the turn's other parts follow as one user message.
- Text-only content is sent as a string (text blocks joined with "\\n", as vLLM does with parts), so
  servers that only read string content still see it; content with images is sent as parts.
- Earlier assistant `thinking`/`redacted_thinking` blocks are left out: the Messages API itself
  strips previous turns' thinking from the model's context.
- An assistant prefill (the last message from the assistant) has no chat-completions equivalent
  and is refused.
- `stop_reason: "stop_sequence"` only where the upstream names the matched string (vLLM); a bare
  `finish_reason: "stop"` is `end_turn`, since it may as well be an end-of-turn token.
- The Message echoes the client's model name; its id is a fresh `msg_` id. Tool calls become
  tool_use blocks with `toolu_` ids: an upstream id already in that form is kept, any other
  (`call_...`) is replaced by a fresh one; later turns send our ids upstream unchanged.
"""

from __future__ import annotations

import json
from typing import Any

from overnight.backends.features import refuse_unsupported_options, unsupported
from overnight.exceptions import ApiError, InvalidRequestError
from overnight.protocol.messages import (
    Base64ImageSource,
    ImageBlock,
    MessageCreateParams,
    MessageParam,
    RedactedThinkingBlock,
    TextBlock,
    ThinkingBlock,
    ToolChoiceAny,
    ToolChoiceAuto,
    ToolChoiceNone,
    ToolChoiceTool,
    ToolResultBlock,
    ToolUseBlock,
    UrlImageSource,
)
from overnight.protocol.results import Message, message, text_block, tool_use_block

BACKEND = "openai"

# Tool fields chat completions can carry (`strict` maps to function.strict) or that are only hints.
_TOOL_FIELDS = {"name", "description", "input_schema", "type", "cache_control", "strict"}
_EMPTY_SCHEMA: dict[str, Any] = {"type": "object", "properties": {}}


# --- request --------------------------------------------------------------------------------------


def to_chat_completion(params: MessageCreateParams, *, model: str | None = None) -> dict[str, Any]:
    """The chat-completions request body for `params`, asking the upstream for `model` (default: params')."""
    refuse_unsupported_options(params, BACKEND)
    if params.messages[-1].role == "assistant":
        raise unsupported("assistant prefill (a final assistant message)", BACKEND)

    messages: list[dict[str, Any]] = []
    if params.system:
        system = params.system if isinstance(params.system, str) else "\n".join(b.text for b in params.system)
        messages.append({"role": "system", "content": system})
    for index, turn in enumerate(params.messages):
        if turn.role == "user":
            messages.extend(_user_messages(turn, index))
        else:
            messages.append(_assistant_message(turn, index))

    body: dict[str, Any] = {"model": model or params.model, "messages": messages, "max_tokens": params.max_tokens}
    if params.temperature is not None:
        body["temperature"] = params.temperature
    if params.top_p is not None:
        body["top_p"] = params.top_p
    if params.top_k is not None:
        # Not in OpenAI's schema, but vLLM, llama.cpp, llama-cpp-python and Ollama read it.
        body["top_k"] = params.top_k
    if params.stop_sequences:
        body["stop"] = list(params.stop_sequences)
    if params.metadata is not None and params.metadata.user_id is not None:
        body["user"] = params.metadata.user_id
    body.update(_tools(params))
    return body


def _user_messages(turn: MessageParam, index: int) -> list[dict[str, Any]]:
    if isinstance(turn.content, str):
        return [{"role": "user", "content": turn.content}]
    tool_messages: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    for block in turn.content:
        if isinstance(block, ToolResultBlock):
            tool_messages.append(_tool_message(block, index))
        elif isinstance(block, TextBlock):
            parts.append({"type": "text", "text": block.text})
        elif isinstance(block, ImageBlock):
            parts.append(_image_part(block, f"messages.{index}"))
        else:
            raise _block_refusal(block.type, "user", index)
    if not parts:
        return tool_messages
    return [*tool_messages, {"role": "user", "content": _content(parts)}]


def _assistant_message(turn: MessageParam, index: int) -> dict[str, Any]:
    if isinstance(turn.content, str):
        return {"role": "assistant", "content": turn.content}
    texts: list[str] = []
    tool_calls: list[dict[str, Any]] = []
    for block in turn.content:
        if isinstance(block, TextBlock):
            texts.append(block.text)
        elif isinstance(block, ToolUseBlock):
            tool_calls.append(
                {
                    "id": block.id,
                    "type": "function",
                    "function": {"name": block.name, "arguments": json.dumps(block.input, ensure_ascii=False)},
                }
            )
        elif isinstance(block, ThinkingBlock | RedactedThinkingBlock):
            continue  # previous turns' thinking is not part of the model's context (see module doc)
        else:
            raise _block_refusal(block.type, "assistant", index)
    result: dict[str, Any] = {"role": "assistant", "content": "\n".join(texts) if texts else None}
    if tool_calls:
        result["tool_calls"] = tool_calls
    return result


def _tool_message(block: ToolResultBlock, index: int) -> dict[str, Any]:
    if block.content is None:
        text = ""
    elif isinstance(block.content, str):
        text = block.content
    else:
        texts = []
        for part in block.content:
            if not isinstance(part, TextBlock):
                raise unsupported(f"{part.type} blocks inside tool_result content (messages.{index})", BACKEND)
            texts.append(part.text)
        text = "\n".join(texts)
    if block.is_error:
        # Chat completions has no error flag on tool messages; the model must still learn it failed.
        text = f"Error: {text}" if text else "Error"
    return {"role": "tool", "tool_call_id": block.tool_use_id, "content": text}


def _image_part(block: ImageBlock, where: str) -> dict[str, Any]:
    source = block.source
    if isinstance(source, Base64ImageSource):
        url = f"data:{source.media_type};base64,{source.data}"
    elif isinstance(source, UrlImageSource):
        url = source.url
    else:
        raise unsupported(f"image file sources (file_id, {where})", BACKEND)
    return {"type": "image_url", "image_url": {"url": url}}


def _content(parts: list[dict[str, Any]]) -> str | list[dict[str, Any]]:
    if all(part["type"] == "text" for part in parts):
        return "\n".join(part["text"] for part in parts)
    return parts


def _block_refusal(block_type: str, role: str, index: int) -> InvalidRequestError:
    if block_type == "document":
        return unsupported(f"document blocks (messages.{index})", BACKEND)
    return unsupported(f"{block_type} blocks in {role} messages (messages.{index})", BACKEND)


def _tools(params: MessageCreateParams) -> dict[str, Any]:
    choice = params.tool_choice
    if not params.tools:
        if isinstance(choice, ToolChoiceAny | ToolChoiceTool):
            raise InvalidRequestError(f"tool_choice.type: {choice.type} requires tools")
        return {}

    tools = []
    for index, tool in enumerate(params.tools):
        if tool.type not in (None, "custom"):
            raise unsupported(f"server tool {tool.type!r} (tools.{index})", BACKEND)
        extra = sorted(set(tool.model_dump(exclude_none=True)) - _TOOL_FIELDS)
        if extra:
            raise unsupported(f"tools.{index}.{extra[0]}", BACKEND)
        function: dict[str, Any] = {"name": tool.name, "parameters": tool.input_schema or _EMPTY_SCHEMA}
        if tool.description is not None:
            function["description"] = tool.description
        strict = getattr(tool, "strict", None)
        if strict is not None:
            function["strict"] = strict
        tools.append({"type": "function", "function": function})

    result: dict[str, Any] = {"tools": tools}
    if isinstance(choice, ToolChoiceAuto):
        result["tool_choice"] = "auto"
    elif isinstance(choice, ToolChoiceAny):
        result["tool_choice"] = "required"
    elif isinstance(choice, ToolChoiceTool):
        result["tool_choice"] = {"type": "function", "function": {"name": choice.name}}
    elif isinstance(choice, ToolChoiceNone):
        result["tool_choice"] = "none"
    if choice is not None and not isinstance(choice, ToolChoiceNone) and choice.disable_parallel_tool_use:
        result["parallel_tool_calls"] = False
    return result


# --- response -------------------------------------------------------------------------------------


def from_chat_completion(data: dict[str, Any], params: MessageCreateParams) -> Message:
    """The Message for a chat-completions response to the request `params`."""
    choices = data.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise ApiError("the upstream's chat completion has no choices")
    choice = choices[0]
    reply = choice.get("message")
    if not isinstance(reply, dict):
        raise ApiError("the upstream's chat completion choice has no message")

    content: list[dict[str, Any]] = []
    text = _reply_text(reply.get("content"))
    if text:
        content.append(text_block(text))
    tool_uses = [_tool_use(call) for call in reply.get("tool_calls") or []]
    if isinstance(reply.get("function_call"), dict):  # the legacy single-call form
        tool_uses.append(_tool_use({"function": reply["function_call"]}))
    content.extend(tool_uses)

    raw_usage = data.get("usage")
    usage: dict[str, Any] = raw_usage if isinstance(raw_usage, dict) else {}
    prompt_tokens = _int(usage.get("prompt_tokens"))
    completion_tokens = _int(usage.get("completion_tokens"))
    stop_reason, stop_sequence = _stop_reason(choice, params, bool(tool_uses), completion_tokens)

    result = message(
        model=params.model,
        content=content,
        stop_reason=stop_reason,
        stop_sequence=stop_sequence,
        input_tokens=prompt_tokens,
        output_tokens=completion_tokens,
    )
    # OpenAI counts cached prompt tokens inside prompt_tokens; Anthropic reports them apart.
    details = usage.get("prompt_tokens_details")
    cached = details.get("cached_tokens") if isinstance(details, dict) else None
    if isinstance(cached, int) and 0 < cached <= prompt_tokens:
        result["usage"]["input_tokens"] = prompt_tokens - cached
        result["usage"]["cache_read_input_tokens"] = cached
    return result


def _reply_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # some servers answer with parts
        return "".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    return ""


def _tool_use(call: dict[str, Any]) -> dict[str, Any]:
    function = call.get("function")
    if not isinstance(function, dict) or not isinstance(function.get("name"), str):
        raise ApiError(f"the upstream returned a tool call without a function name: {call!r}"[:500])
    name = function["name"]
    arguments = function.get("arguments")
    if arguments is None or arguments == "":
        tool_input: Any = {}
    elif isinstance(arguments, dict):  # some servers send the object itself
        tool_input = arguments
    else:
        try:
            tool_input = json.loads(arguments)
        except (TypeError, ValueError):
            raise ApiError(
                f"the upstream's call to tool {name!r} has arguments that are not valid JSON: {arguments!r}"[:500]
            ) from None
    if not isinstance(tool_input, dict):
        raise ApiError(f"the upstream's call to tool {name!r} has arguments that are not a JSON object")
    # Tool_use ids have our `toolu_` form (the wire spec, §2); the upstream's own (`call_...`) is not
    # kept. The client sends our id back in later turns and the request side passes it on as
    # `tool_calls[].id` / `tool_call_id`: OpenAI-compatible servers take any id consistent within the
    # conversation, so nothing needs mapping back.
    call_id = call.get("id")
    ours = isinstance(call_id, str) and call_id.startswith("toolu_")
    return tool_use_block(name, tool_input, call_id if ours else None)


def _stop_reason(
    choice: dict[str, Any], params: MessageCreateParams, has_tool_calls: bool, completion_tokens: int
) -> tuple[str, str | None]:
    """The Messages stop_reason and stop_sequence for a choice's finish_reason.

    `stop_sequence` is claimed only when the upstream names the matched string, as vLLM does in the
    choice's `stop_reason`. Others (OpenAI, llama-cpp-python's server) say `finish_reason:
    "stop"` alike for an end-of-turn token, for the chat template's own stop string (llama-cpp-python
    adds e.g. Gemma's `<end_of_turn>\\n` to the client's list) and for a client stop string, and cut the
    text before the match; the text then holds no trace of which one ended it, not even with a single
    stop sequence sent. So that case is `end_turn`: a stop sequence is never reported unless it
    provably matched.
    """
    finish_reason = choice.get("finish_reason")
    if finish_reason == "length":
        # Fewer tokens than asked for and still cut off: the context window ran out, not max_tokens.
        if 0 < completion_tokens < params.max_tokens:
            return "model_context_window_exceeded", None
        return "max_tokens", None
    if finish_reason == "content_filter":
        return "refusal", None
    if has_tool_calls:
        # Some servers say "stop" with tool calls; clients run tools only on stop_reason tool_use.
        return "tool_use", None
    if finish_reason in ("tool_calls", "function_call"):
        return "tool_use", None
    # vLLM reports the matched stop string in `stop_reason` (an int there is a stop token id); without
    # it "stop" is end_turn even when stop sequences were sent (see the docstring).
    matched = choice.get("stop_reason")
    if isinstance(matched, str) and matched in (params.stop_sequences or []):
        return "stop_sequence", matched
    return "end_turn", None


def _int(value: Any) -> int:
    return value if isinstance(value, int) and value >= 0 else 0
