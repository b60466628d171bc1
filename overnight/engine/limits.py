"""A per-backend concurrency cap that backs off when the backend says it is rate limited.

Additive increase, multiplicative decrease: a 429 halves the number of calls allowed at once (at
most once per cool-down, since one burst of 429s is one signal); every `limit` successes in a row
allow one more call again, up to the configured cap.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from types import TracebackType

_COOL_DOWN_SECONDS = 1.0


class AdaptiveLimit:
    """A semaphore whose size can change. Entering while below the limit takes no trip through the
    event loop: thousands of calls a second pass through here."""

    def __init__(self, maximum: int) -> None:
        self.maximum = maximum
        self.limit = maximum
        self.active = 0
        self._successes = 0
        self._last_decrease = float("-inf")
        self._waiters: deque[asyncio.Future[None]] = deque()

    def try_acquire(self) -> bool:
        """Take a slot if one is free and no call queues for one: the common case, with no coroutine."""
        if self.active < self.limit and not self._waiters:
            self.active += 1
            return True
        return False

    async def acquire(self) -> None:
        """Take a slot, queueing (first come, first served) until one is free."""
        if self.try_acquire():
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter  # resolved by _admit, which counted this call in `active`
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.active -= 1  # admitted and cancelled in the same turn: hand the slot on
                self._admit()
            elif waiter in self._waiters:
                self._waiters.remove(waiter)
            raise

    def release(self) -> None:
        self.active -= 1
        self._admit()

    async def __aenter__(self) -> None:
        await self.acquire()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()

    @property
    def waiting(self) -> int:
        """Calls queued for a slot."""
        return len(self._waiters)

    def _admit(self) -> None:
        while self._waiters and self.active < self.limit:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                self.active += 1

    def set_maximum(self, maximum: int) -> None:
        """Change the cap (a share of a cluster-wide one; 0 stops new calls until it grows again).
        Calls already admitted finish; fewer are admitted until `active` is under the new cap."""
        backed_off = self.limit < self.maximum
        self.maximum = maximum
        # Not backed off by 429s: follow the cap. Backed off: keep regrowing towards it, never above it.
        self.limit = min(self.limit, maximum) if backed_off else maximum
        self._admit()

    def rate_limited(self) -> None:
        now = time.monotonic()
        if now - self._last_decrease >= _COOL_DOWN_SECONDS:
            self.limit = min(self.maximum, max(1, self.limit // 2))
            self._last_decrease = now
        self._successes = 0

    def succeeded(self) -> None:
        if self.limit >= self.maximum:
            return
        self._successes += 1
        if self._successes >= self.limit:
            self._successes = 0
            self.limit += 1
            self._admit()
