"""The store's guarantees, on a real SQLite file: one result per request, counters that always add up,
cancel that never relabels a finished result, expiry and archival."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from sqlalchemy import event, text

from overnight.store import BatchRecord, Completed, Completion, QueueFullError, Store, Usage, open_store
from overnight.store import base as store_module
from overnight.store import sqlite as sqlite_module
from overnight.store.feed import ItemFeed
from overnight.store.records import ENDED, ERRORED, SUCCEEDED
from overnight.store.sqlite import SQLiteStore

FAR_FUTURE = 2**60


async def make_batch(
    store: Store, n: int, *, batch_id: str = "msgbatch_a", expires_at: int = FAR_FUTURE
) -> BatchRecord:
    items = [(f"r{i}", b'{"model":"m"}') for i in range(n)]
    return await store.insert_batch(
        batch_id=batch_id, workspace="w", created_at=1_000, expires_at=expires_at, items=items
    )


async def all_results(store: Store, batch_id: str) -> bytes:
    record = await store.get_batch("w", batch_id)
    assert record is not None
    return b"".join([chunk async for chunk in store.stream_results(record)])


def assert_counts_add_up(record: BatchRecord) -> None:
    total = record.processing + record.succeeded + record.errored + record.canceled + record.expired
    assert total == record.total


async def test_insert_stores_everything_pending(store: Store) -> None:
    record = await make_batch(store, 50)
    assert (record.total, record.processing, record.status) == (50, 50, "in_progress")
    assert_counts_add_up(record)


async def test_duplicate_custom_id_is_impossible(store: Store) -> None:
    items = [("same", b"{}"), ("same", b"{}")]
    with pytest.raises((sqlite3.IntegrityError, psycopg.errors.UniqueViolation), match=r"(?i)unique"):
        await store.insert_batch(batch_id="msgbatch_d", workspace="w", created_at=1, expires_at=2, items=items)
    assert await store.get_batch("w", "msgbatch_d") is None  # nothing half-stored


async def test_a_request_gets_exactly_one_result(store: Store) -> None:
    record = await make_batch(store, 3)
    leased = await store.lease_requests([(record.seq, 10)], owner="me", lease_until=FAR_FUTURE)
    assert len(leased) == 3 and all(item.attempt == 1 for item in leased)
    first = [Completion(i.id, i.batch_seq, i.attempt, SUCCEEDED, b"ok\n") for i in leased]
    await store.complete_requests(first, owner="me", now=5)
    # A duplicate, a stale attempt and another owner's write all change nothing.
    await store.complete_requests(first, owner="me", now=6)
    stale = [Completion(i.id, i.batch_seq, i.attempt - 1, ERRORED, b"late\n") for i in leased]
    await store.complete_requests(stale, owner="me", now=6)
    await store.complete_requests(
        [Completion(i.id, i.batch_seq, i.attempt, ERRORED, b"x\n") for i in leased], owner="other", now=6
    )
    after = await store.get_batch("w", "msgbatch_a")
    assert after is not None
    assert (after.succeeded, after.errored, after.processing, after.status, after.ended_at) == (3, 0, 0, ENDED, 5)
    assert await all_results(store, record.id) == b"ok\n" * 3


async def test_cancel_moves_only_pending_and_keeps_running_results(store: Store) -> None:
    record = await make_batch(store, 10)
    leased = await store.lease_requests([(record.seq, 4)], owner="me", lease_until=FAR_FUTURE)
    canceling = await store.cancel_batch(record.seq, 7)
    assert canceling is not None
    assert (canceling.status, canceling.canceled, canceling.processing) == ("canceling", 6, 4)
    assert canceling.cancel_initiated_at == 7
    assert_counts_add_up(canceling)
    # Running requests finish with their real results; then the batch ends.
    await store.complete_requests(
        [Completion(i.id, i.batch_seq, i.attempt, SUCCEEDED, b"ok %s\n" % i.custom_id.encode()) for i in leased],
        owner="me",
        now=9,
    )
    ended = await store.get_batch("w", "msgbatch_a")
    assert ended is not None
    assert (ended.status, ended.succeeded, ended.canceled, ended.ended_at) == (ENDED, 4, 6, 9)
    # By request id: exactly the leased ones kept their results, every other one is canceled.
    ran = {i.custom_id for i in leased}
    assert len(ran) == 4
    assert await all_results(store, record.id) == b"".join(
        b"ok r%d\n" % n if f"r{n}" in ran else b'{"custom_id":"r%d","result":{"type":"canceled"}}\n' % n
        for n in range(10)
    )
    assert await store.cancel_batch(record.seq, 10) is None  # not in progress any more


async def test_leasing_skips_canceled_batches_and_is_fair(store: Store) -> None:
    big = await make_batch(store, 100, batch_id="msgbatch_big")
    small = await make_batch(store, 3, batch_id="msgbatch_small")
    leased = await store.lease_requests([(big.seq, 5), (small.seq, 5)], owner="me", lease_until=FAR_FUTURE)
    assert sorted(i.batch_seq for i in leased).count(small.seq) == 3
    await store.cancel_batch(big.seq, 3)
    assert await store.lease_requests([(big.seq, 5)], owner="me", lease_until=FAR_FUTURE) == []


async def test_lapsed_leases_return_to_pending_and_attempt_counts(store: Store) -> None:
    record = await make_batch(store, 2)
    await store.lease_requests([(record.seq, 2)], owner="dead", lease_until=100)
    assert await store.recover_expired_leases([record.seq], now=50) == 0
    assert await store.recover_expired_leases([record.seq], now=150) == 2
    again = await store.lease_requests([(record.seq, 2)], owner="me", lease_until=FAR_FUTURE)
    assert [item.attempt for item in again] == [2, 2]


async def test_release_gives_unstarted_requests_their_attempt_back(store: Store) -> None:
    record = await make_batch(store, 1)
    leased = await store.lease_requests([(record.seq, 1)], owner="me", lease_until=FAR_FUTURE)
    assert await store.release_requests([leased[0].id], owner="me", started=False, now=5) == 1
    again = await store.lease_requests([(record.seq, 1)], owner="me", lease_until=FAR_FUTURE)
    assert again[0].attempt == 1


@pytest.mark.parametrize("handed_back_by", ["lease recovery", "release at shutdown"])
async def test_requests_handed_back_in_a_canceling_batch_are_canceled_and_it_ends(
    store: Store, handed_back_by: str
) -> None:
    record = await make_batch(store, 4)
    leased = await store.lease_requests([(record.seq, 3)], owner="me", lease_until=100)
    await store.complete_requests(
        [Completion(leased[0].id, record.seq, leased[0].attempt, SUCCEEDED, b"ok\n")], owner="me", now=2
    )
    canceling = await store.cancel_batch(record.seq, 3)  # 1 pending → canceled; 2 still running
    assert canceling is not None and (canceling.status, canceling.canceled, canceling.processing) == ("canceling", 1, 2)
    if handed_back_by == "lease recovery":
        assert await store.recover_expired_leases([record.seq], now=150) == 2
    else:
        assert await store.release_requests([i.id for i in leased[1:]], owner="me", started=True, now=150) == 2
    ended = await store.get_batch("w", record.id)
    assert ended is not None
    assert (ended.status, ended.ended_at, ended.succeeded, ended.canceled, ended.processing) == ("ended", 150, 1, 3, 0)
    assert_counts_add_up(ended)
    assert await all_results(store, record.id) == b"ok\n" + b"".join(
        b'{"custom_id":"r%d","result":{"type":"canceled"}}\n' % i for i in (1, 2, 3)
    )


async def test_active_batches_are_the_unfinished_ones(store: Store) -> None:
    first = await make_batch(store, 1, batch_id="msgbatch_1")
    second = await make_batch(store, 1, batch_id="msgbatch_2")
    await store.cancel_batch(second.seq, 5)  # ends at once: nothing was running
    active = await store.active_batches()
    assert active.statuses == [(first.seq, "in_progress")]


async def test_expiry_ends_the_batch_and_discards_late_results(store: Store) -> None:
    record = await make_batch(store, 5, expires_at=100)
    leased = await store.lease_requests([(record.seq, 2)], owner="me", lease_until=FAR_FUTURE)
    assert await store.expire_batches(now=99) == []
    assert await store.expire_batches(now=100) == [("msgbatch_a", 5)]
    await store.complete_requests(
        [Completion(i.id, i.batch_seq, i.attempt, SUCCEEDED, b"late\n") for i in leased], owner="me", now=101
    )
    after = await store.get_batch("w", "msgbatch_a")
    assert after is not None
    assert (after.status, after.expired, after.succeeded, after.ended_at) == (ENDED, 5, 0, 100)
    assert_counts_add_up(after)


async def test_archival_deletes_results_but_keeps_the_batch(store: Store) -> None:
    record = await make_batch(store, 2)
    await store.cancel_batch(record.seq, 2_000)
    assert await store.archive_batches(now=1_500, retention_micros=1_000) == []
    assert await store.archive_batches(now=2_500, retention_micros=1_000) == ["msgbatch_a"]
    after = await store.get_batch("w", "msgbatch_a")
    assert after is not None and after.archived_at == 2_500 and after.canceled == 2
    with store.engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM requests")).scalar_one() == 0


async def test_delete_only_ended_batches(store: Store) -> None:
    record = await make_batch(store, 2)
    assert await store.delete_batch(record.seq) is False
    await store.cancel_batch(record.seq, 5)
    assert await store.delete_batch(record.seq) is True
    assert await store.get_batch("w", "msgbatch_a") is None
    with store.engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM requests")).scalar_one() == 0


async def test_results_pages_cover_every_request_once(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    await make_batch(store, 4, batch_id="msgbatch_before")  # other batches' rows around this one's
    record = await make_batch(store, 25)
    await make_batch(store, 4, batch_id="msgbatch_after")
    leased = await store.lease_requests([(record.seq, 10)], owner="me", lease_until=FAR_FUTURE)
    await store.complete_requests(
        [Completion(i.id, i.batch_seq, i.attempt, SUCCEEDED, b"ok\n") for i in leased], owner="me", now=3
    )
    await store.cancel_batch(record.seq, 4)
    ended = await store.get_batch("w", record.id)
    assert ended is not None and ended.status == ENDED
    assert (ended.first_request_id, ended.last_request_id) == (5, 29)
    monkeypatch.setattr(store_module, "_RESULT_CHUNK_IDS", 7)
    chunks = [chunk async for chunk in store.stream_results(ended)]
    assert len(chunks) == 4  # 25 ids in runs of 7
    lines = b"".join(chunks).splitlines()
    assert lines.count(b"ok") == 10
    canceled = sorted(line for line in lines if line != b"ok")
    expected = sorted(b'{"custom_id":"r%d","result":{"type":"canceled"}}' % i for i in range(10, 25))
    assert canceled == expected


async def test_list_pages_both_ways(store: Store) -> None:
    for n in range(5):
        await make_batch(store, 1, batch_id=f"msgbatch_{n}")
    page, more = await store.list_batches("w", limit=2, after_id=None, before_id=None)
    assert [r.id for r in page] == ["msgbatch_4", "msgbatch_3"] and more
    page, more = await store.list_batches("w", limit=2, after_id="msgbatch_3", before_id=None)
    assert [r.id for r in page] == ["msgbatch_2", "msgbatch_1"] and more
    page, more = await store.list_batches("w", limit=2, after_id=None, before_id="msgbatch_1")
    assert [r.id for r in page] == ["msgbatch_3", "msgbatch_2"] and more
    page, more = await store.list_batches("w", limit=5, after_id="msgbatch_4", before_id="msgbatch_1")
    assert [r.id for r in page] == ["msgbatch_3", "msgbatch_2"] and not more
    other, _ = await store.list_batches("other", limit=5, after_id=None, before_id=None)
    assert other == []


async def test_checkpoint_moves_every_committed_page_into_the_database_file(store: Store, tmp_path: Path) -> None:
    if not isinstance(store, SQLiteStore):
        pytest.skip("SQLite's WAL only")
    database = tmp_path / "db.sqlite3"
    size_before = database.stat().st_size
    big = b'{"model":"m","pad":"%s"}' % (b"x" * 4000)
    await store.insert_batch(
        batch_id="msgbatch_big",
        workspace="w",
        created_at=1,
        expires_at=FAR_FUTURE,
        items=[(f"r{i}", big) for i in range(3000)],  # ~12 MB: past SQLite's default auto-checkpoint
    )
    # Automatic checkpoints are off: the commit left its pages in the WAL, not in the database file.
    assert database.stat().st_size == size_before
    await store.checkpoint()
    assert database.stat().st_size > 12_000_000
    with store.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA page_size").scalar_one() == 8192


async def test_releasing_memory_closes_the_idle_connections_and_the_store_carries_on(store: Store) -> None:
    record = await make_batch(store, 20)
    leased = await store.lease_requests([(record.seq, 5)], owner="me", lease_until=FAR_FUTURE)
    if isinstance(store, SQLiteStore):
        assert store.engine.pool.checkedin() > 0  # type: ignore[attr-defined]
    await store.release_memory()
    if isinstance(store, SQLiteStore):
        # Their page caches and cached statements (with the values last bound to them) went with them.
        assert store.engine.pool.checkedin() == 0  # type: ignore[attr-defined]
    await store.complete_requests(
        [Completion(i.id, i.batch_seq, i.attempt, SUCCEEDED, b"ok\n") for i in leased], owner="me", now=5
    )
    rest = await store.lease_requests([(record.seq, 20)], owner="me", lease_until=FAR_FUTURE)
    assert len(rest) == 15
    after = await store.get_batch("w", record.id)
    assert after is not None and (after.succeeded, after.processing) == (5, 15)


async def test_a_big_insert_runs_on_a_small_page_cache_and_gives_the_cache_back(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not isinstance(store, SQLiteStore):
        pytest.skip("SQLite's page cache only")
    monkeypatch.setattr(sqlite_module, "_SMALL_CACHE_FROM_ROWS", 500)
    statements: list[str] = []

    def trace(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
        dbapi_connection.set_trace_callback(statements.append)

    event.listen(store.engine, "checkout", trace)
    small = await make_batch(store, 100, batch_id="msgbatch_small")
    small_cache = f"PRAGMA cache_size=-{sqlite_module._INSERT_CACHE_KIB}"
    assert not [s for s in statements if s.startswith("PRAGMA cache_size")]
    statement_rows = sqlite_module._INSERT_STATEMENT_ROWS[0]
    big = await make_batch(store, 2 * statement_rows, batch_id="msgbatch_big")
    pragmas = [n for n, s in enumerate(statements) if s.startswith("PRAGMA cache_size=")]  # set, not read
    inserts = [n for n, s in enumerate(statements) if s.startswith("INSERT INTO requests")]
    # Set small before the big batch's first row, and back after its last.
    assert [statements[n] for n in pragmas] == [small_cache, f"PRAGMA cache_size=-{sqlite_module._CACHE_KIB}"]
    big_inserts = [n for n in inserts if n > pragmas[0]]
    assert len(big_inserts) == 2 and big_inserts[-1] < pragmas[1]  # two statements of the biggest size
    assert (small.total, big.total) == (100, 2 * statement_rows)
    leased = await store.lease_requests([(big.seq, 5000)], owner="o", lease_until=FAR_FUTURE)
    assert sorted(request.custom_id for request in leased) == sorted(f"r{i}" for i in range(2 * statement_rows))


@pytest.fixture
def statement_limit(store: Store, monkeypatch: pytest.MonkeyPatch) -> int:
    """A small `_STATEMENT_BYTES` for the SQLite store, standing in for the real one. SQLite copies every
    value bound and keeps the copies until the statement runs again: statements of 2,000 big requests or
    results would hold the batch's size twice over (PostgreSQL's statements keep nothing alike)."""
    if not isinstance(store, SQLiteStore):
        pytest.skip("SQLite's statements only")
    monkeypatch.setattr(sqlite_module, "_STATEMENT_BYTES", 64 * 1024)
    return 64 * 1024


def _record_insert_statements(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The row counts of the INSERT statements the SQLite store runs from now on, in order."""
    sizes: list[int] = []
    make_sql = sqlite_module._insert_sql

    def recorded(rows: int) -> str:
        sizes.append(rows)
        return make_sql(rows)

    monkeypatch.setattr(sqlite_module, "_insert_sql", recorded)
    return sizes


