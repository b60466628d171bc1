"""Running the scheduler in-process on a real store, for the engine tests."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from overnight.backends.base import Backend
from overnight.backends.routing import Router
from overnight.engine import Scheduler
from overnight.engine.calls import BackendCaller, RetryPolicy
from overnight.store import Store


@contextlib.asynccontextmanager
async def running(store: Store, backend: Backend, *, concurrency: int) -> AsyncIterator[Scheduler]:
    """A started scheduler running `store`'s batches on `backend`, stopped (its leases handed back) after."""
    caller = BackendCaller(Router.single(backend), RetryPolicy(), default_limit=concurrency)
    scheduler = Scheduler(
        store,
        caller,
        concurrency=concurrency,
        lease_seconds=60,
        sweep_interval_seconds=1,
        results_retention_seconds=3600,
    )
    await scheduler.start()
    try:
        yield scheduler
    finally:
        await scheduler.stop()
