"""The webhook sender: leases due deliveries from the store and POSTs them, signed, with retries.

It runs beside the scheduler on worker nodes, on its own task and HTTP session: a slow or dead
receiver holds up nothing but its own deliveries. Delivery is at least once (a sender that dies after
the receiver answered sends again); every attempt carries the event's `webhook-id`, for receivers to
deduplicate by.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from overnight.config import Settings
from overnight.store import Store, StoreUnavailableError
from overnight.store.records import LeasedDelivery
from overnight.timestamps import MICROS, now_micros
from overnight.webhooks.config import WebhookTarget
from overnight.webhooks.events import BatchEndedEvents, signed_headers

if TYPE_CHECKING:
    import aiohttp

logger = logging.getLogger(__name__)

_LEASE_MARGIN_SECONDS = 30.0  # beyond the request timeout, before another sender may retry a delivery
_PRUNE_INTERVAL_SECONDS = 600.0


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
        ceiling = min(self.base_seconds * 2 ** min(delivery.attempt - 1, 60), self.max_seconds)
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
        keep_seconds: float = 29 * 86_400.0,
    ) -> None:
        self.store = store
        self.targets = targets
        self.owner = owner
        self.policy = policy
        self.poll_interval_seconds = poll_interval_seconds
        self.max_in_flight = max_in_flight
        self.keep_seconds = keep_seconds
        self._in_flight: dict[asyncio.Task[None], LeasedDelivery] = {}
        self._attempt_done = asyncio.Event()
        self._next_prune = 0
        self._session: aiohttp.ClientSession | None = None

    async def run(self) -> None:
        if self.targets:
            self._http()  # import aiohttp now, not in the first attempt's time
        try:
            while True:
                self._attempt_done.clear()  # before looking: an attempt that ends from here on wakes us
                wait = await self._send_due()
                if wait > 0:
                    # Until an attempt ends (a free slot; a retry it scheduled), the next delivery falls
                    # due, or the next poll (events other nodes queue).
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._attempt_done.wait(), wait)
        finally:
            await self._stop_attempts()
            if self._session is not None:
                await self._session.close()
                self._session = None

    def _http(self) -> aiohttp.ClientSession:
        """The HTTP session, opened at start when a webhook is configured, else for the first POST (one
        left queued from before): aiohttp holds about 10 MB of memory once imported, which a server none
        of whose workspaces has a webhook has no use for."""
        if self._session is None:
            import aiohttp

            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.policy.timeout_seconds))
        return self._session

    async def _send_due(self) -> float:
        """Start attempts for the deliveries due now, as slots allow; return how long to wait then."""
        slots = self.max_in_flight - len(self._in_flight)
        if slots <= 0:
            return self.poll_interval_seconds
        await self._prune_now_and_then()
        try:
            # A read first (indexed, on a reader thread): most polls find nothing due and take no write lock.
            due_at = await self.store.next_delivery_due()
        except Exception as exc:
            logger.warning("reading the webhook queue failed (%s); trying again shortly", exc)
            return self.poll_interval_seconds
        now = now_micros()
        if due_at is None or due_at > now:
            return (
                self.poll_interval_seconds
                if due_at is None
                else min(self.poll_interval_seconds, (due_at - now) / MICROS)
            )
        leased = await self._lease(slots)
        for delivery in leased:
            task = asyncio.create_task(self._deliver(delivery), name="overnight-webhook")
            self._in_flight[task] = delivery
            task.add_done_callback(self._finished)
        return 0 if leased else self.poll_interval_seconds  # none leased: another node took them

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._in_flight.pop(task, None)
        self._attempt_done.set()

    async def _stop_attempts(self) -> None:
        """Cut attempts short and hand their deliveries back, due now, for whichever node runs next."""
        cut = list(self._in_flight.values())
        for task in list(self._in_flight):
            task.cancel()
        await asyncio.gather(*self._in_flight, return_exceptions=True)
        if cut:
            try:
                await self.store.release_deliveries(cut, owner=self.owner, now=now_micros())
            except Exception as exc:  # their leases lapse instead
                logger.warning("handing back %d webhook deliveries failed (%s)", len(cut), exc)

    async def _prune_now_and_then(self) -> None:
        now = now_micros()
        if now < self._next_prune:
            return
        self._next_prune = now + int(_PRUNE_INTERVAL_SECONDS * MICROS)
        try:
            pruned = await self.store.prune_deliveries(finished_before=now - int(self.keep_seconds * MICROS))
        except Exception as exc:
            logger.warning("pruning old webhook deliveries failed (%s)", exc)
            return
        if pruned:
            logger.info("pruned %d webhook deliveries finished over %.0f days ago", pruned, self.keep_seconds / 86_400)

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

    async def _deliver(self, delivery: LeasedDelivery) -> None:
        target = self.targets.get(delivery.workspace)
        error = await self._post(target, delivery) if target else "no webhook configured for the workspace"
        now = now_micros()
        retry_at = None if error is None or target is None else self.policy.retry_at(delivery, now)
        if error is None:
            logger.info("webhook %s delivered (attempt %d)", delivery.event_id, delivery.attempt)
        elif retry_at is None:
            logger.error("webhook %s given up after %d attempts: %s", delivery.event_id, delivery.attempt, error)
        else:
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

    async def _post(self, target: WebhookTarget, delivery: LeasedDelivery) -> str | None:
        """One POST; None on a 2xx answer, else why not."""
        import aiohttp  # here rather than at the top: see `_http`

        session = self._http()
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
        except Exception as exc:  # a bug here must still end in a recorded attempt, not a stuck lease
            logger.exception("webhook %s: sending failed unexpectedly", delivery.event_id)
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
        keep_seconds=settings.results_retention_seconds,  # finished deliveries are kept as long as results
    )
    return asyncio.create_task(sender.run(), name="overnight-webhooks")
