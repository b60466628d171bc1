"""A fast path for validating the common shapes of params, in C with msgspec.

pydantic validates one small request in ~7-10 µs, most of it building the models; at tens of
thousands of requests a second that is the control plane's largest cost. The Structs here accept only
a strict *subset* of what `MessageCreateParams` accepts (text-only content, the usual sampling
options, no unknown keys anywhere), with the same rules; whatever they refuse goes through pydantic,
which then accepts it or names the error as before. So this path can never accept what pydantic
refuses, nor change an error message — `tests/protocol/test_fast_params.py` checks both sides agree.

Accepted params become the very same pydantic models pydantic would build, assembled directly (their
`__dict__`, set fields and extras), since `model_construct` costs more than validating.
"""

from __future__ import annotations

from typing import Annotated, Any, Generic, Literal, TypeVar

import msgspec
from msgspec import UNSET, Meta, Struct, UnsetType
from msgspec.structs import astuple
from pydantic import BaseModel

_UnitFloat = Annotated[float, Meta(ge=0.0, le=1.0)]


class _FastCacheControl(Struct, forbid_unknown_fields=True, gc=False):
    type: Literal["ephemeral"]
    ttl: str | UnsetType | None = UNSET


class _FastTextBlock(Struct, forbid_unknown_fields=True, gc=False):
    type: Literal["text"]
    text: str
    cache_control: _FastCacheControl | UnsetType | None = UNSET


class _FastMessage(Struct, forbid_unknown_fields=True, gc=False):
    role: Literal["user", "assistant"]
    content: str | list[_FastTextBlock]


class _FastMetadata(Struct, forbid_unknown_fields=True, gc=False):
    user_id: Annotated[str, Meta(max_length=256)] | UnsetType | None = UNSET


class _FastParams(Struct, forbid_unknown_fields=True, gc=False):
    model: Annotated[str, Meta(min_length=1, max_length=256)]
    max_tokens: Annotated[int, Meta(ge=1)]
    messages: Annotated[list[_FastMessage], Meta(min_length=1)]
    system: str | list[_FastTextBlock] | UnsetType | None = UNSET
    temperature: _UnitFloat | UnsetType | None = UNSET
    top_p: _UnitFloat | UnsetType | None = UNSET
    top_k: Annotated[int, Meta(ge=0)] | UnsetType | None = UNSET
    stop_sequences: list[str] | UnsetType | None = UNSET
    metadata: _FastMetadata | UnsetType | None = UNSET
    stream: bool | UnsetType | None = UNSET


_decode = msgspec.json.Decoder(_FastParams).decode
_REQUIRED = 3  # model, max_tokens, messages: the Struct's first fields
_OPTIONAL = _FastParams.__struct_fields__[_REQUIRED:]
_NONE_SENT = (UNSET,) * len(_OPTIONAL)

M = TypeVar("M", bound=BaseModel)
P = TypeVar("P", bound=BaseModel)


class ParamsAssembler(Generic[P]):
    """Builds instances of the pydantic models in `messages.py` from values already validated."""

    def __init__(
        self,
        params: type[P],
        message: type[BaseModel],
        text: type[BaseModel],
        cache_control: type[BaseModel],
        metadata: type[BaseModel],
    ) -> None:
        self.params, self.message, self.text = params, message, text
        self.cache_control, self.metadata = cache_control, metadata
        # Every field in declaration order (pydantic's own `__dict__` order), at its default.
        self._params_defaults = {name: field.default for name, field in params.model_fields.items()}

    def parse(self, raw: bytes | bytearray | memoryview | str) -> P | None:
        """The params as pydantic would build them, or None when they are not in the fast subset."""
        try:
            fast = _decode(raw)
        except (msgspec.ValidationError, msgspec.DecodeError, UnicodeDecodeError, RecursionError):
            return None  # pydantic decides, and words any error
        values = self._params_defaults.copy()
        values["model"] = fast.model
        values["max_tokens"] = fast.max_tokens
        values["messages"] = [self._message(turn) for turn in fast.messages]
        fields_set = {"model", "max_tokens", "messages"}
        optional = astuple(fast)[_REQUIRED:]
        if optional != _NONE_SENT:  # the commonest shape skips this loop
            for name, value in zip(_OPTIONAL, optional, strict=True):
                if value is UNSET:
                    continue
                fields_set.add(name)
                if name == "system" and isinstance(value, list):
                    value = [self._text(block) for block in value]
                elif name == "metadata" and value is not None:
                    value = self._metadata(value)
                values[name] = value
        return _assemble(self.params, values, fields_set, {})

    def build(self, fields: dict[str, Any], private: dict[str, Any] | None = None) -> P:
        """Params from top-level values that already meet every rule the model checks (`messages` made
        with `text_turn`), as pydantic would build them; `private`: the model's private attributes."""
        values = self._params_defaults.copy()
        values.update(fields)
        return _assemble(self.params, values, set(fields), {}, private)

    def text_turn(self, role: str, content: str) -> BaseModel:
        """A message of `role` ("user" or "assistant") with plain string content."""
        return _assemble(self.message, {"role": role, "content": content}, {"role", "content"}, None)

    def _message(self, turn: _FastMessage) -> BaseModel:
        content: Any = turn.content
        if content.__class__ is not str:
            content = [self._text(block) for block in content]
        return _assemble(self.message, {"role": turn.role, "content": content}, {"role", "content"}, None)

    def _text(self, block: _FastTextBlock) -> BaseModel:
        values: dict[str, Any] = {"type": "text", "text": block.text, "cache_control": None, "citations": None}
        fields_set = {"type", "text"}
        if block.cache_control is not UNSET:
            fields_set.add("cache_control")
            if block.cache_control is not None:
                values["cache_control"] = self._cache_control(block.cache_control)
        return _assemble(self.text, values, fields_set, {})

    def _cache_control(self, control: _FastCacheControl) -> BaseModel:
        fields_set = {"type"} if control.ttl is UNSET else {"type", "ttl"}
        ttl = None if control.ttl is UNSET else control.ttl
        return _assemble(self.cache_control, {"type": control.type, "ttl": ttl}, fields_set, {})

    def _metadata(self, metadata: _FastMetadata) -> BaseModel:
        fields_set = set() if metadata.user_id is UNSET else {"user_id"}
        user_id = None if metadata.user_id is UNSET else metadata.user_id
        return _assemble(self.metadata, {"user_id": user_id}, fields_set, None)


# BaseModel's own slots, set through their descriptors: the models are frozen (their __setattr__
# refuses), and `object.__setattr__` would look each descriptor up again on every call.
_SLOTS = BaseModel.__dict__
_set_dict = _SLOTS["__dict__"].__set__
_set_fields_set = _SLOTS["__pydantic_fields_set__"].__set__
_set_extra = _SLOTS["__pydantic_extra__"].__set__
_set_private = _SLOTS["__pydantic_private__"].__set__
_new = object.__new__


def _assemble(
    cls: type[M],
    values: dict[str, Any],
    fields_set: set[str],
    extra: dict[str, Any] | None,
    private: dict[str, Any] | None = None,
) -> M:
    """A validated instance of `cls` from its field values: exactly the state pydantic leaves one in.

    `extra` is `{}` for models that allow extra keys (none were sent), None for those that forbid them;
    `private` holds every private attribute of a model that has some (None: it has none).
    """
    instance: M = _new(cls)
    _set_dict(instance, values)
    _set_fields_set(instance, fields_set)
    _set_extra(instance, extra)
    _set_private(instance, private)
    return instance
