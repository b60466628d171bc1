"""The local backend's model instances, handed out so that a prompt prefix sticks to one instance.

Each llama.cpp instance keeps the KV cache of the last prompt it ran, so a request is best sent to
the instance that last ran its prefix. `acquire(key)` takes, among the free instances, the one whose
last request had the same prefix key; else one that has run nothing yet; else one whose prefix another
instance holds too; else the one idle longest (its cached prefix is the least likely to come back
soon). An instance is never left idle while a request waits: affinity decides which free instance a
request gets, it never makes one wait.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter, deque
from collections.abc import Hashable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")


class InstancePool(Generic[T]):
    def __init__(self, instances: Sequence[T]) -> None:
        self._last_key: dict[int, Hashable] = {}  # by index: the prefix key of the instance's last request
        self._free: dict[int, int] = {index: 0 for index in range(len(instances))}  # index -> when freed
        self._instances = list(instances)
        self._clock = itertools.count(1)
        self._waiters: deque[asyncio.Future[None]] = deque()

    def _choose(self, key: Hashable) -> int:
        for index in self._free:
            if index in self._last_key and self._last_key[index] == key:
                return index
        for index in self._free:
            if index not in self._last_key:
                return index
        # Overwrite a prefix that another instance also holds before one only this instance has, so
        # that as many different prefixes as possible stay cached; among equals, the idlest instance.
        holders = Counter(self._last_key.values())
        return min(self._free, key=lambda index: (holders[self._last_key[index]] == 1, self._free[index]))

    async def acquire(self, key: Hashable) -> tuple[int, T]:
        """A free instance for a request whose prefix has `key` (waiting while none is free)."""
        while not self._free:
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            except asyncio.CancelledError:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)
                elif self._free:
                    self._wake_one()  # woken and cancelled at once: pass the wake-up on
                raise
        index = self._choose(key)
        del self._free[index]
        self._last_key[index] = key
        return index, self._instances[index]

    def release(self, index: int) -> None:
        self._free[index] = next(self._clock)
        self._wake_one()

    def last_keys(self) -> dict[int, Hashable]:
        """Each instance's last prefix key (for tests and diagnostics)."""
        return dict(self._last_key)

    def _wake_one(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
