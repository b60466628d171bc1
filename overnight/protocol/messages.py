"""The Messages API request, typed: what a batch request's `params` must be.

Validation happens in the engine, per request (never on the create path), and a failure becomes an
`errored` result whose message names the field, e.g. `messages.0.content: Field required`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from overnight.exceptions import InvalidRequestError
from overnight.protocol.fast_params import ParamsAssembler
from overnight.protocol.validation import Location, describe_error, is_type_label


# Strict types, as the API has them: "5" is not an integer and 0 is not a boolean (an integer is still
# a number).
class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class _Open(BaseModel):
    """Blocks and options overnight passes through without interpreting every field."""

    model_config = ConfigDict(extra="allow", frozen=True, strict=True)


class CacheControl(_Open):
    type: Literal["ephemeral"]
    ttl: str | None = None


class TextBlock(_Open):
    type: Literal["text"]
    text: str
    cache_control: CacheControl | None = None
    citations: list[dict[str, Any]] | None = None


class Base64ImageSource(_Strict):
    type: Literal["base64"]
    media_type: Literal["image/jpeg", "image/png", "image/gif", "image/webp"]
    data: str


class UrlImageSource(_Strict):
    type: Literal["url"]
    url: str


class FileSource(_Strict):
    type: Literal["file"]
    file_id: str


ImageSource = Annotated[Base64ImageSource | UrlImageSource | FileSource, Field(discriminator="type")]


class ImageBlock(_Open):
    type: Literal["image"]
    source: ImageSource
    cache_control: CacheControl | None = None


class DocumentBlock(_Open):
    type: Literal["document"]
    source: dict[str, Any]
    title: str | None = None
    context: str | None = None
    cache_control: CacheControl | None = None


class ToolUseBlock(_Open):
    type: Literal["tool_use"]
    id: str
    name: str
    input: dict[str, Any]
    cache_control: CacheControl | None = None


class ToolResultBlock(_Open):
    type: Literal["tool_result"]
    tool_use_id: str
    content: str | list[Annotated[TextBlock | ImageBlock | DocumentBlock, Field(discriminator="type")]] | None = None
    is_error: bool | None = None
    cache_control: CacheControl | None = None


class ThinkingBlock(_Open):
    type: Literal["thinking"]
    thinking: str
    signature: str


class RedactedThinkingBlock(_Open):
    type: Literal["redacted_thinking"]
    data: str


class OtherBlock(_Open):
    """Server-tool and search blocks: accepted and passed through; backends that can't use them say so."""

    type: Literal[
        "search_result",
        "server_tool_use",
        "web_search_tool_result",
        "web_fetch_tool_result",
        "code_execution_tool_result",
        "container_upload",
        "mcp_tool_use",
        "mcp_tool_result",
    ]


ContentBlock = Annotated[
    TextBlock
    | ImageBlock
    | DocumentBlock
    | ToolUseBlock
    | ToolResultBlock
    | ThinkingBlock
    | RedactedThinkingBlock
    | OtherBlock,
    Field(discriminator="type"),
]


class MessageParam(_Strict):
    role: Literal["user", "assistant"]
    content: str | list[ContentBlock]


class Tool(_Open):
    name: str = Field(min_length=1, max_length=128)
    input_schema: dict[str, Any] | None = None
    description: str | None = None
    type: str | None = None


class ToolChoiceAuto(_Strict):
    type: Literal["auto"]
    disable_parallel_tool_use: bool | None = None


class ToolChoiceAny(_Strict):
    type: Literal["any"]
    disable_parallel_tool_use: bool | None = None


class ToolChoiceTool(_Strict):
    type: Literal["tool"]
    name: str
    disable_parallel_tool_use: bool | None = None


class ToolChoiceNone(_Strict):
    type: Literal["none"]


ToolChoice = Annotated[ToolChoiceAuto | ToolChoiceAny | ToolChoiceTool | ToolChoiceNone, Field(discriminator="type")]


