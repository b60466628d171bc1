"""A per-backend concurrency cap that backs off when the backend says it is rate limited.

Additive increase, multiplicative decrease: a 429 halves the number of calls allowed at once (at
most once per cool-down, since one burst of 429s is one signal); every `limit` successes in a row
allow one more call again, up to the configured cap.
"""

from __future__ import annotations

import asyncio
import time
from types import TracebackType

_COOL_DOWN_SECONDS = 1.0


class AdaptiveLimit:
    def __init__(self, maximum: int) -> None:
        self.maximum = maximum
        self.limit = maximum
        self.active = 0
        self._successes = 0
        self._last_decrease = float("-inf")
        self._changed = asyncio.Condition()

    async def __aenter__(self) -> None:
        async with self._changed:
            await self._changed.wait_for(lambda: self.active < self.limit)
            self.active += 1

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        async with self._changed:
            self.active -= 1
            self._changed.notify()

    def rate_limited(self) -> None:
        now = time.monotonic()
        if now - self._last_decrease >= _COOL_DOWN_SECONDS:
            self.limit = max(1, self.limit // 2)
            self._last_decrease = now
        self._successes = 0

    async def succeeded(self) -> None:
        if self.limit >= self.maximum:
            return
        self._successes += 1
        if self._successes >= self.limit:
            self._successes = 0
            async with self._changed:
                self.limit += 1
                self._changed.notify()
