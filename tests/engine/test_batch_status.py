"""The scheduler's view of batch statuses: an older read from the store never undoes what it knows."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from overnight.backends.fake import FakeBackend
from overnight.engine import Scheduler
from overnight.engine.calls import BackendCaller, RetryPolicy
from overnight.routing import Router
from overnight.store import Store
from overnight.store.records import CANCELING, IN_PROGRESS, ActiveBatches


@pytest.fixture
async def scheduler(tmp_path: Path) -> AsyncIterator[Scheduler]:
    store = Store(f"sqlite:///{tmp_path / 'db.sqlite3'}")
    store.migrate()
    caller = BackendCaller(Router.single(FakeBackend()), RetryPolicy(), default_limit=4)
    yield Scheduler(
        store,
        caller,
        concurrency=4,
        lease_seconds=60,
        sweep_interval_seconds=1,
        results_retention_seconds=3600,
        reclaim_all_leases_on_start=True,
    )
    store.close()


def test_a_batch_newer_than_the_read_is_kept(scheduler: Scheduler) -> None:
    # The feeder saw batch 3 (and leased from it); the sweeper's read from before batch 3 arrives late.
    scheduler.observe_active_batches(ActiveBatches([(1, IN_PROGRESS), (3, IN_PROGRESS)], newest_seq=3))
    scheduler.observe_active_batches(ActiveBatches([(1, IN_PROGRESS)], newest_seq=2))
    assert scheduler._batch_status == {1: IN_PROGRESS, 3: IN_PROGRESS}


def test_a_batch_missing_from_a_newer_read_has_ended(scheduler: Scheduler) -> None:
    scheduler.observe_active_batches(ActiveBatches([(1, IN_PROGRESS), (2, IN_PROGRESS)], newest_seq=2))
    scheduler.observe_active_batches(ActiveBatches([(2, IN_PROGRESS)], newest_seq=2))  # 1 expired
    assert scheduler._batch_status == {2: IN_PROGRESS}


def test_a_cancel_heard_after_the_read_is_kept(scheduler: Scheduler) -> None:
    scheduler.observe_active_batches(ActiveBatches([(1, IN_PROGRESS)], newest_seq=1))
    scheduler.batch_canceled(1)
    scheduler.observe_active_batches(ActiveBatches([(1, IN_PROGRESS)], newest_seq=1))
    assert scheduler._batch_status == {1: CANCELING}