class ThinkingEnabled(_Strict):
    type: Literal["enabled"]
    budget_tokens: int = Field(ge=1024)
    display: str | None = None


class ThinkingDisabled(_Strict):
    type: Literal["disabled"]


class ThinkingAdaptive(_Open):
    type: Literal["adaptive"]


Thinking = Annotated[ThinkingEnabled | ThinkingDisabled | ThinkingAdaptive, Field(discriminator="type")]


class Metadata(_Strict):
    user_id: str | None = Field(default=None, max_length=256)


class MessageCreateParams(_Strict):
    """`MessageCreateParamsNonStreaming`, as the SDKs send it inside a batch request.

    Top-level keys overnight does not know are kept (`unknown_keys()`): an Anthropic upstream gets
    them as sent (the API grows faster than this model), every other backend refuses them by name.
    """

    model_config = ConfigDict(extra="allow", frozen=True, populate_by_name=True, strict=True)

    model: str = Field(min_length=1, max_length=256)
    max_tokens: int = Field(ge=1)
    messages: list[MessageParam] = Field(min_length=1)
    system: str | list[TextBlock] | None = None
    temperature: float | None = Field(default=None, ge=0.0, le=1.0)
    top_p: float | None = Field(default=None, ge=0.0, le=1.0)
    top_k: int | None = Field(default=None, ge=0)
    stop_sequences: list[str] | None = None
    tools: list[Tool] | None = None
    tool_choice: ToolChoice | None = None
    thinking: Thinking | None = None
    metadata: Metadata | None = None
    stream: bool | None = None  # false or absent: see _check_consistency
    # Passed through to upstreams that understand them; local backends refuse what they can't honour.
    service_tier: Literal["auto", "standard_only"] | None = None
    cache_control: CacheControl | None = None
    container: Any = None
    context_management: Any = None
    mcp_servers: list[dict[str, Any]] | None = None
    output_config: dict[str, Any] | None = None
    output_format: dict[str, Any] | None = None
    inference_geo: str | None = None
    speed: Literal["standard", "fast"] | None = None
    diagnostics: Any = None
    # Header-like keys the SDKs may leave inside params, tolerated under either spelling (the alias is
    # the renamed one, `anthropic-beta`; the field name the plain one, `betas`) and never forwarded.
    betas: list[str] | None = Field(default=None, alias="anthropic-beta")
    user_profile_id: str | None = Field(default=None, alias="anthropic-user-profile-id")
    workspace_id: str | None = Field(default=None, alias="anthropic-workspace-id")

    @field_validator("betas", mode="before")
    @classmethod
    def _split_betas(cls, value: Any) -> Any:
        return value.split(",") if isinstance(value, str) else value

    def forwardable(self) -> dict[str, Any]:
        """The params as JSON-ready data, without the header-like keys, for an upstream Messages API."""
        data = self.model_dump(mode="json", exclude_none=True, exclude={"stream", *_HEADER_FIELDS})
        for key in _HEADER_KEYS:  # a second spelling of one lands among the unknown keys
            data.pop(key, None)
        return data

    def with_betas(self, betas: Sequence[str]) -> MessageCreateParams:
        """These params with `betas` (from the request's `anthropic-beta` header) added to their own."""
        merged = list(dict.fromkeys([*betas, *(self.betas or ())]))
        return self if merged == self.betas else self.model_copy(update={"betas": merged})

    def unknown_keys(self) -> list[str]:
        """Top-level keys this model does not know, in the order sent."""
        extra = self.__pydantic_extra__
        return [key for key in extra if key not in _HEADER_KEYS] if extra else []


# Header-like keys the SDKs may leave inside params, under either spelling; never sent upstream as params.
_HEADER_FIELDS = {"betas", "user_profile_id", "workspace_id"}
_HEADER_KEYS = {*_HEADER_FIELDS, "anthropic-beta", "anthropic-user-profile-id", "anthropic-workspace-id"}


