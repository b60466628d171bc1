"""The streamed insert, on both stores: requests stored as they come, in one transaction that nobody sees
before it commits, rolled back whole when the create fails, its body stalls, or the queue is full.
On SQLite its transaction holds the one write lock: other writes wait for it, never longer than its
pause between runs."""

from __future__ import annotations

import asyncio
import time

import pytest

from overnight.store import BatchRecord, QueueFullError, Store
from overnight.store.feed import FeedAbortedError, ItemFeed, StreamedInsertUndoneError

FAR_FUTURE = 2**60


def _items(prefix: str, start: int, stop: int) -> list[tuple[str, bytes]]:
    return [(f"{prefix}{i}", b'{"model":"m","n":%d}' % i) for i in range(start, stop)]


def _streamed(
    store: Store,
    feed: ItemFeed,
    *,
    batch_id: str = "msgbatch_s",
    max_requests: int = 1000,
    max_queued_requests: int = 0,
) -> asyncio.Future[BatchRecord]:
    return asyncio.ensure_future(
        store.insert_streamed_batch(
            batch_id=batch_id,
            workspace="w",
            created_at=1_000,
            expires_at=FAR_FUTURE,
            feed=feed,
            max_requests=max_requests,
            max_queued_requests=max_queued_requests,
        )
    )


