"""The prompt for a local model: its own chat template from the GGUF metadata, or a plain format without one.

With a template (`tokenizer.chat_template`, as instruct GGUFs carry it), the conversation is rendered by
llama-cpp-python's `Jinja2ChatFormatter`, exactly as the model's authors wrote it (ChatML for SmolLM2,
Gemma's turns for Gemma, Llama 3's headers, ...). Consecutive turns of one role are joined first (as the
Messages API itself treats them), texts are trimmed, and `system` becomes a leading system message (a
template without a system role decides itself where it goes, or refuses the conversation).

A final assistant turn is a prefill: the template renders it as a closed turn, and the prompt is cut
right after its text, so the model continues it (only its leading whitespace is dropped).

Without a template the plain format below is used; the turn also ends (as `end_turn`) when the model
starts a new `User:` line itself, since a model without a chat format will otherwise go on playing both
sides, and the space it writes after `Assistant:` is not part of the reply:

    {system}

    User: {text}
    Assistant: {text}
    User: {text}
    Assistant:

Control tokens can never come from the user's text: each text is rendered as a placeholder, and the
prompt becomes a list of `Piece`s, the template's own text tokenized with special tokens recognised and
every user/assistant/system text tokenized as plain text. A user who types "<|im_end|>" gets those
characters, not a turn boundary.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import jinja2

from overnight.exceptions import InvalidRequestError

Role = Literal["user", "assistant"]

PLAIN_FORMAT_STOP = "\nUser:"
# Private-use characters: they cannot collide with a template's own text, and `trim` leaves them whole.
_PLACEHOLDER = re.compile("\ue000(\\d+)\ue001")


@dataclass(frozen=True)
class Piece:
    text: str
    special: bool = False


@dataclass(frozen=True)
class ChatPrompt:
    pieces: list[Piece]
    # Generated text that ends the turn (cut off, reported as end_turn); the plain format's `User:` line.
    end_strings: tuple[str, ...] = ()
    # The reply's leading whitespace is the format's, not the answer's (the plain format's "Assistant: ").
    strip_leading_whitespace: bool = False


class ChatTemplate:
    """How one model is prompted: built once per model from its GGUF metadata."""

    def __init__(self, template: str | None, *, bos_token: str = "", eos_token: str = "") -> None:
        self.template = template or None
        self.bos_token = bos_token
        self.eos_token = eos_token
        if self.template is not None:
            from llama_cpp.llama_chat_format import Jinja2ChatFormatter

            self._open = Jinja2ChatFormatter(self.template, eos_token, bos_token, add_generation_prompt=True)
            self._prefill = Jinja2ChatFormatter(self.template, eos_token, bos_token, add_generation_prompt=False)

    def prompt(self, system: str | None, turns: Sequence[tuple[Role, str]]) -> ChatPrompt:
        merged = merge_consecutive(turns)
        system = system.strip() if system and system.strip() else None
        if self.template is None:
            return plain_prompt(system, merged, bos_token=self.bos_token)
        return self._templated(system, merged)

    def _templated(self, system: str | None, turns: list[tuple[Role, str]]) -> ChatPrompt:
        prefill = bool(turns) and turns[-1][0] == "assistant"
        texts: list[str] = []
        messages: list[dict[str, str]] = []

        def add(role: str, text: str) -> None:
            messages.append({"role": role, "content": f"\ue000{len(texts)}\ue001"})
            texts.append(text)

        if system is not None:
            add("system", system)
        for index, (role, text) in enumerate(turns):
            is_prefill = prefill and index == len(turns) - 1
            add(role, text.lstrip() if is_prefill else text.strip())
        formatter = self._prefill if prefill else self._open
        try:
            rendered = formatter(messages=messages).prompt  # type: ignore[arg-type]
        except (jinja2.TemplateError, ValueError) as exc:  # raise_exception("...") in a template is a ValueError
            raise InvalidRequestError(f"the model's chat template refuses this conversation: {exc}") from None
        if prefill:
            # Cut right after the prefill's text: the template's end-of-turn after it must not be sent.
            last = rendered.rfind(f"\ue000{len(texts) - 1}\ue001")
            if last == -1:
                raise InvalidRequestError("the model's chat template drops the final assistant turn (prefill)")
            rendered = rendered[: last + len(f"\ue000{len(texts) - 1}\ue001")]
        return ChatPrompt(_split(rendered, texts))


def plain_prompt(system: str | None, turns: Sequence[tuple[Role, str]], *, bos_token: str = "") -> ChatPrompt:
    """The documented format for a model without a chat template (see the module docstring)."""
    pieces = [Piece(bos_token, special=True)] if bos_token else []
    if system is not None:
        pieces.append(Piece(f"{system}\n\n"))
    for index, (role, text) in enumerate(turns):
        label = "User" if role == "user" else "Assistant"
        if role == "assistant" and index == len(turns) - 1:
            pieces.append(Piece(f"Assistant: {text.lstrip()}"))  # a prefill, continued as it stands
            return ChatPrompt(pieces, (PLAIN_FORMAT_STOP,))
        pieces.append(Piece(f"{label}: {text.strip()}\n"))
    pieces.append(Piece("Assistant:"))  # no trailing space: the model writes it, as one token with the word
    return ChatPrompt(pieces, (PLAIN_FORMAT_STOP,), strip_leading_whitespace=True)


def render(prompt: ChatPrompt) -> str:
    """The prompt as one string (for logs and tests; tokenize the pieces, not this)."""
    return "".join(piece.text for piece in prompt.pieces)


def merge_consecutive(turns: Sequence[tuple[Role, str]]) -> list[tuple[Role, str]]:
    merged: list[tuple[Role, str]] = []
    for role, text in turns:
        if merged and merged[-1][0] == role:
            merged[-1] = (role, f"{merged[-1][1]}\n\n{text}")
        else:
            merged.append((role, text))
    return merged


def _split(rendered: str, texts: Sequence[str]) -> list[Piece]:
    """The template's own text as special pieces, each placeholder replaced by its text as a plain piece."""
    pieces: list[Piece] = []
    position = 0
    for match in _PLACEHOLDER.finditer(rendered):
        if match.start() > position:
            pieces.append(Piece(rendered[position : match.start()], special=True))
        index = int(match.group(1))
        if index >= len(texts):
            raise InvalidRequestError("the model's chat template produced text overnight cannot place")
        if texts[index]:
            pieces.append(Piece(texts[index]))
        position = match.end()
    if position < len(rendered):
        pieces.append(Piece(rendered[position:], special=True))
    return pieces