_BLOCK_TYPES = {
    "text",
    "image",
    "document",
    "tool_use",
    "tool_result",
    "thinking",
    "redacted_thinking",
    "search_result",
    "server_tool_use",
    "web_search_tool_result",
    "web_fetch_tool_result",
    "code_execution_tool_result",
    "container_upload",
    "mcp_tool_use",
    "mcp_tool_result",
    "base64",
    "url",
    "file",
    "auto",
    "any",
    "tool",
    "none",
    "enabled",
    "disabled",
    "adaptive",
}


def parse_params(raw: bytes | bytearray | memoryview | str) -> MessageCreateParams:
    """Validate one request's params, raising `InvalidRequestError` that names the offending field."""
    params = _fast.parse(raw)  # the common shapes, in C; anything else (or wrong) is pydantic's to judge
    if params is None:
        params = parse_params_with_pydantic(raw)
    _check_consistency(params)
    return params


def parse_params_with_pydantic(raw: bytes | bytearray | memoryview | str) -> MessageCreateParams:
    """The general path: every shape the API accepts, and the wording of every error (no consistency
    checks: `parse_params` adds those)."""
    try:
        return MessageCreateParams.model_validate_json(bytes(raw) if isinstance(raw, memoryview) else raw)
    except ValidationError as exc:
        raise InvalidRequestError(describe_validation_error(exc)) from None
    except (RecursionError, UnicodeDecodeError):  # pydantic reports both itself today; kept a 400 if not
        raise InvalidRequestError("params: invalid JSON (nested too deeply or not UTF-8)") from None


_fast = ParamsAssembler(MessageCreateParams, MessageParam, TextBlock, CacheControl, Metadata)


def _check_consistency(params: MessageCreateParams) -> None:
    """Rules beyond each field's own type, as the API states them."""
    if params.stream:
        raise InvalidRequestError("stream: streaming is not supported by this server; send stream: false")
    if params.thinking is None and params.tool_choice is None:
        return  # the common case: nothing below applies
    if isinstance(params.thinking, ThinkingEnabled) and params.thinking.budget_tokens >= params.max_tokens:
        raise InvalidRequestError(
            f"thinking.budget_tokens: must be less than max_tokens ({params.thinking.budget_tokens} >= "
            f"{params.max_tokens})"
        )
    choice = params.tool_choice
    if isinstance(choice, ToolChoiceAny | ToolChoiceTool) and not params.tools:
        raise InvalidRequestError(f"tool_choice: type {choice.type!r} may only be specified while providing tools")
    if isinstance(choice, ToolChoiceTool) and params.tools and choice.name not in {t.name for t in params.tools}:
        raise InvalidRequestError(f"tool_choice.name: no tool named {choice.name!r} in tools")


def describe_validation_error(exc: ValidationError) -> str:
    """`field.path: message` for the first error, like the real API's messages."""
    # With unions pydantic reports one error per branch; the deepest one is the branch that matched.
    first = max(exc.errors(include_url=False), key=lambda error: len(error["loc"]))
    if first["type"] == "json_invalid":
        return f"params: invalid JSON ({first['msg']})"
    if first["type"] == "model_type" and not [part for part in first["loc"] if not is_type_label(part)]:
        return "params: Input should be an object"
    return describe_error(first, is_label=_is_union_label, messages=_MESSAGES)


_MESSAGES = {"extra_forbidden": "Extra inputs are not permitted"}


_TAGGED_FIELDS = {"source", "tool_choice", "thinking"}


def _is_union_label(loc: Location, index: int) -> bool:
    """A branch label: `str`, `list[...]`, or a tagged block's type right after a list index or tagged field."""
    part = loc[index]
    if is_type_label(part):
        return True
    is_tag_position = index > 0 and (isinstance(loc[index - 1], int) or loc[index - 1] in _TAGGED_FIELDS)
    return is_tag_position and part in _BLOCK_TYPES and index < len(loc) - 1


def text_of(content: str | list[Any]) -> str:
    """The text of a message's content: the string, or its text blocks joined with a single space."""
    if isinstance(content, str):
        return content
    return " ".join(block.text for block in content if isinstance(block, TextBlock))
