"""The Messages API request, typed: what a batch request's `params` must be.

Validation happens in the engine, per request (never on the create path), and a failure becomes an
`errored` result whose message names the field, e.g. `messages.0.content: Field required`.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from overnight.exceptions import InvalidRequestError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _Open(BaseModel):
    """Blocks and options overnight passes through without interpreting every field."""

    model_config = ConfigDict(extra="allow", frozen=True)


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


ToolChoice = Annotated[
    ToolChoiceAuto | ToolChoiceAny | ToolChoiceTool | ToolChoiceNone, Field(discriminator="type")
]


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
    """`MessageCreateParamsNonStreaming`, as the SDKs send it inside a batch request."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

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
    stream: Literal[False] | None = None
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
        return self.model_dump(
            mode="json", exclude_none=True, exclude={"betas", "user_profile_id", "workspace_id", "stream"}
        )


_BLOCK_TYPES = {
    "text", "image", "document", "tool_use", "tool_result", "thinking", "redacted_thinking",
    "search_result", "server_tool_use", "web_search_tool_result", "web_fetch_tool_result",
    "code_execution_tool_result", "container_upload", "mcp_tool_use", "mcp_tool_result",
    "base64", "url", "file", "auto", "any", "tool", "none", "enabled", "disabled", "adaptive",
}


def parse_params(raw: bytes | bytearray | memoryview | str) -> MessageCreateParams:
    """Validate one request's params, raising `InvalidRequestError` that names the offending field."""
    try:
        return MessageCreateParams.model_validate_json(bytes(raw) if isinstance(raw, memoryview) else raw)
    except ValidationError as exc:
        raise InvalidRequestError(describe_validation_error(exc)) from None


def describe_validation_error(exc: ValidationError) -> str:
    """`field.path: message` for the first error, like the real API's messages."""
    # With unions pydantic reports one error per branch; the deepest one is the branch that matched.
    first = max(exc.errors(include_url=False), key=lambda error: len(error["loc"]))
    location = ".".join(str(part) for part in _without_union_labels(first["loc"]))
    if first["type"] == "json_invalid":
        return f"params: invalid JSON ({first['msg']})"
    if first["type"] == "model_type" and not location:
        return "params: Input should be an object"
    message = first["msg"]
    if first["type"] == "extra_forbidden":
        message = "Extra inputs are not permitted"
    return f"{location}: {message}" if location else message


_TAGGED_FIELDS = {"source", "tool_choice", "thinking"}
_TYPE_LABELS = {"str", "int", "float", "bool", "list", "dict", "none"}


def _without_union_labels(loc: tuple[int | str, ...]) -> list[int | str]:
    """Drop the branch labels pydantic adds for unions (`str`, `list[...]`, a tagged block's type)."""
    kept: list[int | str] = []
    for index, part in enumerate(loc):
        if isinstance(part, str) and ("[" in part or part in _TYPE_LABELS):
            continue
        is_tag_position = index > 0 and (isinstance(loc[index - 1], int) or loc[index - 1] in _TAGGED_FIELDS)
        if is_tag_position and part in _BLOCK_TYPES and index < len(loc) - 1:
            continue
        kept.append(part)
    return kept


def text_of(content: str | list[Any]) -> str:
    """The text of a message's content: the string, or its text blocks joined with a single space."""
    if isinstance(content, str):
        return content
    return " ".join(block.text for block in content if isinstance(block, TextBlock))