async def _eventually(condition: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def _nothing_stored(store: Store, batch_id: str = "msgbatch_s") -> None:
    assert await store.get_batch("w", batch_id) is None
    assert (await store.queue_counts()) == (0, 0)
    assert (await store.active_batches()).statuses == []


@pytest.mark.parametrize("run", [50, 900])  # runs shorter than SQLite's insert statement, and across them
async def test_runs_are_stored_in_order_as_one_batch(store: Store, run: int) -> None:
    feed = ItemFeed(hold_seconds=30)
    insert = _streamed(store, feed, max_requests=10_000)
    total = 5 * run
    for start in range(0, total, run):
        feed.put(_items("r", start, start + run))
        await asyncio.sleep(0.01)
    feed.end()
    record = await insert
    assert (record.total, record.processing, record.status) == (total, total, "in_progress")
    assert record.first_request_id is not None and record.last_request_id is not None
    assert record.last_request_id - record.first_request_id + 1 == total  # the unused reservation given back
    leased = await store.lease_requests([(record.seq, 10_000)], owner="me", lease_until=FAR_FUTURE)
    assert [item.custom_id for item in leased] == [f"r{i}" for i in range(total)]
    assert [bytes(item.params) for item in leased[:2]] == [b'{"model":"m","n":0}', b'{"model":"m","n":1}']
    # Ids go on right after it: the next batch's range is contiguous with this one's.
    after = await store.insert_batch(
        batch_id="msgbatch_t", workspace="w", created_at=2_000, expires_at=FAR_FUTURE, items=_items("t", 0, 3)
    )
    assert after.first_request_id == record.last_request_id + 1


async def test_nothing_is_seen_before_it_commits(store: Store) -> None:
    feed = ItemFeed(hold_seconds=30)
    insert = _streamed(store, feed)
    feed.put(_items("r", 0, 100))
    await asyncio.sleep(0.3)  # copied, not committed
    assert not insert.done()
    await _nothing_stored(store)
    assert (await store.list_batches("w", limit=10, after_id=None, before_id=None)) == ([], False)
    feed.end()
    record = await insert
    assert (await store.queue_counts()) == (100, 0)
    assert (await store.active_batches()).statuses == [(record.seq, "in_progress")]


async def test_an_aborted_feed_stores_nothing(store: Store) -> None:
    feed = ItemFeed(hold_seconds=30)
    insert = _streamed(store, feed)
    feed.put(_items("r", 0, 100))
    await asyncio.sleep(0.2)
    feed.abort()
    with pytest.raises(FeedAbortedError):
        await insert
    await _nothing_stored(store)
    # The connection went back to the pool clean: the next create works.
    feed = ItemFeed(hold_seconds=30)
    insert = _streamed(store, feed, batch_id="msgbatch_u")
    feed.put(_items("r", 0, 3))
    feed.end()
    assert (await insert).total == 3


async def test_a_stalled_feed_is_rolled_back_after_its_hold(store: Store) -> None:
    feed = ItemFeed(hold_seconds=0.5)
    insert = _streamed(store, feed)
    feed.put(_items("r", 0, 10))
    started = time.monotonic()
    with pytest.raises(StreamedInsertUndoneError):
        await insert
    assert time.monotonic() - started < 5
    await _nothing_stored(store)


async def test_a_stalled_feed_hands_back_what_it_had_taken_where_the_store_reads_it_back(store: Store) -> None:
    feed = ItemFeed(hold_seconds=0.5)
    insert = _streamed(store, feed, max_requests=5000)
    taken = _items("r", 0, 1500) + _items("r", 1500, 2500)  # a full statement and rows waiting for more
    feed.put(taken[:1500])
    feed.put(taken[1500:])
    with pytest.raises(StreamedInsertUndoneError) as undone:
        await insert
    feed.put(_items("late", 0, 3))
    assert feed.untaken() == _items("late", 0, 3)
    if store.streamed_insert_reads_back:
        assert undone.value.taken == taken
    else:
        assert undone.value.taken is None
    await _nothing_stored(store)


async def test_a_full_queue_refuses_it_at_the_end_and_stores_nothing(store: Store) -> None:
    await store.insert_batch(
        batch_id="msgbatch_q", workspace="w", created_at=1, expires_at=FAR_FUTURE, items=_items("q", 0, 60)
    )
    feed = ItemFeed(hold_seconds=30)
    insert = _streamed(store, feed, max_queued_requests=100)
    feed.put(_items("r", 0, 41))
    feed.end()
    with pytest.raises(QueueFullError):
        await insert
    assert await store.get_batch("w", "msgbatch_s") is None
    assert (await store.queue_counts()) == (60, 0)
    feed = ItemFeed(hold_seconds=30)
    insert = _streamed(store, feed, max_queued_requests=100)
    feed.put(_items("r", 0, 40))
    feed.end()
    assert (await insert).total == 40


async def test_more_requests_than_announced_store_nothing(store: Store) -> None:
    feed = ItemFeed(hold_seconds=30)
    insert = _streamed(store, feed, max_requests=10)
    feed.put(_items("r", 0, 11))
    feed.end()
    with pytest.raises(RuntimeError, match="more than the 10"):
        await insert
    await _nothing_stored(store)


async def test_creates_meanwhile_are_not_held_up_and_ids_never_overlap(store: Store) -> None:
    if store.engine.dialect.name == "sqlite":
        pytest.skip("SQLite has one write lock: other writes wait for the streamed insert (the test below)")
    feed = ItemFeed(hold_seconds=30)
    insert = _streamed(store, feed, max_requests=500)
    feed.put(_items("r", 0, 100))
    await asyncio.sleep(0.2)
    other = await asyncio.wait_for(
        store.insert_batch(
            batch_id="msgbatch_o", workspace="w", created_at=1, expires_at=FAR_FUTURE, items=_items("o", 0, 5)
        ),
        timeout=5,
    )
    feed.put(_items("r", 100, 200))
    feed.end()
    record = await insert
    assert record.total == 200
    assert record.first_request_id is not None and record.last_request_id is not None
    assert other.first_request_id is not None and other.last_request_id is not None
    # Ours reserved room for 500 first, so the other batch's ids lie after all of it.
    assert record.last_request_id < other.first_request_id
    leased = await store.lease_requests([(record.seq, 1000)], owner="me", lease_until=FAR_FUTURE)
    assert [item.custom_id for item in leased] == [f"r{i}" for i in range(200)]


async def test_at_most_the_stores_own_number_run_at_once(store: Store) -> None:
    feeds = [ItemFeed(hold_seconds=30) for _ in range(store.streamed_inserts)]
    inserts = [_streamed(store, feed, batch_id=f"msgbatch_{n}") for n, feed in enumerate(feeds)]
    await _eventually(lambda: not store.can_stream_insert())
    for feed in feeds:
        feed.put(_items("r", 0, 1))
        feed.end()
    await asyncio.gather(*inserts)
    assert store.can_stream_insert()


async def test_a_pause_between_runs_longer_than_allowed_rolls_it_back(store: Store) -> None:
    feed = ItemFeed(hold_seconds=30, pause_seconds=0.3)
    insert = _streamed(store, feed)
    feed.put(_items("r", 0, 10))
    await asyncio.sleep(0.1)
    feed.put(_items("r", 10, 20))  # within the pause: taken
    started = time.monotonic()
    with pytest.raises(StreamedInsertUndoneError, match=r"paused for more than 0\.3 s"):
        await insert
    assert time.monotonic() - started < 5
    await _nothing_stored(store)


async def test_on_sqlite_other_writes_wait_for_it_at_most_its_pause(store: Store) -> None:
    if store.engine.dialect.name != "sqlite":
        pytest.skip("PostgreSQL's streamed insert holds up no other write (the test above)")
    assert store.streamed_inserts == 1 and store.streamed_insert_pause_seconds is not None
    # Ended in time: the other create waits for the commit and gets the ids after it.
    feed = ItemFeed(hold_seconds=30, pause_seconds=5)
    insert = _streamed(store, feed)
    feed.put(_items("r", 0, 100))
    await asyncio.sleep(0.2)
    other = asyncio.ensure_future(
        store.insert_batch(
            batch_id="msgbatch_o", workspace="w", created_at=1, expires_at=FAR_FUTURE, items=_items("o", 0, 5)
        )
    )
    await asyncio.sleep(0.3)
    assert not other.done()  # waiting for the write lock
    feed.put(_items("r", 100, 200))
    feed.end()
    record, stored = await insert, await asyncio.wait_for(other, timeout=10)
    assert record.total == 200 and stored.total == 5
    assert record.last_request_id is not None and stored.first_request_id is not None
    assert stored.first_request_id == record.last_request_id + 1
    leased = await store.lease_requests([(record.seq, 1000)], owner="me", lease_until=FAR_FUTURE)
    assert [item.custom_id for item in leased] == [f"r{i}" for i in range(200)]
    # A body that pauses: the other write waits no longer than the pause, and the insert rolls back.
    feed = ItemFeed(hold_seconds=30, pause_seconds=0.5)
    insert = _streamed(store, feed, batch_id="msgbatch_p")
    feed.put(_items("p", 0, 100))
    await asyncio.sleep(0.1)
    started = time.monotonic()
    await asyncio.wait_for(
        store.insert_batch(
            batch_id="msgbatch_q", workspace="w", created_at=1, expires_at=FAR_FUTURE, items=_items("q", 0, 5)
        ),
        timeout=10,
    )
    assert time.monotonic() - started < 2.5
    with pytest.raises(StreamedInsertUndoneError):
        await insert
    assert await store.get_batch("w", "msgbatch_p") is None
