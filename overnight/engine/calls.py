"""One backend call with the engine's policies: per-backend adaptive concurrency caps, retries, backoff.

Retryable failures (429, 529, 5xx, timeouts, connection errors) are tried again with exponential
backoff and full jitter, waiting at least what the upstream asked for in `retry-after`; after the
attempt budget the last error becomes the request's result.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from overnight.backends.base import Backend
from overnight.engine.limits import AdaptiveLimit
from overnight.exceptions import OvernightError, RateLimitError
from overnight.metrics import BackendMeter, Metrics
from overnight.protocol.messages import MessageCreateParams
from overnight.protocol.results import Message
from overnight.store.records import NodeShare

logger = logging.getLogger(__name__)


class RequestWithdrawn(Exception):
    """The request was no longer wanted when its turn to be sent came."""


class BackendRouter(Protocol):
    def resolve(self, model: str) -> Backend:
        """The backend serving `model`; raises `NotFoundError` when no route matches."""
        ...

    def backends(self) -> list[Backend]:
        """Every backend this router can route to."""
        ...

    def model_ids(self) -> list[str]:
        """Model ids to list in `/v1/models`."""
        ...

    def patterns(self) -> list[str]:
        """Every route's model name or pattern."""
        ...

    async def start(self) -> None:
        """Load or connect every backend, so a bad setup fails at start-up."""
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
    def __init__(
        self, router: BackendRouter, policy: RetryPolicy, *, default_limit: int, metrics: Metrics | None = None
    ) -> None:
        self.router = router
        self.policy = policy
        self.default_limit = default_limit
        self.metrics = metrics or Metrics()
        self._limits: dict[int, AdaptiveLimit] = {}
        self._meters: dict[int, BackendMeter] = {}
        self._share = NodeShare(rank=0, nodes=1)
        for backend in router.backends():
            self._limit_for(backend)  # so that /metrics shows every backend's cap from the start

    async def call(
        self,
        params: MessageCreateParams,
        *,
        backend: Backend | None = None,
        still_wanted: Callable[[], bool] | None = None,
    ) -> Message:
        """Call the routed backend (`backend`, when the caller has already resolved it), retrying what may
        succeed later.

        `still_wanted` is asked each time a backend slot is granted, right before sending: a request
        whose batch was canceled while it queued for a slot is withdrawn (`RequestWithdrawn`) unsent.
        """
        if backend is None:
            backend = self.router.resolve(params.model)
        limit = self._limit_for(backend)
        meter = self._meters[id(backend)]
        attempt = 1
        while True:
            try:
                # Not `async with limit`: its two coroutines a call cost more than the rest of this when
                # the backend answers at once; a slot is free almost always.
                if not limit.try_acquire():
                    await limit.acquire()
                try:
                    if still_wanted is not None and not still_wanted():
                        raise RequestWithdrawn
                    started = time.perf_counter()
                    try:
                        message = await backend.create_message(params)
                    finally:
                        meter.calls.observe(time.perf_counter() - started)
                finally:
                    limit.release()
                limit.succeeded()
                if isinstance(usage := message.get("usage"), dict):
                    meter.used(usage)
                return message
            except OvernightError as error:
                if isinstance(error, RateLimitError):
                    limit.rate_limited()
                if not error.retryable or attempt >= self.policy.max_attempts:
                    raise
                meter.retried(error.error_type)
                delay = self.policy.delay(attempt, error.retry_after_seconds)
                # The message may quote the prompt (an upstream's error text), so only at debug.
                logger.info("backend %s failed (%s); retry %d in %.2fs", backend.name, error.error_type, attempt, delay)
                logger.debug("backend %s failure message: %s", backend.name, error.message)
                attempt += 1
                await asyncio.sleep(delay)

    def _limit_for(self, backend: Backend) -> AdaptiveLimit:
        # Every backend gets one, so 429s lower its concurrency even when no cap was configured.
        key = id(backend)
        if key not in self._limits:
            cap = backend.max_concurrency or self.default_limit
            if backend.max_concurrency and backend.max_concurrency_scope == "cluster":
                cap = self._share.share_of(backend.max_concurrency)
            self._limits[key] = AdaptiveLimit(cap)
            self._meters[key] = self.metrics.backend(backend.name)
            self._meters[key].cap = self._limits[key]
        return self._limits[key]

    def apply_node_share(self, share: NodeShare) -> None:
        """This node's place among the live workers changed: re-split the caps shared by the cluster,
        so that the parts the workers take add up to each configured cap."""
        self._share = share
        for backend in self.router.backends():
            if backend.max_concurrency and backend.max_concurrency_scope == "cluster":
                self._limit_for(backend).set_maximum(share.share_of(backend.max_concurrency))
