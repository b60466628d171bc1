"""Prefix-aware ordering: leased requests that share a prompt prefix are handed out back to back.

Batches often repeat a long prefix (system prompt, tools, few-shot turns) with a different question at
the end. A model server that keeps the previous prompt's KV cache (llama.cpp) or a prefix cache (vLLM,
SGLang, Anthropic's own prompt caching) skips the prefill of whatever a request shares with what it ran
just before, so the order in which the scheduler sends requests decides how much of that is reused.

`prefix_key` is a hash of the request's model, system, tools and every message but the last, computed
from the raw params without validating them (a few microseconds: the bytes of those parts are sliced
out, not decoded). `PrefixQueue` is the scheduler's buffer: a FIFO (the feeder fills it interleaving
batches fairly) that, once it hands out a request, keeps handing out buffered requests with the same
key while there are any; then it goes back to the oldest request waiting. Fairness between batches:
the oldest request is overtaken by at most `max_overtakes` requests of other batches before its turn,
so no batch starves because another has a better-cached prefix.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Hashable, Sequence
from itertools import groupby
from operator import attrgetter
from typing import Any, Generic, TypeVar

import msgspec

T = TypeVar("T")

DEFAULT_MAX_OVERTAKES = 16


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


class _Entry(msgspec.Struct, gc=False):
    # Built in C (`map(_Entry, ...)`); never in a reference cycle (nothing refers back to an entry).
    item: Any
    key: Hashable
    owner: Hashable
    taken: bool = False


_ENTRY_KEY = attrgetter("key")


class PrefixQueue(Generic[T]):
    """An unbounded queue (the part of `asyncio.Queue`'s interface the scheduler uses) that hands out
    items with the same key back to back.

    The oldest item waiting (the head) is overtaken by at most `max_overtakes` items of other owners
    (batches) before it goes next, so grouping never starves a batch; a batch's own requests may be
    reordered freely, since only the batch as a whole has a completion time a client waits for.
    """

    def __init__(
        self,
        key_of: Callable[[T], Hashable],
        owner_of: Callable[[T], Hashable],
        *,
        max_overtakes: int = DEFAULT_MAX_OVERTAKES,
    ) -> None:
        self._key_of = key_of
        self._owner_of = owner_of
        self.max_overtakes = max_overtakes
        self._fifo: deque[_Entry] = deque()  # every entry in arrival order; taken ones are skipped lazily
        self._groups: dict[Hashable, deque[_Entry]] = {}
        self._size = 0
        self._run_key: Hashable = None
        self._head_overtaken = 0  # items of other owners handed out since the current head became head
        self._getters: deque[asyncio.Future[None]] = deque()

    def qsize(self) -> int:
        return self._size

    def empty(self) -> bool:
        return self._size == 0

    def put_nowait(self, item: T) -> None:
        self.put_many((item,))

    def put_many(self, items: Sequence[T]) -> None:
        """Put `items` in, in order: as many `put_nowait`s, with the per-item work in C loops."""
        entries = list(map(_Entry, items, map(self._key_of, items), map(self._owner_of, items)))
        self._fifo.extend(entries)
        groups = self._groups
        for key, run in groupby(entries, _ENTRY_KEY):  # runs of one key: a batch of like requests is one
            group = groups.get(key)
            if group is None:
                groups[key] = group = deque()
            group.extend(run)
        self._size += len(entries)
        for _ in range(min(len(entries), len(self._getters))):
            self._wake_one()

    def get_nowait(self) -> T:
        if self._size == 0:
            raise asyncio.QueueEmpty
        head = self._fifo[0]  # never a taken one: those are dropped from the front as they go
        group = self._groups.get(self._run_key)
        if group and group[0] is not head and self._head_overtaken < self.max_overtakes:
            entry = group.popleft()
            if entry.owner != head.owner:
                self._head_overtaken += 1
        else:
            # The head's turn (it is also the first of its own group); its key starts the next run.
            self._run_key = head.key
            group = self._groups[head.key]
            entry = group.popleft()
        if not group:
            del self._groups[entry.key]
        entry.taken = True
        self._size -= 1
        if entry is head:
            self._head_overtaken = 0
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