def _bound_bytes(sizes: list[int], items: list[tuple[str, bytes]]) -> list[int]:
    """The bytes of params each statement of `sizes` bound, the statements taking `items` in order."""
    bound, position = [], 0
    for size in sizes:
        bound.append(sum(len(params) for _, params in items[position : position + size]))
        position += size
    assert position == len(items)
    return bound


async def test_an_insert_statement_binds_a_bounded_size_of_params_however_big_the_requests(
    store: Store, statement_limit: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    limit = statement_limit
    sizes = _record_insert_statements(monkeypatch)

    def params(i: int, size: int) -> bytes:
        return b'{"model":"m","i":%d,"pad":"%s"}' % (i, b"x" * size)

    items = [(f"s{i}", params(i, 1_000)) for i in range(300)]  # small: many to a statement
    items += [(f"h{i}", params(i, 100_000)) for i in range(3)]  # each one past the limit alone
    items += [(f"m{i}", params(i, 20_000)) for i in range(30)]  # a few to a statement
    record = await store.insert_batch(batch_id="msgbatch_h", workspace="w", created_at=1, expires_at=2, items=items)
    assert record.total == len(items)
    bound = _bound_bytes(sizes, items)
    assert all(size <= limit for size, rows in zip(bound, sizes, strict=True) if rows > 1)
    assert [rows for size, rows in zip(bound, sizes, strict=True) if size > limit] == [1, 1, 1]  # the huge ones
    assert sizes[0] == 60 and max(sizes) < sqlite_module._INSERT_STATEMENT_ROWS[0]  # the limit, not the rows
    # Every request stored once, in order, as it came.
    leased = await store.lease_requests([(record.seq, len(items))], owner="o", lease_until=FAR_FUTURE)
    assert [(request.custom_id, bytes(request.params)) for request in leased] == items


async def test_a_streamed_insert_of_big_requests_stores_them_while_later_ones_still_come(
    store: Store, statement_limit: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Runs wait until they make a full statement: with big requests that is the bytes limit, not 2,000
    # requests (the whole batch, before this limit: nothing was stored until the body had arrived).
    limit = statement_limit
    sizes = _record_insert_statements(monkeypatch)
    items = [(f"r{i}", b'{"model":"m","i":%d,"pad":"%s"}' % (i, b"x" * 10_000)) for i in range(60)]
    feed = ItemFeed(hold_seconds=30)
    insert = asyncio.ensure_future(
        store.insert_streamed_batch(
            batch_id="msgbatch_s", workspace="w", created_at=1, expires_at=FAR_FUTURE, feed=feed, max_requests=100
        )
    )
    feed.put(items[:3])  # short of a full statement: waits
    await asyncio.sleep(0.2)
    assert sizes == []
    for start in range(3, 30, 3):
        feed.put(items[start : start + 3])
    deadline = asyncio.get_running_loop().time() + 10
    while sum(sizes) < 24:  # all but the last run's few rows, stored before the body ends
        assert asyncio.get_running_loop().time() < deadline, sizes
        await asyncio.sleep(0.02)
    assert not insert.done()
    feed.put(items[30:])
    feed.end()
    record = await insert
    bound = _bound_bytes(sizes, items)
    assert all(size <= limit for size in bound)
    assert record.total == len(items)
    leased = await store.lease_requests([(record.seq, len(items))], owner="o", lease_until=FAR_FUTURE)
    assert [(request.custom_id, bytes(request.params)) for request in leased] == items


async def test_checkpoints_wait_while_writes_keep_coming_and_catch_up_when_they_stop(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not isinstance(store, SQLiteStore):
        pytest.skip("SQLite's WAL only")
    database = tmp_path / "db.sqlite3"
    big = b'{"model":"m","pad":"%s"}' % (b"x" * 4000)

    async def write(batch_id: str) -> None:
        items = [(f"r{i}", big) for i in range(1000)]  # ~4 MB
        await store.insert_batch(batch_id=batch_id, workspace="w", created_at=1, expires_at=FAR_FUTURE, items=items)

    await write("msgbatch_1")
    await store.checkpoint()  # the first one always runs
    first = database.stat().st_size
    assert first > 4_000_000
    await write("msgbatch_2")
    await store.checkpoint()  # written since the last call, and checkpointed just now: later
    assert database.stat().st_size == first
    await store.checkpoint()  # nothing written since the last call: the writes stopped, catch up
    second = database.stat().st_size
    assert second > first + 4_000_000
    # While writes keep coming, one still runs every few seconds.
    monkeypatch.setattr(sqlite_module, "_CHECKPOINT_WHILE_WRITING_SECONDS", 0.0)
    await write("msgbatch_3")
    await store.checkpoint()
    assert database.stat().st_size > second + 4_000_000


async def test_result_writes_bind_a_bounded_size_of_lines(store: Store, statement_limit: int) -> None:
    limit = statement_limit
    record = await make_batch(store, 40)
    leased = await store.lease_requests([(record.seq, 40)], owner="me", lease_until=FAR_FUTURE)
    lines = {item.id: b'{"custom_id":"%s","pad":"%s"}\n' % (item.custom_id.encode(), b"x" * 9_000) for item in leased}
    done = [Completion(item.id, item.batch_seq, item.attempt, SUCCEEDED, lines[item.id]) for item in leased]
    pieces = list(sqlite_module._outcome_pieces(SUCCEEDED, done, "me"))
    assert [rows for rows, _, _ in pieces] == [7, 7, 7, 7, 7, 5]  # eight lines would bind 72 KB
    assert all(sum(len(value) for value in values if isinstance(value, bytes)) <= limit for _, _, values in pieces)
    written = await store.complete_requests(done, owner="me", now=5)
    assert len(written.written) == 40
    ended = await store.get_batch("w", record.id)
    assert ended is not None and ended.status == ENDED
    assert await all_results(store, record.id) == b"".join(lines[request_id] for request_id in sorted(lines))


async def test_long_result_lines_are_read_in_chunks_of_a_bounded_size(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A few chunks are in memory at once: spans of 5,000 ids would hold every line of this batch at once
    # (before chunks were sized by the batch's line bytes: 60 KB lines, 300 MB). A small size stands in.
    # Short lines (400 bytes) keep the usual span, and so does a batch with no lines yet.
    assert store_module.result_chunk_ids(100_000, 40_000_000) == store_module._RESULT_CHUNK_IDS
    assert store_module.result_chunk_ids(0, 0) == store_module._RESULT_CHUNK_IDS
    limit = 50_000
    monkeypatch.setattr(store_module, "_RESULT_CHUNK_BYTES", limit)
    record = await make_batch(store, 40)
    leased = await store.lease_requests([(record.seq, 40)], owner="me", lease_until=FAR_FUTURE)
    lines = {item.id: b'{"custom_id":"%s","pad":"%s"}\n' % (item.custom_id.encode(), b"x" * 9_000) for item in leased}
    done = [Completion(item.id, item.batch_seq, item.attempt, SUCCEEDED, lines[item.id]) for item in leased]
    await store.complete_requests(done[:30], owner="me", now=5)
    await store.complete_requests(
        [Completion(d.request_id, d.batch_seq, d.attempt, ERRORED, d.line) for d in done[30:]], owner="me", now=5
    )
    ended = await store.get_batch("w", record.id)
    assert ended is not None and ended.status == ENDED
    chunks = [chunk async for chunk in store.stream_results(ended)]
    assert b"".join(chunks) == b"".join(lines[request_id] for request_id in sorted(lines))
    assert len(chunks) == 8 and all(len(chunk) <= limit for chunk in chunks)  # 5 lines each


async def test_results_deleted_while_streaming_end_in_an_error_not_a_short_stream(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    record = await make_batch(store, 20)
    await store.cancel_batch(record.seq, 4)
    ended = await store.get_batch("w", record.id)
    assert ended is not None
    monkeypatch.setattr(store_module, "_RESULT_CHUNK_IDS", 5)
    monkeypatch.setattr(store_module, "_READS_AHEAD", 1)
    stream = store.stream_results(ended)
    first = await anext(stream)
    assert first.count(b"\n") == 5
    assert await store.delete_batch(record.seq)
    short = r"^batch msgbatch_a: (5|10) result lines for 20 requests$"  # what was read before the delete
    with pytest.raises(store_module.ResultsChangedError, match=short):
        async for _ in stream:
            pass


# --- two nodes on one database: a second store on the same URL races the first ----------------------


@pytest.fixture
async def twin(store: Store) -> AsyncIterator[Store]:
    """Another store on the same database, as a second node would have."""
    other = open_store(store.engine.url.render_as_string(hide_password=False))
    yield other
    other.close()


async def test_two_lessees_leasing_at_once_never_share_a_request(store: Store, twin: Store) -> None:
    record = await make_batch(store, 400)
    rounds = [
        lessee.lease_requests([(record.seq, 25)], owner=owner, lease_until=FAR_FUTURE)
        for _ in range(10)
        for lessee, owner in ((store, "a"), (twin, "b"))
    ]
    leased = [item for batch in await asyncio.gather(*rounds) for item in batch]
    ids = [item.id for item in leased]
    assert len(ids) == len(set(ids)) == 400
    assert await store.lease_requests([(record.seq, 10)], owner="c", lease_until=FAR_FUTURE) == []


async def test_recovery_racing_on_two_nodes_hands_each_lease_back_once(store: Store, twin: Store) -> None:
    record = await make_batch(store, 30)
    await store.lease_requests([(record.seq, 30)], owner="dead", lease_until=10)
    await store.cancel_batch(record.seq, 11)  # the lapsed ones will be canceled, and counted, once
    freed = await asyncio.gather(
        store.recover_expired_leases([record.seq], 20), twin.recover_expired_leases([record.seq], 20)
    )
    assert sum(freed) == 30
    after = await store.get_batch("w", record.id)
    assert after is not None and (after.canceled, after.status) == (30, ENDED)
    assert_counts_add_up(after)


async def test_expiry_racing_on_two_nodes_ends_the_batch_once(store: Store, twin: Store) -> None:
    record = await make_batch(store, 40, expires_at=100)
    await store.lease_requests([(record.seq, 10)], owner="me", lease_until=FAR_FUTURE)
    ended = await asyncio.gather(store.expire_batches(now=100), twin.expire_batches(now=100))
    assert sorted(ended) == [[], [(record.id, 40)]]
    after = await store.get_batch("w", record.id)
    assert after is not None and (after.expired, after.status) == (40, ENDED)
    assert_counts_add_up(after)


async def test_the_queue_limit_holds_against_concurrent_creates(store: Store, twin: Store) -> None:
    items = [(f"r{i}", b"{}") for i in range(60)]
    outcomes = await asyncio.gather(
        *(
            lessee.insert_batch(
                batch_id=f"msgbatch_q{n}",
                workspace="w",
                created_at=1,
                expires_at=FAR_FUTURE,
                items=items,
                max_queued_requests=100,
            )
            for n, lessee in enumerate((store, twin, store, twin))
        ),
        return_exceptions=True,
    )
    assert sum(isinstance(outcome, BatchRecord) for outcome in outcomes) == 1
    assert all(isinstance(outcome, BatchRecord | QueueFullError) for outcome in outcomes)


async def test_usage_is_summed_with_the_results_it_counts(store: Store) -> None:
    record = await make_batch(store, 3)
    leased = await store.lease_requests([(record.seq, 3)], owner="me", lease_until=FAR_FUTURE)
    done = [Completion(i.id, i.batch_seq, i.attempt, SUCCEEDED, b"ok\n", (10, 2, 1, 4)) for i in leased]
    await store.complete_requests(done, owner="me", now=5)
    await store.complete_requests(done, owner="me", now=6)  # a duplicate: neither result nor usage again
    after = await store.get_batch("w", record.id)
    assert after is not None and after.usage == Usage(30, 6, 3, 12)
    assert (after.succeeded_bytes, after.errored_bytes) == (3 * len(b"ok\n"), 0)
    assert await store.workspace_usage("w") == (1, Usage(30, 6, 3, 12))
    assert await store.workspace_usage("nobody") == (0, Usage())


async def test_a_group_of_results_writes_exactly_those_still_leased(store: Store) -> None:
    # Groups span several statements (up to thousands of rows each); a lease lost in one of them (here:
    # taken back and leased again, so the first attempt is stale) or a result repeated in the group must
    # not keep the other rows from being written, nor be written or counted itself.
    record = await make_batch(store, 4500)
    leased = await store.lease_requests([(record.seq, 4500)], owner="me", lease_until=100)
    clean, rest = leased[:2100], leased[2100:]
    written = await store.complete_requests(
        [Completion(i.id, i.batch_seq, i.attempt, SUCCEEDED, b"ok\n", (2, 1, 0, 0)) for i in clean], owner="me", now=150
    )
    assert [c.request_id for c in written.written] == [i.id for i in clean]
    lost = {item.id for item in rest[550:560]} | {item.id for item in rest[2390:]}
    assert await store.recover_expired_leases([record.seq], now=150) == 2400
    again = await store.lease_requests([(record.seq, 2400)], owner="me", lease_until=FAR_FUTURE)
    attempt = {item.id: item.attempt for item in again}
    done = [
        Completion(i.id, i.batch_seq, attempt[i.id] - (i.id in lost), SUCCEEDED, b"ok\n", (2, 1, 0, 0)) for i in rest
    ]
    completed = await store.complete_requests([*done, done[3]], owner="me", now=200)
    assert sorted(c.request_id for c in completed.written) == sorted(i.id for i in rest if i.id not in lost)
    assert completed.batches_ended == 0
    after = await store.get_batch("w", record.id)
    assert after is not None
    assert (after.succeeded, after.processing, after.usage) == (4480, 20, Usage(8960, 4480, 0, 0))
    assert (after.succeeded_bytes, after.errored_bytes) == (4480 * len(b"ok\n"), 0)  # each line once
    assert_counts_add_up(after)
    # The stale ones were still leased; their own attempt writes them, and the batch ends.
    late = [Completion(i, record.seq, attempt[i], ERRORED, b"late\n") for i in sorted(lost)]
    assert (await store.complete_requests(late, owner="me", now=300)).batches_ended == 1
    ended = await store.get_batch("w", record.id)
    assert ended is not None and (ended.succeeded_bytes, ended.errored_bytes) == (4480 * 3, 20 * len(b"late\n"))
    assert await all_results(store, record.id) == b"".join(
        b"late\n" if i.id in lost else b"ok\n" for i in sorted(leased, key=lambda item: item.id)
    )


async def test_live_workers_split_a_shared_cap_exactly(store: Store, twin: Store) -> None:
    await store.heartbeat("a", 100, live_after=0)
    second = await twin.heartbeat("b", 100, live_after=0)
    first = await store.heartbeat("a", 101, live_after=0)
    assert (first.rank, first.nodes, second.rank, second.nodes) == (0, 2, 1, 2)
    assert first.share_of(5) + second.share_of(5) == 5 and first.share_of(1) + second.share_of(1) == 1
    # b stops renewing: once its heartbeat is older than `live_after`, a has the whole cap.
    alone = await store.heartbeat("a", 500, live_after=200)
    assert (alone.rank, alone.nodes, alone.share_of(5)) == (0, 1, 5)


async def test_completing_says_how_many_batches_it_ended(store: Store) -> None:
    # /metrics counts results and ended batches from this: a duplicate write must count nothing twice.
    one = await make_batch(store, 2, batch_id="msgbatch_one")
    two = await make_batch(store, 1, batch_id="msgbatch_two")
    leased = await store.lease_requests([(one.seq, 2), (two.seq, 1)], owner="me", lease_until=FAR_FUTURE)
    done = [Completion(i.id, i.batch_seq, i.attempt, SUCCEEDED, b"ok\n") for i in leased]
    first_of_one = next(c for c in done if c.batch_seq == one.seq)
    assert await store.complete_requests([first_of_one], owner="me", now=5) == Completed([first_of_one], 0)
    both = await store.complete_requests(done, owner="me", now=6)
    assert both.batches_ended == 2
    assert sorted(c.request_id for c in both.written) == sorted(c.request_id for c in done if c is not first_of_one)
    assert await store.complete_requests(done, owner="me", now=7) == Completed([], 0)
    assert await store.complete_requests([], owner="me", now=8) == Completed([], 0)


async def test_queue_counts_are_pending_and_leased_requests_of_unfinished_batches(store: Store) -> None:
    assert await store.queue_counts() == (0, 0)
    first = await make_batch(store, 10, batch_id="msgbatch_first")
    second = await make_batch(store, 5, batch_id="msgbatch_second")
    leased = await store.lease_requests([(first.seq, 3), (second.seq, 1)], owner="me", lease_until=FAR_FUTURE)
    assert await store.queue_counts() == (11, 4)
    await store.complete_requests(
        [Completion(i.id, i.batch_seq, i.attempt, SUCCEEDED, b"ok\n") for i in leased[:2]], owner="me", now=5
    )
    assert await store.queue_counts() == (11, 2)
    await store.cancel_batch(second.seq, 6)  # its 4 pending requests are canceled, the leased one runs on
    pending, leased_now = await store.queue_counts()
    assert (pending, leased_now) == (7, 2)
    await store.expire_batches(now=FAR_FUTURE)  # ends both: nothing is waiting or leased any more
    assert await store.queue_counts() == (0, 0)
