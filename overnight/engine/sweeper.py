"""Periodic housekeeping: expire batches, archive old results, recover lapsed leases, checkpoint, and
give memory back once the work is done."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from typing import Protocol

from overnight import memory
from overnight.metrics import NO_BACKEND, Metrics
from overnight.store import Store, StoreUnavailableError
from overnight.store.records import EXPIRED, ActiveBatches
from overnight.timestamps import now_micros

logger = logging.getLogger(__name__)

# With no batch unfinished, memory is given back once the process has grown this much since it last was,
# and has stopped growing (by no more than the second figure since the last sweep that found no batch
# unfinished): a create or a download still under way would only take it again.
_RELEASE_AFTER_GROWTH_BYTES = 64 << 20
_STILL_GROWING_BYTES = 8 << 20


class SweepListener(Protocol):
    """The scheduler, as the sweeper sees it."""

    generation: int
    """Advances each time the scheduler is told of a new batch (see `observe_active_batches`)."""

    def wake(self) -> None: ...

    def observe_active_batches(self, active: ActiveBatches, *, read_since: int) -> None: ...


class Sweeper:
    """Every statement a sweep runs is guarded (a batch ends, is archived and a lapsed lease is handed
    back exactly once), so every node may sweep at the same time.

    `listener` is the local scheduler, if this node runs one: it is told of the unfinished batches each
    sweep, and at once whenever `poke` says another node created or canceled one."""

    def __init__(
        self,
        store: Store,
        listener: SweepListener | None,
        *,
        interval_seconds: float,
        retention_micros: int,
        metrics: Metrics | None = None,
    ) -> None:
        self.store = store
        self.listener = listener
        self.metrics = metrics or Metrics()
        self.interval_seconds = interval_seconds
        self.retention_micros = retention_micros
        self._poked = asyncio.Event()
        self._resident_after_release: int | None = None
        self._resident_seen: int | None = None

    def poke(self) -> None:
        """Batches were created or canceled elsewhere: refresh the scheduler's view now."""
        self._poked.set()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await _logged(self.sweep_once(), "sweep")
            next_sweep = loop.time() + self.interval_seconds
            while (left := next_sweep - loop.time()) > 0:
                try:
                    await asyncio.wait_for(self._poked.wait(), left)
                except TimeoutError:
                    break
                self._poked.clear()
                await _logged(self.refresh(), "refreshing the unfinished batches")

    async def sweep_once(self) -> None:
        now = now_micros()
        for batch_id, unfinished in await self.store.expire_batches(now):
            logger.info("batch %s expired (%d requests unfinished)", batch_id, unfinished)
            self.metrics.batches_ended += 1
            self.metrics.finished(EXPIRED, NO_BACKEND, count=unfinished)
        for batch_id in await self.store.archive_batches(now, retention_micros=self.retention_micros):
            logger.info("batch %s archived", batch_id)
        active = await self.refresh()
        recovered = await self.store.recover_expired_leases(active.seqs, now)
        if recovered:
            logger.warning("%d requests had lapsed leases and will run again", recovered)
            if self.listener is not None:
                self.listener.wake()
        await self.store.checkpoint()
        if not active.seqs:
            await self.release_memory()

    async def release_memory(self) -> None:
        """Nothing is left to run: give back what a burst of work left behind (a big create, run or
        download leaves hundreds of MB that are free but still resident): the store's caches, then the
        heap's free pages. Only once the process has grown since it last did and stopped growing, so an
        idle node does nothing at all."""
        resident = memory.resident_bytes()
        seen, self._resident_seen = self._resident_seen, resident
        last = self._resident_after_release
        if resident is None:
            return
        if last is not None and (
            resident < last + _RELEASE_AFTER_GROWTH_BYTES or seen is None or resident > seen + _STILL_GROWING_BYTES
        ):
            return
        await self.store.release_memory()
        await asyncio.to_thread(memory.trim_heap)
        self._resident_after_release = memory.resident_bytes() or resident
        logger.debug("gave memory back: %d MiB resident, now %d", resident >> 20, self._resident_after_release >> 20)

    async def refresh(self) -> ActiveBatches:
        """Read the unfinished batches and hand them to the scheduler."""
        read_since = self.listener.generation if self.listener is not None else 0
        active = await self.store.active_batches()
        if self.listener is not None:
            self.listener.observe_active_batches(active, read_since=read_since)
            self.listener.wake()
        return active


async def _logged(step: Awaitable[object], what: str) -> None:
    try:
        await step
    except StoreUnavailableError as exc:
        logger.warning("%s failed, the database is unavailable (%s); trying again shortly", what, exc)
    except Exception:
        logger.exception("%s failed; trying again shortly", what)
