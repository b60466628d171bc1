"""The store: every database operation of a batch's life, one named method each.

Methods run on threads (the drivers block): writes on a dedicated writer pool (one thread on SQLite,
where writers serialise anyway), reads on a reader pool. Each public method is awaitable.
"""

from __future__ import annotations

import asyncio
import functools
from collections import defaultdict, deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from itertools import chain, islice
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar

from alembic import command
from alembic.config import Config
from sqlalchemy import ColumnElement, Connection, func, insert, select, update

from overnight.store.database import connect, is_supported
from overnight.store.records import (
    CANCELED,
    CANCELING,
    ENDED,
    ERRORED,
    EXPIRED,
    IN_PROGRESS,
    PENDING,
    RUNNING,
    SUCCEEDED,
    ActiveBatches,
    BatchRecord,
    Completion,
    LeasedRequest,
)
from overnight.store.tables import TO_ARCHIVE, UNFINISHED, batches, requests

P = ParamSpec("P")
T = TypeVar("T")

_Blocking = Callable[Concatenate["Store", P], T]
_Awaitable = Callable[Concatenate["Store", P], Awaitable[T]]

# Writes go as one statement per few hundred rows, never one per row: each statement releases the GIL
# once while SQLite works, where executemany releases and retakes it for every row — and with the event
# loop busy, retaking it can wait a whole switch interval (5 ms) each time.
_ROWS_PER_STATEMENT = 500
_RESULT_CHUNK_IDS = 5000
_READS_AHEAD = 2
# The next n pending requests of an in-progress batch, in id order, as one value: records separated by
# 0x1e, each `id,attempt,custom_id` 0x1f params. Neither byte can occur in them: custom_ids are
# [A-Za-z0-9_-], and params were decoded as JSON at create, which admits no raw control characters.
_LEASABLE = (
    "SELECT id FROM requests WHERE batch_seq = ? AND state = 'pending'"
    " AND EXISTS (SELECT 1 FROM batches WHERE seq = ? AND status = 'in_progress') ORDER BY id LIMIT ?"
)
_LEASABLE_SQL = (
    "SELECT CAST(group_concat(id || ',' || attempt || ',' || custom_id || x'1f' || CAST(params AS TEXT), x'1e')"
    f" AS BLOB) FROM requests WHERE id IN ({_LEASABLE})"
)
_LEASE_SQL = (
    "UPDATE requests SET state = 'running', lease_owner = ?, lease_expires_at = ?, attempt = attempt + 1 "
    f"WHERE id IN ({_LEASABLE})"
)
_RESULT_CHUNK_SQL = (
    "SELECT CAST(group_concat(CASE WHEN result IS NOT NULL THEN result ELSE "
    """'{"custom_id":"' || custom_id || '","result":{"type":"' || state || '"}}' || char(10) END, '') """
    "AS BLOB), count(*) FROM requests WHERE id BETWEEN ? AND ? AND +batch_seq = ?"  # `+`: by id, not by index
    " AND state IN ('succeeded', 'errored', 'canceled', 'expired')"
)
_MIGRATIONS = Path(__file__).parent / "migrations"


def _on_thread(pool: str) -> Callable[[_Blocking[P, T]], _Awaitable[P, T]]:
    """Make a blocking store method awaitable, running it on the store's `pool` executor."""

    def decorate(method: _Blocking[P, T]) -> _Awaitable[P, T]:
        @functools.wraps(method)
        async def run(self: Store, *args: P.args, **kwargs: P.kwargs) -> T:
            call = functools.partial(method, self, *args, **kwargs)
            return await asyncio.get_running_loop().run_in_executor(getattr(self, pool), call)

        return run

    return decorate


_writes = _on_thread("_writer")
_reads = _on_thread("_reader")


class UnknownCursorError(LookupError):
    """A pagination cursor names no batch of this workspace."""


class ResultsChangedError(RuntimeError):
    """A batch's results went away (deleted, archived) while they were being streamed."""


class UnsupportedDatabaseError(ValueError):
    """The database URL names a database this version cannot store batches in."""


