"""Pydantic validation errors as one-line `location: message` texts, for clients and config files alike."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from pydantic_core import ErrorDetails

Location = tuple[int | str, ...]
_TYPE_LABELS = {"str", "int", "float", "bool", "list", "dict", "none"}


def is_type_label(part: int | str) -> bool:
    """A plain union's branch label that pydantic puts in locations (`str`, `list[...]`)."""
    return isinstance(part, str) and ("[" in part or part in _TYPE_LABELS)


def describe_error(
    error: ErrorDetails,
    *,
    is_label: Callable[[Location, int], bool],
    messages: Mapping[str, str] | None = None,
) -> str:
    """`location: message` for one error. `is_label(loc, index)` says which location parts are pydantic's
    union labels rather than keys (dropped); `messages` replaces the text of the error types it names."""
    loc = error["loc"]
    location = ".".join(str(part) for index, part in enumerate(loc) if not is_label(loc, index))
    message = (messages or {}).get(error["type"])
    if message is None and error["type"] == "value_error":
        message = str(error.get("ctx", {}).get("error", error["msg"]))  # without pydantic's "Value error, "
    message = message or error["msg"]
    return f"{location}: {message}" if location else message
