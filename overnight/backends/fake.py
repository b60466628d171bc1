"""A deterministic backend for tests and benchmarks: it echoes the last user message.

The reply is the text of the last user message (string content, or its text blocks joined by a
space); cut before the first stop sequence found (`stop_sequence`), else cut to `max_tokens` words
(`max_tokens`), else `end_turn`. Usage counts whitespace-separated words (at least 1 each).
"""

from __future__ import annotations

import asyncio

from overnight.backends.features import refuse_unknown_keys
from overnight.backends.stops import first_stop_sequence
from overnight.protocol.messages import MessageCreateParams, text_of
from overnight.protocol.results import Message, message, text_block


class FakeBackend:
    name = "fake"
    max_concurrency: int | None = None
    max_concurrency_scope: str = "node"

    def __init__(self, *, latency_seconds: float = 0.0) -> None:
        self.latency_seconds = latency_seconds

    async def create_message(self, params: MessageCreateParams) -> Message:
        refuse_unknown_keys(params, self.name)
        if self.latency_seconds > 0:
            await asyncio.sleep(self.latency_seconds)
        return reply_to(params)

    async def start(self) -> None:
        return None

    async def count_tokens(self, params: MessageCreateParams) -> int:
        return max(1, _input_words(params))

    async def aclose(self) -> None:
        return None


def reply_to(params: MessageCreateParams) -> Message:
    """The fake backend's whole semantics, as a pure function."""
    # One pass over the turns counts the input words and keeps the last user turn's text and words.
    system = params.system
    input_words = len((system if isinstance(system, str) else text_of(system)).split()) if system else 0
    reply, words = "", []
    for turn in params.messages:
        content = turn.content
        text = content if content.__class__ is str else text_of(content)
        turn_words = text.split()
        input_words += len(turn_words)
        if turn.role == "user":
            reply, words = text, turn_words
    stop_reason, stop_sequence = "end_turn", None

    first_match = first_stop_sequence(reply, params.stop_sequences) if params.stop_sequences else None
    if first_match is not None:
        cut, stop_sequence = first_match
        reply, stop_reason = reply[:cut], "stop_sequence"
        output_words = len(reply.split())
    else:
        output_words = len(words)
        if output_words > params.max_tokens:
            reply, stop_reason = " ".join(words[: params.max_tokens]), "max_tokens"
            output_words = params.max_tokens

    return message(
        model=params.model,
        content=[text_block(reply)],
        stop_reason=stop_reason,
        stop_sequence=stop_sequence,
        input_tokens=max(1, input_words),
        output_tokens=max(1, output_words),
    )


def _input_words(params: MessageCreateParams) -> int:
    words = 0
    if params.system:
        words = len((params.system if isinstance(params.system, str) else text_of(params.system)).split())
    for turn in params.messages:
        words += len(text_of(turn.content).split())
    return words