class Store:
    def __init__(self, url: str) -> None:
        if not is_supported(url):
            raise UnsupportedDatabaseError(f"only SQLite databases are supported for now, not {url.split(':')[0]}")
        self.engine = connect(url)
        # One writer thread: SQLite serialises writers anyway, and the engine's lease-then-complete
        # order relies on it.
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="store-write")
        self._reader = ThreadPoolExecutor(4, thread_name_prefix="store-read")
        self._checkpointer = ThreadPoolExecutor(1, thread_name_prefix="store-checkpoint")

    def migrate(self) -> None:
        """Bring the schema to the newest migration (idempotent)."""
        config = Config()
        config.set_main_option("script_location", str(_MIGRATIONS))
        with self.engine.begin() as connection:
            config.attributes["connection"] = connection
            command.upgrade(config, "head")

    def close(self) -> None:
        self._writer.shutdown(wait=True)
        self._reader.shutdown(wait=True)
        self._checkpointer.shutdown(wait=True)
        self.engine.dispose()

    @_on_thread("_checkpointer")
    def checkpoint(self) -> None:
        """Copy committed WAL pages into the database file, beside writers, never blocking them."""
        with self.engine.connect() as conn:
            conn.exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)").all()

    # --- batches: the API's operations -------------------------------------------------------

    @_writes
    def insert_batch(
        self,
        *,
        batch_id: str,
        workspace: str,
        created_at: int,
        expires_at: int,
        items: Sequence[tuple[str, Any]],
        betas: Sequence[str] = (),
    ) -> BatchRecord:
        """Store a batch and all its requests in one transaction: all of it, or nothing."""
        with self.engine.begin() as conn:
            seq = conn.execute(
                insert(batches)
                .values(
                    id=batch_id,
                    workspace=workspace,
                    status=IN_PROGRESS,
                    total=len(items),
                    processing=len(items),
                    created_at=created_at,
                    expires_at=expires_at,
                    betas=",".join(betas) or None,
                )
                .returning(batches.c.seq)
            ).scalar_one()
            cursor = _driver_cursor(conn)
            # Ids only grow, so the batch's requests lie between the largest id before the insert and
            # the largest after it (on SQLite, with one writer, they are exactly that run).
            cursor.execute("SELECT max(id) FROM requests")
            first_id = (cursor.fetchone()[0] or 0) + 1
            for start in range(0, len(items), _ROWS_PER_STATEMENT):
                rows = items[start : start + _ROWS_PER_STATEMENT]
                cursor.execute(
                    "INSERT INTO requests (batch_seq, custom_id, params, state, attempt) VALUES "
                    + ",".join([f"({seq}, ?, ?, 'pending', 0)"] * len(rows)),
                    list(chain.from_iterable(rows)),
                )
            cursor.execute("SELECT max(id) FROM requests")
            last_id = cursor.fetchone()[0]
            conn.execute(
                update(batches)
                .where(batches.c.seq == seq)
                .values(first_request_id=first_id, last_request_id=last_id)
            )
            return _one_batch(conn, seq)

    @_reads
    def get_batch(self, workspace: str, batch_id: str) -> BatchRecord | None:
        """The batch with this id in this workspace, or None."""
        with self.engine.connect() as conn:
            row = conn.execute(
                select(batches).where(batches.c.id == batch_id, batches.c.workspace == workspace)
            ).one_or_none()
        return None if row is None else BatchRecord(**row._mapping)

    @_reads
    def list_batches(
        self, workspace: str, *, limit: int, after_id: str | None, before_id: str | None
    ) -> tuple[list[BatchRecord], bool]:
        """One page, newest first, and whether more lie beyond it in the direction of travel.

        `after_id` pages towards older batches; `before_id` towards newer ones (the page adjacent to it);
        both together bound the page strictly between them.
        """
        with self.engine.connect() as conn:
            query = select(batches).where(batches.c.workspace == workspace)
            if after_id is not None:
                query = query.where(batches.c.seq < _cursor_seq(conn, workspace, after_id))
            if before_id is not None:
                query = query.where(batches.c.seq > _cursor_seq(conn, workspace, before_id))
                query = query.order_by(batches.c.seq.asc())
            else:
                query = query.order_by(batches.c.seq.desc())
            rows = conn.execute(query.limit(limit + 1)).all()
        page = [BatchRecord(**row._mapping) for row in rows[:limit]]
        if before_id is not None:
            page.reverse()
        return page, len(rows) > limit

    @_writes
    def cancel_batch(self, seq: int, now: int) -> BatchRecord | None:
        """Move an in-progress batch to canceling and its pending requests to canceled, atomically.

        Running requests are untouched: they finish with their real result. Returns None when the
        batch was no longer in progress (the caller re-reads it).
        """
        with self.engine.begin() as conn:
            moved = conn.execute(
                update(batches)
                .where(batches.c.seq == seq, batches.c.status == IN_PROGRESS)
                .values(status=CANCELING, cancel_initiated_at=now)
            ).rowcount
            if not moved:
                return None
            canceled = conn.execute(
                update(requests)
                .where(requests.c.batch_seq == seq, requests.c.state == PENDING)
                .values(state=CANCELED)
            ).rowcount
            _add_counts(conn, seq, {CANCELED: canceled})
            _end_if_done(conn, [seq], now)
            return _one_batch(conn, seq)

    @_writes
    def delete_batch(self, seq: int) -> bool:
        """Delete an ended batch and its results; False (and nothing deleted) if it has not ended."""
        with self.engine.begin() as conn:
            deleted = conn.execute(
                batches.delete().where(batches.c.seq == seq, batches.c.status == ENDED)
            ).rowcount
            if deleted:
                conn.execute(requests.delete().where(requests.c.batch_seq == seq))
            return bool(deleted)

    async def stream_results(self, batch: BatchRecord) -> AsyncIterator[bytes]:
        """Every result line of an ended batch, in chunks of a few thousand lines, in constant memory.

        Chunks are read on reader threads ahead of the one being sent. Raises `ResultsChangedError`
        after the last chunk if the lines sent do not number the batch's requests (it was deleted or
        archived meanwhile), so a client sees a broken download, never a silently short one.
        """
        first, last = batch.first_request_id, batch.last_request_id
        reads = (
            [
                functools.partial(self._result_chunk, batch.seq, low, min(low + _RESULT_CHUNK_IDS - 1, last))
                for low in range(first, last + 1, _RESULT_CHUNK_IDS)
            ]
            if first is not None and last is not None
            else []  # archived: no requests left
        )
        lines = 0
        async for chunk, count in self._read_ahead(reads):
            lines += count
            if chunk:  # an empty one would end a chunked HTTP body early
                yield chunk
        if lines != batch.total:
            raise ResultsChangedError(f"batch {batch.id}: {lines} result lines for {batch.total} requests")

    async def _read_ahead(self, reads: Sequence[Callable[[], T]]) -> AsyncIterator[T]:
        """Run independent reads on the reader pool, a few at once, yielding their results in order."""
        loop = asyncio.get_running_loop()
        pending: deque[asyncio.Future[T]] = deque()
        queued = iter(reads)
        try:
            for read in islice(queued, _READS_AHEAD):
                pending.append(loop.run_in_executor(self._reader, read))
            while pending:
                result = await pending.popleft()
                for read in islice(queued, 1):
                    pending.append(loop.run_in_executor(self._reader, read))
                yield result
        finally:
            for future in pending:
                future.cancel()

    def _result_chunk(self, seq: int, first_id: int, last_id: int) -> tuple[bytes, int]:
        """The result lines of the batch's requests with ids in [first_id, last_id], and how many."""
        # SQLite builds the chunk itself: one range scan of the table in id order, the lines joined in
        # C (canceled/expired lines made from the custom_id, which needs no escaping) and handed over as
        # one bytes object, with the GIL released meanwhile — 2-3x a row-by-row fetch.
        with self.engine.connect() as conn:
            cursor = _driver_cursor(conn)
            cursor.execute(_RESULT_CHUNK_SQL, (first_id, last_id, seq))
            chunk, count = cursor.fetchone()
            return chunk or b"", count

    @_reads
    def queued_requests(self, workspace: str) -> int:
        """Requests of this workspace not yet finished (the queue a per-workspace limit bounds)."""
        with self.engine.connect() as conn:
            return int(
                conn.execute(
                    select(func.coalesce(func.sum(batches.c.processing), 0)).where(
                        batches.c.workspace == workspace, UNFINISHED
                    )
                ).scalar_one()
            )

    # --- requests: the engine's operations ---------------------------------------------------

    @_reads
    def active_batches(self) -> ActiveBatches:
        """(seq, status) of every batch that has not ended, oldest first, and the newest seq read before.

        Any batch missing from the list with a seq up to `newest_seq` had ended when it was read; a
        larger seq is a batch created since.
        """
        with self.engine.connect() as conn:
            # The watermark first: a batch created between the two reads is then newer than it.
            newest = conn.execute(select(func.coalesce(func.max(batches.c.seq), 0))).scalar_one()
            rows = conn.execute(
                select(batches.c.seq, batches.c.status, batches.c.betas)
                .where(UNFINISHED)
                .order_by(batches.c.seq)
            ).all()
        return ActiveBatches(
            [(seq, status) for seq, status, _ in rows],
            int(newest),
            {seq: betas.split(",") for seq, _, betas in rows if betas},
        )

    @_writes
    def lease_requests(
        self, quotas: Sequence[tuple[int, int]], *, owner: str, lease_until: int
    ) -> list[LeasedRequest]:
        """Lease up to n pending requests from each (batch, n), oldest first, in one transaction.

        Only requests of in-progress batches are leased; each lease bumps `attempt`, which is part of
        the lease token checked when the result is written.
        """
        leased: list[LeasedRequest] = []
        with self.engine.begin() as conn:
            cursor = _driver_cursor(conn)
            cursor.execute("BEGIN IMMEDIATE")  # the read below and the update after it see the same rows
            for seq, n in quotas:
                cursor.execute(_LEASABLE_SQL, (seq, seq, n))
                (packed,) = cursor.fetchone()
                if packed is None:
                    continue
                for record in packed.split(b"\x1e"):
                    head, params = record.split(b"\x1f", 1)
                    request_id, attempt, custom_id = head.split(b",", 2)
                    leased.append(LeasedRequest(int(request_id), seq, custom_id.decode(), params, int(attempt) + 1))
                cursor.execute(_LEASE_SQL, (owner, lease_until, seq, seq, n))
        return leased

    @_writes
    def renew_leases(self, request_ids: Iterable[int], *, owner: str, lease_until: int) -> None:
        """Extend the leases this owner still holds on these requests."""
        ids = list(request_ids)
        with self.engine.begin() as conn:
            cursor = _driver_cursor(conn)
            for start in range(0, len(ids), _ROWS_PER_STATEMENT):
                some = ids[start : start + _ROWS_PER_STATEMENT]
                cursor.execute(
                    f"UPDATE requests SET lease_expires_at = ? WHERE id IN ({','.join('?' * len(some))}) "
                    "AND lease_owner = ? AND state = 'running'",
                    [lease_until, *some, owner],
                )

    @_writes
    def complete_requests(self, completions: Sequence[Completion], *, owner: str, now: int) -> None:
        """Write terminal outcomes and move the counters with them, in one transaction.

        Each write is a compare-and-set on (running, this owner, this attempt): a late or duplicate
        completion changes nothing, so a request never gets two results. Batches left with nothing
        to do end here, exactly once.
        """
        if not completions:
            return
        groups: dict[tuple[int, str], list[Completion]] = defaultdict(list)
        for done in completions:
            groups[(done.batch_seq, done.state)].append(done)
        counts: dict[int, dict[str, int]] = defaultdict(dict)
        with self.engine.begin() as conn:
            cursor = _driver_cursor(conn)
            for (seq, state), group in groups.items():
                written = 0
                for start in range(0, len(group), _ROWS_PER_STATEMENT):
                    some = group[start : start + _ROWS_PER_STATEMENT]
                    # Leading with UPDATE (not WITH) keeps it DML to the sqlite3 module: it opens the
                    # transaction and counts the rows.
                    cursor.execute(
                        "UPDATE requests SET state = ?, result = done.column2, lease_owner = NULL, "
                        "lease_expires_at = NULL FROM (VALUES " + ",".join(["(?, ?, ?)"] * len(some)) + ") AS done "
                        "WHERE requests.id = done.column1 AND requests.state = 'running' "
                        "AND requests.lease_owner = ? AND requests.attempt = done.column3",
                        [state, *chain.from_iterable((d.request_id, d.line, d.attempt) for d in some), owner],
                    )
                    written += cursor.rowcount
                counts[seq][state] = written
            for seq, by_state in counts.items():
                _add_counts(conn, seq, by_state)
            _end_if_done(conn, list(counts), now)

    @_writes
    def release_requests(self, request_ids: Iterable[int], *, owner: str, started: bool, now: int) -> int:
        """Hand leased requests back (shutdown): pending again, or canceled if their batch is canceling.

        A request that never started gets its attempt back.
        """
        ids = list(request_ids)
        if not ids:
            return 0
        mine = requests.c.id.in_(ids) & (requests.c.lease_owner == owner)
        with self.engine.begin() as conn:
            return _hand_back(conn, mine, attempt_delta=0 if started else -1, now=now)

    @_writes
    def recover_expired_leases(self, batch_seqs: Sequence[int], now: int, *, every_lease: bool = False) -> int:
        """Hand back requests whose lease lapsed (their worker died or stalled), as `release_requests`.

        `every_lease`: all running requests, lapsed or not (at start, when no other worker can exist).
        """
        if not batch_seqs:
            return 0
        lapsed = requests.c.batch_seq.in_(list(batch_seqs))
        if not every_lease:
            lapsed &= requests.c.lease_expires_at < now
        with self.engine.begin() as conn:
            return _hand_back(conn, lapsed, attempt_delta=0, now=now)

    @_writes
    def expire_batches(self, now: int) -> list[str]:
        """End every unfinished batch past `expires_at`: its unfinished requests become expired."""
        with self.engine.begin() as conn:
            due = conn.execute(
                select(batches.c.seq, batches.c.id).where(
                    UNFINISHED, batches.c.expires_at <= now
                )
            ).all()
            for seq, _ in due:
                expired = conn.execute(
                    update(requests)
                    .where(requests.c.batch_seq == seq, requests.c.state.in_((PENDING, RUNNING)))
                    .values(state=EXPIRED, lease_owner=None, lease_expires_at=None)
                ).rowcount
                _add_counts(conn, seq, {EXPIRED: expired})
                conn.execute(
                    update(batches).where(batches.c.seq == seq).values(status=ENDED, ended_at=now)
                )
        return [batch_id for _, batch_id in due]

    @_writes
    def archive_batches(self, now: int, *, retention_micros: int) -> list[str]:
        """Archive ended batches older than the retention window: their results are deleted."""
        with self.engine.begin() as conn:
            due = conn.execute(
                select(batches.c.seq, batches.c.id).where(
                    TO_ARCHIVE,
                    batches.c.created_at <= now - retention_micros,
                )
            ).all()
            for seq, _ in due:
                conn.execute(update(batches).where(batches.c.seq == seq).values(archived_at=now))
                conn.execute(requests.delete().where(requests.c.batch_seq == seq))
        return [batch_id for _, batch_id in due]


