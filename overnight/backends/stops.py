"""Stop sequences, as the Messages API applies them: the earliest match ends the text."""

from __future__ import annotations

from collections.abc import Sequence


def first_stop_sequence(text: str, stop_sequences: Sequence[str]) -> tuple[int, str] | None:
    """The earliest match in `text` as (index, sequence); at equal positions the one listed first wins.
    Empty sequences never match (every text would end at 0)."""
    best: tuple[int, str] | None = None
    for sequence in stop_sequences:
        if not sequence:
            continue
        index = text.find(sequence)
        if index != -1 and (best is None or index < best[0]):
            best = (index, sequence)
    return best
