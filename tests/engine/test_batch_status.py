"""The scheduler's view of batch statuses: an older read from the store never undoes what it knows."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from overnight.backends.fake import FakeBackend
from overnight.backends.routing import Router
from overnight.engine import Scheduler
from overnight.engine.calls import BackendCaller, RetryPolicy
from overnight.store import open_store
from overnight.store.records import CANCELING, IN_PROGRESS, ActiveBatches


@pytest.fixture
async def scheduler(tmp_path: Path) -> AsyncIterator[Scheduler]:
    store = open_store(f"sqlite:///{tmp_path / 'db.sqlite3'}")
    store.migrate()
    caller = BackendCaller(Router.single(FakeBackend()), RetryPolicy(), default_limit=4)
    yield Scheduler(
        store,
        caller,
        concurrency=4,
        lease_seconds=60,
        sweep_interval_seconds=1,
        results_retention_seconds=3600,
    )
    store.close()


def test_a_batch_told_of_after_the_read_began_is_kept(scheduler: Scheduler) -> None:
    # The sweeper's read began before batch 3 was created here; it arrives after, without batch 3.
    read_since = scheduler.generation
    scheduler.batch_created(3, ())
    scheduler.observe_active_batches(ActiveBatches([(1, IN_PROGRESS)]), read_since=read_since)
    assert scheduler._batch_status == {1: IN_PROGRESS, 3: IN_PROGRESS}


def test_a_batch_told_of_before_the_read_began_and_missing_from_it_has_ended(scheduler: Scheduler) -> None:
    scheduler.batch_created(1, ())
    scheduler.batch_created(2, ())
    read_since = scheduler.generation
    scheduler.observe_active_batches(ActiveBatches([(2, IN_PROGRESS)]), read_since=read_since)  # 1 expired
    assert scheduler._batch_status == {2: IN_PROGRESS}
    # ...and it stays forgotten: a later read without it does not bring it back either.
    scheduler.observe_active_batches(ActiveBatches([(2, IN_PROGRESS)]), read_since=scheduler.generation)
    assert scheduler._batch_status == {2: IN_PROGRESS}


def test_a_cancel_heard_after_the_read_is_kept(scheduler: Scheduler) -> None:
    scheduler.observe_active_batches(ActiveBatches([(1, IN_PROGRESS)]), read_since=scheduler.generation)
    read_since = scheduler.generation
    scheduler.batch_canceled(1)
    scheduler.observe_active_batches(ActiveBatches([(1, IN_PROGRESS)]), read_since=read_since)
    assert scheduler._batch_status == {1: CANCELING}


def test_a_batch_seen_only_by_reads_follows_them(scheduler: Scheduler) -> None:
    # Another node created batch 5 (this scheduler was never told): reads alone bring it and drop it.
    scheduler.observe_active_batches(ActiveBatches([(5, IN_PROGRESS)]), read_since=scheduler.generation)
    assert scheduler._batch_status == {5: IN_PROGRESS}
    scheduler.observe_active_batches(ActiveBatches([]), read_since=scheduler.generation)
    assert scheduler._batch_status == {}