def _driver_cursor(conn: Connection) -> Any:
    """A DBAPI cursor inside `conn`'s transaction, for the hot statements: tuples straight to the driver,
    since SQLAlchemy's per-row parameter and result handling would cost more than the database's work."""
    return conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]


def _one_batch(conn: Connection, seq: int) -> BatchRecord:
    return BatchRecord(**conn.execute(select(batches).where(batches.c.seq == seq)).one()._mapping)


def _cursor_seq(conn: Connection, workspace: str, batch_id: str) -> int:
    seq = conn.execute(
        select(batches.c.seq).where(batches.c.id == batch_id, batches.c.workspace == workspace)
    ).scalar_one_or_none()
    if seq is None:
        raise UnknownCursorError(batch_id)
    return int(seq)




def _add_counts(conn: Connection, seq: int, by_state: dict[str, int]) -> None:
    """Move `processing` into the terminal counters in the same transaction as the state change."""
    moved = sum(by_state.values())
    if not moved:
        return
    # One fixed statement (SQLite caches it prepared): this runs with every group of results written.
    _driver_cursor(conn).execute(
        "UPDATE batches SET processing = processing - ?, succeeded = succeeded + ?, errored = errored + ?, "
        "canceled = canceled + ?, expired = expired + ? WHERE seq = ?",
        (moved, *(by_state.get(state, 0) for state in (SUCCEEDED, ERRORED, CANCELED, EXPIRED)), seq),
    )


