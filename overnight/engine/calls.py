"""One backend call with the engine's policies: per-backend concurrency caps, retries, backoff.

Retryable failures (429, 529, 5xx, timeouts, connection errors) are tried again with exponential
backoff and full jitter, waiting at least what the upstream asked for in `retry-after`; after the
attempt budget the last error becomes the request's result.
"""

from __future__ import annotations

import asyncio
import logging
import random
from dataclasses import dataclass
from typing import Protocol

from overnight.backends.base import Backend
from overnight.exceptions import OvernightError
from overnight.protocol.messages import MessageCreateParams
from overnight.protocol.results import Message

logger = logging.getLogger(__name__)


class BackendRouter(Protocol):
    def resolve(self, model: str) -> Backend:
        """The backend serving `model`; raises `NotFoundError` when no route matches."""
        ...

    async def aclose(self) -> None: ...


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 5
    base_delay_seconds: float = 0.5
    max_delay_seconds: float = 30.0

    def delay(self, attempt: int, retry_after_seconds: float | None) -> float:
        """Full-jitter exponential backoff, never sooner than the upstream's retry-after."""
        ceiling = min(self.max_delay_seconds, self.base_delay_seconds * 2 ** (attempt - 1))
        delay = random.uniform(0, ceiling)
        if retry_after_seconds is not None:
            delay = max(delay, min(retry_after_seconds, self.max_delay_seconds * 2))
        return delay


class BackendCaller:
    def __init__(self, router: BackendRouter, policy: RetryPolicy) -> None:
        self.router = router
        self.policy = policy
        self._limits: dict[int, asyncio.Semaphore] = {}

    async def call(self, params: MessageCreateParams) -> Message:
        backend = self.router.resolve(params.model)
        limit = self._limit_for(backend)
        attempt = 1
        while True:
            try:
                if limit is None:
                    return await backend.create_message(params)
                async with limit:
                    return await backend.create_message(params)
            except OvernightError as error:
                if not error.retryable or attempt >= self.policy.max_attempts:
                    raise
                delay = self.policy.delay(attempt, error.retry_after_seconds)
                logger.info(
                    "backend %s failed (%s: %s); retry %d in %.2fs",
                    backend.name, error.error_type, error.message, attempt, delay,
                )
                attempt += 1
                await asyncio.sleep(delay)

    def _limit_for(self, backend: Backend) -> asyncio.Semaphore | None:
        if backend.max_concurrency is None:
            return None
        key = id(backend)
        if key not in self._limits:
            self._limits[key] = asyncio.Semaphore(backend.max_concurrency)
        return self._limits[key]


class SingleBackendRouter:
    """Every model goes to one backend: what `--backend NAME` means."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend

    def resolve(self, model: str) -> Backend:
        return self.backend

    async def aclose(self) -> None:
        await self.backend.aclose()
