"""The webhook sender: leases due deliveries from the store and POSTs them, signed, with retries.

It runs beside the scheduler on worker nodes, on its own task and HTTP session: a slow or dead
receiver holds up nothing but its own deliveries. Delivery is at least once (a sender that dies after
the receiver answered sends again); every attempt carries the event's `webhook-id`, for receivers to
deduplicate by.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import random
from collections.abc import Mapping
from dataclasses import dataclass

import aiohttp

from overnight.config import Settings
from overnight.store import Store, StoreUnavailableError
from overnight.store.records import LeasedDelivery
from overnight.timestamps import MICROS, now_micros
from overnight.webhooks.config import WebhookTarget
from overnight.webhooks.events import BatchEndedEvents, signed_headers

logger = logging.getLogger(__name__)

_LEASE_MARGIN_SECONDS = 30.0  # beyond the request timeout, before another sender may retry a delivery


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with jitter, until `window_seconds` after the event; then one last attempt
    at the window's end, and the delivery is given up (recorded as failed)."""

    base_seconds: float = 5.0
    max_seconds: float = 3600.0
    window_seconds: float = 86_400.0
    timeout_seconds: float = 10.0

    def retry_at(self, delivery: LeasedDelivery, now: int) -> int | None:
        """When to try again after failed attempt number `delivery.attempt`, or None to give up."""
        window_end = delivery.created_at + int(self.window_seconds * MICROS)
        if now >= window_end:
            return None
        ceiling = min(self.base_seconds * 2 ** (delivery.attempt - 1), self.max_seconds)
        # Jitter spreads the retries of events that failed together (a receiver that was down).
        delay = ceiling * random.uniform(0.5, 1.0)
        return min(now + int(delay * MICROS), window_end)


class WebhookSender:
    def __init__(
        self,
        store: Store,
        targets: Mapping[str, WebhookTarget],
        *,
        owner: str,
        policy: RetryPolicy,
        poll_interval_seconds: float = 1.0,
        max_in_flight: int = 32,
    ) -> None:
        self.store = store
        self.targets = targets
        self.owner = owner
        self.policy = policy
        self.poll_interval_seconds = poll_interval_seconds
        self.max_in_flight = max_in_flight
        self._in_flight: set[asyncio.Task[None]] = set()
        self._retries: list[int] = []  # when retries this sender scheduled fall due (a heap), to wake then
        self._attempt_done = asyncio.Event()

    async def run(self) -> None:
        timeout = aiohttp.ClientTimeout(total=self.policy.timeout_seconds)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            try:
                while True:
                    self._attempt_done.clear()  # before leasing: an attempt that ends from here on wakes us
                    leased = await self._lease(self.max_in_flight - len(self._in_flight))
                    for delivery in leased:
                        task = asyncio.create_task(self._deliver(session, delivery), name="overnight-webhook")
                        self._in_flight.add(task)
                        task.add_done_callback(self._finished)
                    if leased and len(self._in_flight) < self.max_in_flight:
                        continue  # more may be due already
                    # Until an attempt ends (a free slot, maybe a retry to time), a retry falls due, or the
                    # next poll (events queued by other nodes, retries scheduled by them).
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._attempt_done.wait(), self._until_next_retry())
            finally:
                # Deliveries cut short are leased until their lease lapses, then sent again (same id).
                for task in self._in_flight:
                    task.cancel()
                await asyncio.gather(*self._in_flight, return_exceptions=True)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._in_flight.discard(task)
        self._attempt_done.set()

    def _until_next_retry(self) -> float:
        now = now_micros()
        while self._retries and self._retries[0] <= now:
            heapq.heappop(self._retries)
        if not self._retries:
            return self.poll_interval_seconds
        return min(self.poll_interval_seconds, (self._retries[0] - now) / MICROS)

    async def _lease(self, slots: int) -> list[LeasedDelivery]:
        if slots <= 0:
            return []
        now = now_micros()
        lease_until = now + int((self.policy.timeout_seconds + _LEASE_MARGIN_SECONDS) * MICROS)
        try:
            return await self.store.lease_deliveries(slots, owner=self.owner, now=now, lease_until=lease_until)
        except StoreUnavailableError as exc:
            logger.warning("leasing webhook deliveries failed, the database is unavailable (%s)", exc)
        except Exception:
            logger.exception("leasing webhook deliveries failed; trying again shortly")
        return []

    async def _deliver(self, session: aiohttp.ClientSession, delivery: LeasedDelivery) -> None:
        target = self.targets.get(delivery.workspace)
        error = await self._post(session, target, delivery) if target else "no webhook configured for the workspace"
        now = now_micros()
        retry_at = None if error is None or target is None else self.policy.retry_at(delivery, now)
        if error is None:
            logger.info("webhook %s delivered (attempt %d)", delivery.event_id, delivery.attempt)
        elif retry_at is None:
            logger.error("webhook %s given up after %d attempts: %s", delivery.event_id, delivery.attempt, error)
        else:
            heapq.heappush(self._retries, retry_at)
            logger.warning(
                "webhook %s attempt %d failed (%s); retrying in %.1fs",
                delivery.event_id,
                delivery.attempt,
                error,
                (retry_at - now) / MICROS,
            )
        try:
            await self.store.finish_delivery_attempt(
                delivery, owner=self.owner, now=now, error=error, retry_at=retry_at
            )
        except Exception as exc:  # the lease lapses and the delivery is tried again
            logger.warning("recording webhook %s's attempt failed (%s)", delivery.event_id, exc)

    async def _post(
        self, session: aiohttp.ClientSession, target: WebhookTarget, delivery: LeasedDelivery
    ) -> str | None:
        """One POST; None on a 2xx answer, else why not."""
        headers = signed_headers(target.secret, delivery.event_id, delivery.body)
        try:
            async with session.post(target.url, data=delivery.body, headers=headers, allow_redirects=False) as answer:
                if 200 <= answer.status < 300:
                    return None
                return f"HTTP {answer.status}"
        except TimeoutError:
            return f"no answer within {self.policy.timeout_seconds:g}s"
        except aiohttp.ClientError as exc:
            return f"{type(exc).__name__}: {exc}"


def start_webhooks(store: Store, settings: Settings, *, owner: str | None) -> asyncio.Task[None] | None:
    """Queue events for the configured workspaces as batches end (every node that can end one), and
    send queued ones where `owner` names this node's worker (all and worker roles)."""
    if settings.webhooks:
        public_base_url = settings.public_url or f"http://{settings.host}:{settings.port}"
        store.on_batch_ended = BatchEndedEvents(settings.webhooks, public_base_url)
    if owner is None:
        return None
    # A worker sends even when nothing is configured now: it gives up what is queued from before.
    sender = WebhookSender(
        store,
        settings.webhooks,
        owner=owner,
        policy=RetryPolicy(
            base_seconds=settings.webhook_retry_base_seconds,
            max_seconds=settings.webhook_retry_max_seconds,
            window_seconds=settings.webhook_retry_window_seconds,
            timeout_seconds=settings.webhook_timeout_seconds,
        ),
        poll_interval_seconds=min(settings.sweep_interval_seconds, 1.0),
    )
    return asyncio.create_task(sender.run(), name="overnight-webhooks")
