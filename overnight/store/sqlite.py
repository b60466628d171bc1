"""The SQLite store: one process, one writer thread, the hot statements in SQLite's own dialect."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from bisect import bisect_right
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from itertools import accumulate, chain, repeat
from operator import attrgetter, itemgetter
from typing import Any, ClassVar

from sqlalchemy import Connection, Engine, create_engine, event

from overnight.store.base import Store, writes
from overnight.store.feed import ItemFeed, StreamedInsertUndoneError
from overnight.store.records import Completion, LeasedRequest

# Writes go as one statement per few hundred rows, never one per row: each statement releases the GIL
# once while SQLite works, where executemany releases and retakes it for every row — and with the event
# loop busy, retaking it can wait a whole switch interval (5 ms) each time.
# Inserts bind up to 2,000 rows per statement (a 250 MB create: 50 statements): a create that stores
# while its body arrives shares the GIL with the event loop decoding the next pieces, and half as many
# statements wait half as often to take it back. Only these sizes: the sqlite3 module caches each
# statement, and a cached statement keeps SQLite's copy of the values last bound to it (2,000 params of
# 2.5 KB: 5 MB, held for good) — one statement per size ever, not one per batch or piece. Bigger
# statements gained nothing more and cost that memory at the create's peak. Each size about half the
# one before, so that requests too long for 2,000 to a statement still fill most of one (see below).
_INSERT_STATEMENT_ROWS = (2000, 1000, 500, 250, 125, 60, 30, 15, 8, 4, 2, 1)
_PARAMS = itemgetter(1)  # of a (custom_id, params) item
# Whatever their rows, statements bind at most this many bytes of values (params, result lines), unless
# one value alone is bigger: SQLite copies each value bound and keeps the copies until the statement's
# next run, so 2,000 requests or results of 100 KB would bind 200 MB at once beside the Python objects,
# keep it bound on the connection for good, and hold a streamed insert back until 2,000 had arrived.
_STATEMENT_BYTES = 8 << 20


@functools.cache
def _insert_sql(rows: int) -> str:
    # The batch's seq is the first parameter, used by every row (`?1`), so batches share statements.
    return "INSERT INTO requests (batch_seq, custom_id, params, state, attempt) VALUES " + ",".join(
        ["(?1, ?, ?, 'pending', 0)"] * rows
    )


_CACHE_KIB = 16384  # SQLite's page cache, per connection
# ... while a big batch's requests are inserted. Appending touches each leaf page once, but on a smaller
# cache SQLite also spills b-tree pages that later inserts change again, and a WAL frame overwritten
# within a transaction makes its commit re-read every frame after it to recompute their checksums (for
# 100,000 2.5 KB requests: 0.12 s on a 2-4 MiB cache, 0.01 s from 5 MiB up).
_INSERT_CACHE_KIB = 6144
_SMALL_CACHE_FROM_ROWS = 10_000
_CHECKPOINT_WHILE_WRITING_SECONDS = 5.0
# Enough for the writer, the readers and the checkpointer threads the store runs.
_POOL_SIZE = 8
# The next n pending requests of an in-progress batch, in id order, as one row of four values: their
# ids and next attempts (comma-separated), custom_ids (separated by 0x1f) and params (by 0x1e). Neither
# byte can occur in them: custom_ids are [A-Za-z0-9_-], and params were decoded as JSON at create, which
# admits no raw control characters. SQLite feeds each row to all four aggregates in turn, so the i-th
# piece of each belongs to the same request; splitting them and building the records runs in C loops.
_LEASABLE = (
    "SELECT id FROM requests WHERE batch_seq = ? AND state = 'pending'"
    " AND EXISTS (SELECT 1 FROM batches WHERE seq = ? AND status = 'in_progress') ORDER BY id LIMIT ?"
)
_LEASABLE_SQL = (
    "SELECT CAST(group_concat(id) AS BLOB), CAST(group_concat(attempt + 1) AS BLOB), group_concat(custom_id, x'1f'),"
    f" CAST(group_concat(CAST(params AS TEXT), x'1e') AS BLOB) FROM requests WHERE id IN ({_LEASABLE})"
)
# The rows just read: in this write transaction, a batch's first n pending requests are exactly its
# pending ones from the first id read to the last (found by id, not by walking the index again).
_LEASE_SQL = (
    "UPDATE requests SET state = 'running', lease_owner = ?, lease_expires_at = ?, attempt = attempt + 1 "
    "WHERE id BETWEEN ? AND ? AND +batch_seq = ? AND +state = 'pending'"
)
_RESULT_CHUNK_SQL = (
    "SELECT CAST(group_concat(CASE WHEN result IS NOT NULL THEN result ELSE "
    """'{"custom_id":"' || custom_id || '","result":{"type":"' || state || '"}}' || char(10) END, '') """
    "AS BLOB), count(*) FROM requests WHERE id BETWEEN ? AND ? AND +batch_seq = ?"  # `+`: by id, not by index
    " AND state IN ('succeeded', 'errored', 'canceled', 'expired')"
)


# Result writes bind up to 2000 rows a statement (6002 parameters; SQLite allows 32766), and pad the
# last piece of a group with rows that match no request (id 0) up to one of these sizes: few statements
# (each one more wait for the GIL after SQLite's work) and only these few ever prepared and cached.
_OUTCOME_STATEMENT_ROWS = (2000, 700, 250, 80, 25, 8)
_NO_REQUEST = (0, None, 0)
_OUTCOME_VALUES = attrgetter("request_id", "line", "attempt")
_LINE = attrgetter("line")


@functools.cache
def _outcomes_sql(rows: int, *, returning: bool) -> str:
    # Leading with UPDATE (not WITH) keeps it DML to the sqlite3 module: it opens the transaction.
    return (
        "UPDATE requests SET state = ?, result = done.column2, lease_owner = NULL, lease_expires_at = NULL "
        "FROM (VALUES " + ",".join(["(?, ?, ?)"] * rows) + ") AS done WHERE requests.id = done.column1 "
        "AND requests.state = 'running' AND requests.lease_owner = ? AND requests.attempt = done.column3"
        + (" RETURNING requests.id" if returning else "")
    )


def _outcome_pieces(state: str, group: Sequence[Completion], owner: str) -> Iterator[tuple[int, int, list[Any]]]:
    """(rows, statement size, parameters) of each statement writing `group`."""
    start = 0
    while start < len(group):
        window = group[start : start + _OUTCOME_STATEMENT_ROWS[0]]
        lines = list(map(_LINE, window))
        some = window[: _rows_within(_lengths(lines))]
        size = next(size for size in reversed(_OUTCOME_STATEMENT_ROWS) if size >= len(some))
        start += len(some)
        rows = chain.from_iterable(map(_OUTCOME_VALUES, some))
        yield len(some), size, [state, *rows, *_NO_REQUEST * (size - len(some)), owner]


def _lengths(lines: Sequence[Any]) -> list[int]:
    """The lengths of result lines (bytes, or None)."""
    try:
        return list(map(len, lines))
    except TypeError:  # a canceled request has no line
        return [0 if line is None else len(line) for line in lines]


def _rows_within(lengths: Sequence[int]) -> int:
    """How many of the first values of `lengths` bytes (at least one) add up to `_STATEMENT_BYTES` or less."""
    if sum(lengths) <= _STATEMENT_BYTES:
        return len(lengths)
    return max(1, bisect_right(list(accumulate(lengths)), _STATEMENT_BYTES))


class SQLiteStore(Store):
    # The data dir is locked to one server (see the CLI), so nothing else holds leases here.
    single_process: ClassVar[bool] = True
    # A streamed insert runs on its own thread and connection, so SQLite stores rows (GIL released)
    # while the event loop receives and decodes the rest of the body. Its transaction holds the one
    # write lock meanwhile, and every other write waits for it: one at a time, and never for long (a
    # body that pauses is inserted whole once it has arrived, as a slow one is).
    streamed_inserts: ClassVar[int] = 1
    streamed_insert_hold_seconds: ClassVar[float] = 3.0
    streamed_insert_pause_seconds: ClassVar[float | None] = 0.5
    # Its transaction can read its own rows back before rolling back, so the create keeps no request it
    # has handed over: a big create's memory is the pieces on their way, not the whole body.
    streamed_insert_reads_back: ClassVar[bool] = True

    def __init__(self, url: str) -> None:
        # One writer thread: SQLite serialises writers anyway, and the engine's lease-then-complete
        # order relies on it.
        super().__init__(connect(url))
        self._checkpointer = ThreadPoolExecutor(1, thread_name_prefix="store-checkpoint")
        self._writes = 0  # write transactions begun, ever
        self._writes_seen = -1  # ... when `checkpoint` was last called
        self._checkpointed_at = float("-inf")

    def close(self) -> None:
        self._checkpointer.shutdown(wait=True)
        super().close()

    async def checkpoint(self) -> None:
        """Copy committed WAL pages into the database file; while writes keep coming, only every few
        seconds. Each checkpoint copies every page written since the last one, and the queue's pages are
        written again and again while a batch runs (leased, then its results): copied once a second,
        most copies are wasted, and they take a core from the engine. Idle, it catches up at once."""
        writes, now = self._writes, time.monotonic()
        busy, self._writes_seen = writes != self._writes_seen, writes
        if busy and now - self._checkpointed_at < _CHECKPOINT_WHILE_WRITING_SECONDS:
            return
        self._checkpointed_at = now
        await asyncio.get_running_loop().run_in_executor(self._checkpointer, self._checkpoint)

    async def release_memory(self) -> None:
        # Each pooled connection keeps its page cache (up to _CACHE_KIB) and its cached statements keep
        # the values last bound to them (up to _STATEMENT_BYTES each): closing the idle connections frees
        # both, and the next call opens a fresh one. Beside the checkpoints: the last connection to close
        # checkpoints the WAL.
        await asyncio.get_running_loop().run_in_executor(self._checkpointer, self.engine.dispose)

    def _checkpoint(self) -> None:
        """Copy committed WAL pages into the database file, beside writers, never blocking them."""
        with self.engine.connect() as conn:
            conn.exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)").all()

    def _begin_write(self, conn: Connection) -> None:
        # Take the write lock before the first read, so that what a transaction reads (a queue total,
        # the rows it then updates) cannot change under it; with one writer thread this never waits.
        self._driver_cursor(conn).execute("BEGIN IMMEDIATE")
        self._writes += 1

    def _insert_requests(self, conn: Connection, seq: int, items: Sequence[tuple[str, Any]]) -> tuple[int, int]:
        cursor = self._driver_cursor(conn)
        first_id = _next_request_id(cursor)
        # A big insert gains little from a bigger page cache but its memory (see _INSERT_CACHE_KIB).
        small_cache = len(items) >= _SMALL_CACHE_FROM_ROWS
        with page_cache(cursor, kib=_INSERT_CACHE_KIB) if small_cache else contextlib.nullcontext():
            _insert_rows(cursor, seq, items)
        return first_id, _next_request_id(cursor) - 1

    def _insert_request_runs(
        self, conn: Connection, seq: int, runs: Iterable[Sequence[tuple[str, Any]]]
    ) -> tuple[int, int | None, int | None]:
        cursor = self._driver_cursor(conn)
        first_id = _next_request_id(cursor)
        # Rows short of a full statement wait for the next run: full statements while runs come, and the
        # few smaller ones only for the last rows.
        waiting: Sequence[tuple[str, Any]] = ()
        try:
            for items in runs:
                run = [*waiting, *items] if waiting else items
                waiting = run[_insert_rows(cursor, seq, run, full_only=True) :]
        except StreamedInsertUndoneError:
            _insert_rows(cursor, seq, waiting)  # so that what was taken is all read back
            raise
        _insert_rows(cursor, seq, waiting)
        count = _next_request_id(cursor) - first_id  # the write lock held: the ids are exactly these
        return (count, first_id, first_id + count - 1) if count else (0, None, None)

    def _insert_streamed_requests(
        self, conn: Connection, seq: int, feed: ItemFeed, deadline: float, max_requests: int
    ) -> tuple[int, int]:
        cursor = self._driver_cursor(conn)
        try:
            with page_cache(cursor, kib=_INSERT_CACHE_KIB):
                _, first_id, last_id = self._insert_request_runs(conn, seq, feed.runs(deadline, max_requests))
        except StreamedInsertUndoneError as exc:
            # Rolled back next: hand back what was taken, which the create no longer holds.
            cursor.execute("SELECT custom_id, params FROM requests WHERE batch_seq = ? ORDER BY id", (seq,))
            exc.taken = cursor.fetchall()
            raise
        assert first_id is not None and last_id is not None  # `runs` gives at least one request
        return first_id, last_id

    @writes
    def lease_requests(self, quotas: Sequence[tuple[int, int]], *, owner: str, lease_until: int) -> list[LeasedRequest]:
        leased: list[LeasedRequest] = []
        with self.engine.begin() as conn:
            self._begin_write(conn)  # the read below and the update after it see the same rows
            cursor = self._driver_cursor(conn)
            for seq, n in quotas:
                cursor.execute(_LEASABLE_SQL, (seq, seq, n))
                ids, attempts, custom_ids, params = cursor.fetchone()
                if ids is None:
                    continue
                request_ids = list(map(int, ids.split(b",")))
                leased += map(
                    LeasedRequest,
                    request_ids,
                    repeat(seq),
                    custom_ids.split("\x1f"),
                    params.split(b"\x1e"),
                    map(int, attempts.split(b",")),
                )
                cursor.execute(_LEASE_SQL, (owner, lease_until, min(request_ids), max(request_ids), seq))
                assert cursor.rowcount == len(request_ids), "the rows leased are the rows read"
        return leased

    def _write_outcomes(self, conn: Connection, state: str, group: Sequence[Completion], owner: str) -> list[int]:
        cursor = self._driver_cursor(conn)
        # Nearly always every row still holds its lease, and then the row counts alone say which were
        # written: RETURNING would hand back each id by its own step, and each step releases the GIL
        # and may wait a switch interval to get it back while the event loop is busy. Only when some
        # lease was lost are the statements undone and run again, returning the ids.
        cursor.execute("SAVEPOINT outcomes")
        for rows, size, values in _outcome_pieces(state, group, owner):
            cursor.execute(_outcomes_sql(size, returning=False), values)
            if cursor.rowcount != rows:  # a row is updated at most once: all of them, or not
                break
        else:
            cursor.execute("RELEASE outcomes")
            return [done.request_id for done in group]
        cursor.execute("ROLLBACK TO outcomes")
        cursor.execute("RELEASE outcomes")
        written: list[int] = []
        for _, size, values in _outcome_pieces(state, group, owner):
            cursor.execute(_outcomes_sql(size, returning=True), values)
            written.extend(row[0] for row in cursor.fetchall())
        return written

    def _result_chunk(self, seq: int, first_id: int, last_id: int) -> tuple[bytes, int]:
        # SQLite builds the chunk itself: one range scan of the table in id order, the lines joined in
        # C (canceled/expired lines made from the custom_id, which needs no escaping) and handed over as
        # one bytes object, with the GIL released meanwhile — 2-3x a row-by-row fetch.
        with self.engine.connect() as conn:
            cursor = self._driver_cursor(conn)
            cursor.execute(_RESULT_CHUNK_SQL, (first_id, last_id, seq))
            chunk, count = cursor.fetchone()
            return chunk or b"", count


@contextlib.contextmanager
def page_cache(cursor: Any, *, kib: int) -> Iterator[None]:
    """SQLite's page cache of `kib` KiB on this cursor's connection for the block, then the one it had."""
    cursor.execute("PRAGMA cache_size")
    (size,) = cursor.fetchone()
    cursor.execute(f"PRAGMA cache_size=-{kib}")
    try:
        yield
    finally:
        cursor.execute(f"PRAGMA cache_size={int(size)}")


def _next_request_id(cursor: Any) -> int:
    # Ids only grow, and a write transaction holds SQLite's one write lock: a batch inserted in it has
    # exactly the ids after the largest before the insert, up to the largest after it.
    cursor.execute("SELECT max(id) FROM requests")
    return int(cursor.fetchone()[0] or 0) + 1


def _insert_rows(cursor: Any, seq: int, items: Sequence[tuple[str, Any]], *, full_only: bool = False) -> int:
    """Insert `items` as pending requests of batch `seq`, in as few statements as the sizes and
    `_STATEMENT_BYTES` allow; return how many were inserted: all of them, or with `full_only` only those
    up to where a statement would be short of both limits (the rest wait for more)."""
    most = _INSERT_STATEMENT_ROWS[0]
    position = 0
    while position < len(items):
        fitting = _rows_within(list(map(len, map(_PARAMS, items[position : position + most]))))
        if full_only and fitting < most and position + fitting == len(items):
            break
        size = next(size for size in _INSERT_STATEMENT_ROWS if size <= fitting)
        rows = items[position : position + size]
        cursor.execute(_insert_sql(size), [seq, *chain.from_iterable(rows)])
        position += size
    return position


def connect(url: str) -> Engine:
    """An engine whose connections are tuned for one writer and many readers."""
    # LIFO: the most recently used connection (and its warm page cache) serves the next call.
    engine = create_engine(url, pool_size=_POOL_SIZE, max_overflow=4, pool_use_lifo=True)
    event.listen(engine, "connect", _tune_sqlite)
    return engine


def _tune_sqlite(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # Only takes effect when the file is created: 8 KiB pages hold three 2.5 KiB requests where 4 KiB
    # pages hold one, so a big batch writes a third less.
    cursor.execute("PRAGMA page_size=8192")
    # WAL: readers never block the writer; NORMAL sync is durable across process crashes in WAL mode.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    # Checkpoints run in the background (Store.checkpoint, from the sweeper), not inside whichever
    # commit crosses the threshold: a 250 MB create would otherwise copy its whole WAL before answering.
    cursor.execute("PRAGMA wal_autocheckpoint=0")
    cursor.execute("PRAGMA journal_size_limit=67108864")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute(f"PRAGMA cache_size=-{_CACHE_KIB}")
    cursor.close()