def _hand_back(conn: Connection, which: ColumnElement[bool], *, attempt_delta: int, now: int) -> int:
    """Free the running requests `which` selects: to canceled in canceling batches (which lease no
    more, so nothing would ever run them), else to pending. Returns how many were freed."""
    running = (requests.c.state == RUNNING) & which
    in_canceling = requests.c.batch_seq.in_(select(batches.c.seq).where(batches.c.status == CANCELING))
    per_batch = conn.execute(
        select(requests.c.batch_seq, func.count()).where(running, in_canceling).group_by(requests.c.batch_seq)
    ).all()
    lease_free = {"lease_owner": None, "lease_expires_at": None}
    if per_batch:
        conn.execute(update(requests).where(running, in_canceling).values(state=CANCELED, **lease_free))
        for seq, canceled in per_batch:
            _add_counts(conn, seq, {CANCELED: canceled})
        _end_if_done(conn, [seq for seq, _ in per_batch], now)
    freed = conn.execute(
        update(requests)
        .where(running)
        .values(state=PENDING, attempt=requests.c.attempt + attempt_delta, **lease_free)
    ).rowcount
    return freed + sum(canceled for _, canceled in per_batch)


def _end_if_done(conn: Connection, seqs: list[int], now: int) -> None:
    """End, exactly once, each of these batches that has nothing left to process."""
    if not seqs:
        return
    _driver_cursor(conn).execute(
        f"UPDATE batches SET status = 'ended', ended_at = ? WHERE seq IN ({','.join('?' * len(seqs))}) "
        "AND processing = 0 AND status != 'ended'",
        (now, *seqs),
    )
