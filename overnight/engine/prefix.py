"""Prefix-aware ordering: leased requests that share a prompt prefix are handed out back to back.

Batches often repeat a long prefix (system prompt, tools, few-shot turns) with a different question at
the end. A model server that keeps the previous prompt's KV cache (llama.cpp) or a prefix cache (vLLM,
SGLang, Anthropic's own prompt caching) skips the prefill of whatever a request shares with what it ran
just before, so the order in which the scheduler sends requests decides how much of that is reused.

`prefix_key` is a hash of the request's model, system, tools and every message but the last, computed
from the raw params without validating them (a few microseconds: the bytes of those parts are sliced
out, not decoded). `PrefixQueue` is the scheduler's buffer: a FIFO (the feeder fills it interleaving
batches fairly) that, once it hands out a request, keeps handing out buffered requests with the same
key, up to `max_run` in a row; then, or when that key runs out, it goes back to the oldest request
waiting. So a request waits for at most `max_run` requests of a better-cached prefix per turn, and no
batch starves because another shares a prefix.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

import msgspec

T = TypeVar("T")

DEFAULT_MAX_RUN = 32


class _PrefixView(msgspec.Struct, gc=False):
    """The parts of the params that make up a request's shared prefix, left as raw JSON."""

    model: str = ""
    system: msgspec.Raw = msgspec.Raw(b"")
    tools: msgspec.Raw = msgspec.Raw(b"")
    messages: list[msgspec.Raw] = []


_decode_view = msgspec.json.Decoder(_PrefixView).decode


def prefix_key(params: bytes) -> Hashable:
    """A key equal for requests whose prompt starts the same way: model + system + tools + leading turns.

    Byte-identical JSON of those parts counts as the same prefix (one client serialises a repeated
    system prompt the same way each time). Params that do not parse get a key of their own; the worker
    reports the error as usual.
    """
    try:
        view = _decode_view(params)
    except msgspec.DecodeError:  # ValidationError too (a subclass)
        return params
    turns, system, tools = view.messages, view.system, view.tools
    if len(turns) <= 1 and not system and not tools:
        return view.model  # the common short request: no copies, no hashing of bytes
    return hash((view.model, bytes(system), bytes(tools), *map(bytes, turns[:-1])))


class _Entry(Generic[T]):
    __slots__ = ("item", "key", "taken")

    def __init__(self, item: T, key: Hashable) -> None:
        self.item = item
        self.key = key
        self.taken = False


class PrefixQueue(Generic[T]):
    """An unbounded queue (the part of `asyncio.Queue`'s interface the scheduler uses) that hands out
    items with the same key back to back, at most `max_run` in a row before the oldest item's turn."""

    def __init__(self, key_of: Callable[[T], Hashable], *, max_run: int = DEFAULT_MAX_RUN) -> None:
        self._key_of = key_of
        self.max_run = max_run
        self._fifo: deque[_Entry[T]] = deque()  # every entry in arrival order; taken ones are skipped lazily
        self._groups: dict[Hashable, deque[_Entry[T]]] = {}
        self._size = 0
        self._run_key: Hashable = None
        self._run_length = 0
        self._getters: deque[asyncio.Future[None]] = deque()

    def qsize(self) -> int:
        return self._size

    def empty(self) -> bool:
        return self._size == 0

    def put_nowait(self, item: T) -> None:
        entry = _Entry(item, self._key_of(item))
        self._fifo.append(entry)
        group = self._groups.get(entry.key)
        if group is None:
            self._groups[entry.key] = group = deque()
        group.append(entry)
        self._size += 1
        self._wake_one()

    def get_nowait(self) -> T:
        if self._size == 0:
            raise asyncio.QueueEmpty
        group = self._groups.get(self._run_key) if self._run_length < self.max_run else None
        if group:
            self._run_length += 1
        else:
            # The oldest waiting item's turn; it is also the head of its own group.
            while self._fifo[0].taken:
                self._fifo.popleft()
            head = self._fifo[0]
            self._run_key, self._run_length = head.key, 1
            group = self._groups[head.key]
        entry = group.popleft()
        if not group:
            del self._groups[entry.key]
        entry.taken = True
        self._size -= 1
        while self._fifo and self._fifo[0].taken:
            self._fifo.popleft()
        return entry.item

    async def get(self) -> T:
        while self._size == 0:
            getter = asyncio.get_running_loop().create_future()
            self._getters.append(getter)
            try:
                await getter
            except asyncio.CancelledError:
                if getter in self._getters:
                    self._getters.remove(getter)
                elif self._size:
                    self._wake_one()  # woken and cancelled at once: pass the wake-up on
                raise
        return self.get_nowait()

    def _wake_one(self) -> None:
        while self._getters:
            getter = self._getters.popleft()
            if not getter.done():
                getter.set_result(None)
                return
