"""Periodic housekeeping: expire batches, archive old results, recover lapsed leases, checkpoint."""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol

from overnight.store import Store
from overnight.store.records import ActiveBatches
from overnight.timestamps import now_micros

logger = logging.getLogger(__name__)


class SweepListener(Protocol):
    def wake(self) -> None: ...

    def observe_active_batches(self, active: ActiveBatches) -> None: ...


class Sweeper:
    def __init__(
        self, store: Store, listener: SweepListener, *, interval_seconds: float, retention_micros: int
    ) -> None:
        self.store = store
        self.listener = listener
        self.interval_seconds = interval_seconds
        self.retention_micros = retention_micros

    async def run(self) -> None:
        while True:
            try:
                await self.sweep_once()
            except Exception:
                logger.exception("sweep failed; trying again next interval")
            await asyncio.sleep(self.interval_seconds)

    async def sweep_once(self) -> None:
        now = now_micros()
        for batch_id in await self.store.expire_batches(now):
            logger.info("batch %s expired", batch_id)
        for batch_id in await self.store.archive_batches(now, retention_micros=self.retention_micros):
            logger.info("batch %s archived", batch_id)
        active = await self.store.active_batches()
        self.listener.observe_active_batches(active)
        recovered = await self.store.recover_expired_leases(active.seqs, now)
        if recovered:
            logger.warning("%d requests had lapsed leases and will run again", recovered)
            self.listener.wake()
        await self.store.checkpoint()
