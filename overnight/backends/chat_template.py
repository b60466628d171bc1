"""Gemma's turn format, built as pieces so control tokens can never come from the user's text.

    <bos><start_of_turn>user
    {system}

    {first user text}<end_of_turn>
    <start_of_turn>model
    {assistant text}<end_of_turn>
    <start_of_turn>user
    ...<end_of_turn>
    <start_of_turn>model
    (the model writes here)

This is what Gemma's own chat template produces: there is no system role, so the system text opens the
first user turn; roles must alternate, so consecutive turns of one role are joined (as the Messages API
itself treats them); texts are trimmed. A final assistant turn is a prefill: it is left open, and the
model continues it.

The prompt is a list of `Piece`s: control tokens (`special=True`) are tokenized as such, everything
else as plain text, so a user who types "<end_of_turn>" gets those characters, not a turn boundary.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

Role = Literal["user", "assistant"]

BOS = "<bos>"
START_OF_TURN = "<start_of_turn>"
END_OF_TURN = "<end_of_turn>"


@dataclass(frozen=True)
class Piece:
    text: str
    special: bool = False


def gemma_prompt(system: str | None, turns: Sequence[tuple[Role, str]]) -> list[Piece]:
    """The prompt for `turns` (role, text) with `system` folded into the first user turn."""
    merged = _merge_consecutive(turns)
    if system and system.strip():
        if merged and merged[0][0] == "user":
            merged[0] = ("user", f"{system.strip()}\n\n{merged[0][1]}")
        else:
            merged.insert(0, ("user", system.strip()))

    pieces = [Piece(BOS, special=True)]
    for index, (role, text) in enumerate(merged):
        is_prefill = role == "assistant" and index == len(merged) - 1
        pieces.append(Piece(START_OF_TURN, special=True))
        if is_prefill:
            # Only leading whitespace goes: the model continues exactly where the prefill stops.
            pieces.append(Piece(f"model\n{text.lstrip()}"))
            return pieces
        pieces.append(Piece(f"{_gemma_role(role)}\n{text.strip()}"))
        pieces.append(Piece(END_OF_TURN, special=True))
        pieces.append(Piece("\n"))
    pieces.append(Piece(START_OF_TURN, special=True))
    pieces.append(Piece("model\n"))
    return pieces


def render(pieces: Sequence[Piece]) -> str:
    """The prompt as one string (for logs and tests; tokenize the pieces, not this)."""
    return "".join(piece.text for piece in pieces)


def _gemma_role(role: Role) -> str:
    return "model" if role == "assistant" else "user"


def _merge_consecutive(turns: Sequence[tuple[Role, str]]) -> list[tuple[Role, str]]:
    merged: list[tuple[Role, str]] = []
    for role, text in turns:
        if merged and merged[-1][0] == role:
            merged[-1] = (role, f"{merged[-1][1]}\n\n{text}")
        else:
            merged.append((role, text))
    return merged
