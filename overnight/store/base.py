"""The store's interface: every database operation of a batch's life, one named method each.

The service, the engine and the sweepers see only this class. What is portable SQL (SQLAlchemy Core,
valid on SQLite and PostgreSQL alike) is written here once; the hot statements — ingest, leasing,
completion, result chunks — are each database's own, in `sqlite.py` and `postgres.py`.

Every state change that could race with another node is one guarded statement (a compare-and-set on
state and lease owner, `status != 'ended'`, `archived_at IS NULL`), and every transaction that
touches both tables changes `requests` rows before the `batches` row, so concurrent transactions on
PostgreSQL wait for each other instead of deadlocking.

Methods run on threads (the drivers block): writes on a writer pool, reads on a reader pool. Each
public method is awaitable.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections import Counter, defaultdict, deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from itertools import groupby, islice
from operator import attrgetter
from pathlib import Path
from typing import Any, ClassVar, Concatenate, ParamSpec, TypeVar

from alembic import command
from alembic.config import Config
from sqlalchemy import ColumnElement, Connection, Engine, and_, exists, func, select, update
from sqlalchemy import exc as sa_exc

from overnight.store.feed import ItemFeed, StreamedInsertUndoneError
from overnight.store.records import (
    ANTHROPIC,
    CANCELED,
    CANCELING,
    DELIVERED,
    DELIVERY_FAILED,
    DELIVERY_PENDING,
    ENDED,
    ERRORED,
    EXPIRED,
    IN_PROGRESS,
    PENDING,
    RUNNING,
    SUCCEEDED,
    ActiveBatches,
    BatchRecord,
    Completed,
    Completion,
    LeasedDelivery,
    LeasedRequest,
    NodeShare,
    Usage,
    WebhookEvent,
)
from overnight.store.tables import (
    DELIVERY_DUE,
    TO_ARCHIVE,
    UNFINISHED,
    USAGE_COLUMNS,
    batches,
    nodes,
    requests,
    webhook_deliveries,
)

logger = logging.getLogger(__name__)

P = ParamSpec("P")
T = TypeVar("T")
S = TypeVar("S", bound="Store")

MIGRATIONS = Path(__file__).parent / "migrations"
_RESULT_CHUNK_IDS = 5000
# ... or fewer where the batch's lines are long: a chunk of about this many bytes. A few chunks are in
# memory at once (read ahead, being sent), so 5,000 lines of 60 KB would hold the whole download.
_RESULT_CHUNK_BYTES = 4 << 20
_READS_AHEAD = 2
_SEQ = attrgetter("batch_seq")
_SEQ_AND_STATE = attrgetter("batch_seq", "state")
_USAGE = attrgetter("usage")
_LINE = attrgetter("line")
_RETRIES = 4  # attempts of a transaction that lost a deadlock or serialization race


class UnknownCursorError(LookupError):
    """A pagination cursor names no batch of this workspace."""


class ResultsChangedError(RuntimeError):
    """A batch's results went away (deleted, archived) while they were being streamed."""


class UnsupportedDatabaseError(ValueError):
    """The database URL names a database this version cannot store batches in."""


class StoreUnavailableError(RuntimeError):
    """The database could not be reached or is too busy right now (connection lost, restarting,
    locked); the same call may succeed in a moment."""


class QueueFullError(RuntimeError):
    """A new batch would take the workspace's unfinished requests past its limit."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"queue limit {limit}")
        self.limit = limit


def result_chunk_ids(lines: int, line_bytes: int) -> int:
    """How many request ids a chunk of a batch's result lines spans: `_RESULT_CHUNK_IDS`, or fewer when
    its `lines` stored lines took `line_bytes` in all and so average more than `_RESULT_CHUNK_BYTES`
    over that many (lines that never ran, canceled or expired, are short)."""
    if lines <= 0 or line_bytes <= 0:
        return _RESULT_CHUNK_IDS
    return max(1, min(_RESULT_CHUNK_IDS, _RESULT_CHUNK_BYTES * lines // line_bytes))


def _guarded(store: Store, name: str, call: Callable[[], T]) -> T:
    """Run one blocking transaction: again when it lost a race the database resolves by aborting one
    side (a deadlock, a serialization failure); a lost or refused connection becomes
    `StoreUnavailableError`."""
    for attempt in range(1, _RETRIES + 1):
        try:
            return call()
        except Exception as exc:
            if store.is_race_lost(exc) and attempt < _RETRIES:
                logger.debug("%s lost a race (%s); retrying", name, exc)
                continue
            if store.is_unavailable(exc):
                raise StoreUnavailableError(f"{name}: {exc}") from exc
            raise
    raise AssertionError("unreachable")


def _on_thread(pool: str) -> Callable[[Callable[Concatenate[S, P], T]], Callable[Concatenate[S, P], Awaitable[T]]]:
    """Make a blocking store method awaitable, running it `_guarded` on the store's `pool` executor."""

    def decorate(method: Callable[Concatenate[S, P], T]) -> Callable[Concatenate[S, P], Awaitable[T]]:
        @functools.wraps(method)
        async def run(self: S, *args: P.args, **kwargs: P.kwargs) -> T:
            call = functools.partial(_guarded, self, method.__name__, functools.partial(method, self, *args, **kwargs))
            return await asyncio.get_running_loop().run_in_executor(getattr(self, pool), call)

        return run

    return decorate


writes = _on_thread("_writer")
reads = _on_thread("_reader")


class Store:
    """One database. Use `open_store(url)` to get the implementation for a URL."""

    single_process: ClassVar[bool] = False
    """Whether only one process can use this database (then every running request at start-up was
    orphaned by a crash and can be handed back at once)."""

    _writer_threads: ClassVar[int] = 1

    streamed_inserts: ClassVar[int] = 0
    """How many `insert_streamed_batch` calls may run at once; 0: this store has none (it inserts a
    batch once its body has arrived whole)."""

    streamed_insert_hold_seconds: ClassVar[float] = 10.0
    """How long a streamed insert's transaction may wait for its body before it rolls back."""

    streamed_insert_pause_seconds: ClassVar[float | None] = None
    """How long it may wait for each next run of requests (None: only the hold applies)."""

    streamed_insert_reads_back: ClassVar[bool] = False
    """Whether a streamed insert that is undone hands back the requests it had taken
    (`StreamedInsertUndoneError.taken`): then its caller need not keep them until the commit."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._writer = ThreadPoolExecutor(self._writer_threads, thread_name_prefix="store-write")
        self._reader = ThreadPoolExecutor(4, thread_name_prefix="store-read")
        # Threads of their own: a streamed insert waits for its body, and must not hold up the writer's
        # queue (on SQLite its transaction holds the write lock all the same, hence its short hold).
        self._streamer = (
            ThreadPoolExecutor(self.streamed_inserts, thread_name_prefix="store-stream")
            if self.streamed_inserts
            else None
        )
        self._streaming = 0  # streamed inserts under way (counted on the event loop)
        self.on_batch_ended: Callable[[BatchRecord], WebhookEvent | None] | None = None
        """Called in the transaction that ends a batch (on a store thread): the webhook event to queue
        with it, if the batch's workspace has a webhook. None: no events at all."""

    # --- life cycle ---------------------------------------------------------------------------

    def migrate(self) -> None:
        """Bring the schema to the newest migration (idempotent; safe with several nodes at once)."""
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))
        with self.engine.begin() as connection:
            self._lock_for_migration(connection)
            config.attributes["connection"] = connection
            command.upgrade(config, "head")

    def _lock_for_migration(self, conn: Connection) -> None:
        """Hold off other nodes migrating the same database until this transaction ends."""

    async def run_write(self, call: Callable[[], T]) -> T:
        """Run `call`, a blocking write transaction of the caller's own, as the store's writes run: on the
        writer thread, again after a lost race, a lost connection raised as `StoreUnavailableError`."""
        guarded = functools.partial(_guarded, self, getattr(call, "__qualname__", "write"), call)
        return await asyncio.get_running_loop().run_in_executor(self._writer, guarded)

    async def run_read(self, call: Callable[[], T]) -> T:
        """Run `call`, a blocking read, as the store's reads run (see `run_write`)."""
        guarded = functools.partial(_guarded, self, getattr(call, "__qualname__", "read"), call)
        return await asyncio.get_running_loop().run_in_executor(self._reader, guarded)

    def close(self) -> None:
        if self._streamer is not None:
            self._streamer.shutdown(wait=True)
        self._writer.shutdown(wait=True)
        self._reader.shutdown(wait=True)
        self.engine.dispose()

    async def checkpoint(self) -> None:
        """Housekeeping of the database's own files, where it needs any (SQLite's WAL)."""

    async def release_memory(self) -> None:
        """Free what the store keeps in this process only to be faster (asked while nothing runs)."""

    def subscribe(self, on_change: Callable[[], None]) -> None:
        """Call `on_change` (from any thread) soon after another node creates or cancels a batch.

        Best effort: it only cuts latency; the engine polls as well. A no-op where one process is all
        there is."""

    def is_unavailable(self, exc: BaseException) -> bool:
        """Whether `exc` means the database is unreachable or busy, not that the call was wrong."""
        return isinstance(exc, sa_exc.OperationalError | sa_exc.InterfaceError | sa_exc.TimeoutError)

    def is_race_lost(self, exc: BaseException) -> bool:
        """Whether `exc` aborted a transaction that may simply run again (deadlock, serialization)."""
        return False

    # --- batches: the API's operations -------------------------------------------------------

    @writes
    def insert_batch(
        self,
        *,
        batch_id: str,
        workspace: str,
        created_at: int,
        expires_at: int,
        items: Sequence[tuple[str, Any]],
        betas: Sequence[str] = (),
        max_queued_requests: int = 0,
        format: str = ANTHROPIC,
        also: Callable[[Connection, int], None] | None = None,
    ) -> BatchRecord:
        """Store a batch and all its requests in one transaction: all of it, or nothing.

        With `max_queued_requests`, raises `QueueFullError` (and stores nothing) when the workspace's
        unfinished requests would exceed it; the check and the insert are one transaction, serialised
        per workspace, so concurrent creates cannot pass it together. `also(conn, seq)` runs in the same
        transaction (an API's own row for the batch).
        """
        with self.engine.begin() as conn:
            self._begin_write(conn)
            if max_queued_requests:
                self._lock_workspace(conn, workspace)
                self._check_queue(conn, workspace, len(items), max_queued_requests)
            seq = conn.execute(
                batches.insert()
                .values(
                    id=batch_id,
                    workspace=workspace,
                    status=IN_PROGRESS,
                    total=len(items),
                    processing=len(items),
                    created_at=created_at,
                    expires_at=expires_at,
                    betas=",".join(betas) or None,
                    format=format,
                )
                .returning(batches.c.seq)
            ).scalar_one()
            first_id, last_id = self._insert_requests(conn, seq, items)
            conn.execute(
                update(batches).where(batches.c.seq == seq).values(first_request_id=first_id, last_request_id=last_id)
            )
            if also is not None:
                also(conn, seq)
            self._notify(conn)
            return _one_batch(conn, seq)

    def can_stream_insert(self) -> bool:
        """Whether an `insert_streamed_batch` may start now (asked on the event loop)."""
        return self._streaming < self.streamed_inserts

    async def insert_streamed_batch(
        self,
        *,
        batch_id: str,
        workspace: str,
        created_at: int,
        expires_at: int,
        feed: ItemFeed,
        max_requests: int,
        betas: Sequence[str] = (),
        max_queued_requests: int = 0,
    ) -> BatchRecord:
        """`insert_batch`, with the requests taken from `feed` as they are decoded (at most
        `max_requests` of them): one transaction, all or nothing, seen by no one before it commits.

        Raises `FeedAbortedError` when the feed is aborted and `StreamedInsertUndoneError` when the feed
        stalls past its `hold_seconds` or the transaction lost a race; either way nothing is stored, and
        after the latter the batch is to be inserted with `insert_batch`. Never run again on its own: the
        feed is consumed.
        """
        if self._streamer is None:
            raise NotImplementedError(f"{type(self).__name__} has no streamed insert")
        call = functools.partial(
            self._insert_streamed_batch,
            batch_id=batch_id,
            workspace=workspace,
            created_at=created_at,
            expires_at=expires_at,
            feed=feed,
            max_requests=max_requests,
            betas=betas,
            max_queued_requests=max_queued_requests,
        )
        self._streaming += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self._streamer, self._unretried, call)
        finally:
            self._streaming -= 1

    def _unretried(self, call: Callable[[], T]) -> T:
        """`call`, with a lost race raised as `StreamedInsertUndoneError` and a lost or refused
        connection as `StoreUnavailableError` (`_guarded`, but never run twice)."""
        try:
            return call()
        except Exception as exc:
            if self.is_race_lost(exc):
                raise StreamedInsertUndoneError(f"lost a race: {exc}") from exc
            if self.is_unavailable(exc):
                raise StoreUnavailableError(f"insert_streamed_batch: {exc}") from exc
            raise

    def _insert_streamed_batch(
        self,
        *,
        batch_id: str,
        workspace: str,
        created_at: int,
        expires_at: int,
        feed: ItemFeed,
        max_requests: int,
        betas: Sequence[str],
        max_queued_requests: int,
    ) -> BatchRecord:
        deadline = time.monotonic() + feed.hold_seconds
        with self.engine.begin() as conn:
            self._begin_write(conn)
            if max_queued_requests:
                # Refuse early when the queue is full already; the binding check comes after the copy.
                self._check_queue(conn, workspace, 1, max_queued_requests)
            seq = conn.execute(
                batches.insert()
                .values(
                    id=batch_id,
                    workspace=workspace,
                    status=IN_PROGRESS,
                    total=0,
                    processing=0,
                    created_at=created_at,
                    expires_at=expires_at,
                    betas=",".join(betas) or None,
                )
                .returning(batches.c.seq)
            ).scalar_one()
            first_id, last_id = self._insert_streamed_requests(conn, seq, feed, deadline, max_requests)
            total = last_id - first_id + 1
            if max_queued_requests:
                # Serialised per workspace only now that the requests are in: a create whose body is
                # still arriving holds up no other create of its workspace.
                self._lock_workspace(conn, workspace)
                self._check_queue(conn, workspace, total, max_queued_requests)
            conn.execute(
                update(batches)
                .where(batches.c.seq == seq)
                .values(total=total, processing=total, first_request_id=first_id, last_request_id=last_id)
            )
            self._notify(conn)
            return _one_batch(conn, seq)

    @staticmethod
    def _check_queue(conn: Connection, workspace: str, adding: int, max_queued_requests: int) -> None:
        queued = conn.execute(
            select(batches.c.processing).where(batches.c.workspace == workspace, UNFINISHED)
        ).scalars()
        if sum(queued) + adding > max_queued_requests:
            raise QueueFullError(max_queued_requests)

    def _insert_streamed_requests(
        self, conn: Connection, seq: int, feed: ItemFeed, deadline: float, max_requests: int
    ) -> tuple[int, int]:
        """Insert the requests `feed` brings (at least one, at most `max_requests`) as pending, taking
        each run by `deadline`; return the smallest and largest id given them."""
        raise NotImplementedError

    def _begin_write(self, conn: Connection) -> None:
        """Start the write transaction `conn` is in (SQLite takes its write lock here)."""

    def _lock_workspace(self, conn: Connection, workspace: str) -> None:
        """Serialise this transaction with others that check the same workspace's queue."""

    def _insert_requests(self, conn: Connection, seq: int, items: Sequence[tuple[str, Any]]) -> tuple[int, int]:
        """Insert the batch's requests as pending; return the smallest and largest id given them."""
        raise NotImplementedError

    def _insert_request_runs(
        self, conn: Connection, seq: int, runs: Iterable[Sequence[tuple[str, Any]]]
    ) -> tuple[int, int | None, int | None]:
        """Insert the requests of `runs` as pending, as the runs come; return how many, and the smallest
        and largest id given them (None: there were none)."""
        count, first_id, last_id = 0, None, None
        for run in runs:
            low, last_id = self._insert_requests(conn, seq, run)
            first_id = low if first_id is None else first_id
            count += len(run)
        return count, first_id, last_id

    def _notify(self, conn: Connection) -> None:
        """Tell other nodes, when this transaction commits, that batches were created or canceled."""

    @reads
    def get_batch(self, workspace: str, batch_id: str, *, format: str = ANTHROPIC) -> BatchRecord | None:
        """The batch with this id in this workspace and wire format (each API sees only its own), or None."""
        with self.engine.connect() as conn:
            row = conn.execute(
                select(batches).where(
                    batches.c.id == batch_id, batches.c.workspace == workspace, batches.c.format == format
                )
            ).one_or_none()
        return None if row is None else BatchRecord(**row._mapping)

    @reads
    def list_batches(
        self, workspace: str, *, limit: int, after_id: str | None, before_id: str | None
    ) -> tuple[list[BatchRecord], bool]:
        """One page, newest first, and whether more lie beyond it in the direction of travel.

        `after_id` pages towards older batches; `before_id` towards newer ones (the page adjacent to it);
        both together bound the page strictly between them.
        """
        with self.engine.connect() as conn:
            query = select(batches).where(batches.c.workspace == workspace, batches.c.format == ANTHROPIC)
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

    @reads
    def workspace_usage(self, workspace: str) -> tuple[int, Usage]:
        """How many batches the workspace has stored, and the tokens their results used, summed."""
        with self.engine.connect() as conn:
            count, *sums = conn.execute(
                select(
                    func.count(),
                    *(func.coalesce(func.sum(batches.c[name]), 0) for name in USAGE_COLUMNS),
                ).where(batches.c.workspace == workspace)
            ).one()
        return int(count), Usage(*(int(value) for value in sums))

    @writes
    def cancel_batch(self, seq: int, now: int) -> BatchRecord | None:
        """Move an in-progress batch to canceling and its pending requests to canceled, atomically.

        Running requests are untouched: they finish with their real result. Returns None when the
        batch was no longer in progress (the caller re-reads it).
        """
        with self.engine.begin() as conn:
            self._begin_write(conn)
            in_progress = exists().where(batches.c.seq == seq, batches.c.status == IN_PROGRESS)
            canceled = conn.execute(
                update(requests)
                .where(requests.c.batch_seq == seq, requests.c.state == PENDING, in_progress)
                .values(state=CANCELED)
            ).rowcount
            moved = conn.execute(
                update(batches)
                .where(batches.c.seq == seq, batches.c.status == IN_PROGRESS)
                .values(status=CANCELING, cancel_initiated_at=now)
            ).rowcount
            if not moved:
                conn.rollback()
                return None
            self._add_counts(conn, seq, {CANCELED: canceled})
            self._end_if_done(conn, [seq], now)
            self._notify(conn)
            return _one_batch(conn, seq)

    @writes
    def delete_batch(self, seq: int) -> bool:
        """Delete an ended batch and its results; False (and nothing deleted) if it has not ended."""
        with self.engine.begin() as conn:
            self._begin_write(conn)
            conn.execute(
                requests.delete().where(
                    requests.c.batch_seq == seq,
                    exists().where(batches.c.seq == seq, batches.c.status == ENDED),
                )
            )
            deleted = conn.execute(batches.delete().where(batches.c.seq == seq, batches.c.status == ENDED)).rowcount
            return bool(deleted)

    async def stream_results(self, batch: BatchRecord) -> AsyncIterator[bytes]:
        """Every result line of an ended batch, in chunks of a few thousand lines (fewer where they are
        long: a few MB a chunk), in constant memory.

        Chunks are read on reader threads ahead of the one being sent. Raises `ResultsChangedError`
        after the last chunk if the lines sent do not number the batch's requests (it was deleted or
        archived meanwhile), so a client sees a broken download, never a silently short one.
        """
        first, last = batch.first_request_id, batch.last_request_id
        span = result_chunk_ids(batch.succeeded + batch.errored, batch.succeeded_bytes + batch.errored_bytes)
        reads = (
            [
                functools.partial(self._result_chunk, batch.seq, low, min(low + span - 1, last))
                for low in range(first, last + 1, span)
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
        raise NotImplementedError

    # --- requests: the engine's operations ---------------------------------------------------

    @reads
    def active_batches(self) -> ActiveBatches:
        """(seq, status) of every batch that has not ended, oldest first, with the betas of those that
        have some."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(batches.c.seq, batches.c.status, batches.c.betas, batches.c.format)
                .where(UNFINISHED)
                .order_by(batches.c.seq)
            ).all()
        return ActiveBatches(
            [(seq, status) for seq, status, _, _ in rows],
            {seq: betas.split(",") for seq, _, betas, _ in rows if betas},
            {seq: format for seq, _, _, format in rows if format != ANTHROPIC},
        )

    @reads
    def queue_counts(self) -> tuple[int, int]:
        """(pending, leased) requests of the unfinished batches: read from the batches' counters and the
        requests' state index, so it costs in proportion to unfinished batches and leases, not the queue."""
        unfinished = select(batches.c.seq).where(UNFINISHED)
        with self.engine.connect() as conn:  # one transaction: on SQLite, one snapshot for both reads
            processing = conn.execute(select(func.coalesce(func.sum(batches.c.processing), 0)).where(UNFINISHED))
            leased = conn.execute(
                select(func.count())
                .select_from(requests)
                .where(requests.c.batch_seq.in_(unfinished), requests.c.state == RUNNING)
            )
            unfinished_requests, leased_requests = int(processing.scalar_one()), int(leased.scalar_one())
        # `processing` counts pending and leased (running) requests; on PostgreSQL the two reads may see
        # different commits, so the difference is kept from going negative.
        return max(0, unfinished_requests - leased_requests), leased_requests

    @writes
    def lease_requests(self, quotas: Sequence[tuple[int, int]], *, owner: str, lease_until: int) -> list[LeasedRequest]:
        """Lease up to n pending requests from each (batch, n), oldest first, in one transaction.

        Only requests of in-progress batches are leased, and never one another lessee holds; each
        lease bumps `attempt`, which is part of the lease token checked when the result is written.
        """
        raise NotImplementedError

    @writes
    def renew_leases(self, request_ids: Iterable[int], *, owner: str, lease_until: int) -> None:
        """Extend the leases this owner still holds on these requests."""
        ids = list(request_ids)
        with self.engine.begin() as conn:
            for start in range(0, len(ids), 500):
                conn.execute(
                    update(requests)
                    .where(
                        requests.c.id.in_(ids[start : start + 500]),
                        requests.c.lease_owner == owner,
                        requests.c.state == RUNNING,
                    )
                    .values(lease_expires_at=lease_until)
                )

    @writes
    def complete_requests(self, completions: Sequence[Completion], *, owner: str, now: int) -> Completed:
        """Write terminal outcomes and move the counters (and token usage) with them, in one transaction.

        Each write is a compare-and-set on (running, this owner, this attempt): a late or duplicate
        completion changes nothing, so a request never gets two results. Batches left with nothing
        to do end here, exactly once. Returns the completions written and how many batches ended.
        """
        if not completions:
            return Completed([], 0)
        groups: dict[str, list[Completion]] = defaultdict(list)
        for done in completions:
            groups[done.state].append(done)
        written: list[Completion] = []
        with self.engine.begin() as conn:
            self._begin_write(conn)
            for state, group in groups.items():
                ids = self._write_outcomes(conn, state, group, owner)
                if len(ids) == len(group):
                    written += group  # the ids are distinct and the group's own: all of it took effect
                else:
                    by_id = {done.request_id: done for done in group}
                    written += map(by_id.__getitem__, ids)
            # Counted per batch with C loops (Counter, sorted, zip, sum): groups run to thousands.
            counts: dict[int, dict[str, int]] = defaultdict(dict)
            kinds = Counter(map(_SEQ_AND_STATE, written))
            for (seq, state), count in kinds.items():
                counts[seq][state] = count
            usage = {
                seq: [sum(column) for column in zip(*filter(None, map(_USAGE, of_batch)), strict=True)]
                for seq, of_batch in groupby(sorted(written, key=_SEQ), key=_SEQ)
            }
            # Usually all of one batch and one state: then no sort by both.
            of_kind: Iterable[tuple[tuple[int, str], Iterable[Completion]]] = (
                [(next(iter(kinds)), written)]
                if len(kinds) == 1
                else groupby(sorted(written, key=_SEQ_AND_STATE), key=_SEQ_AND_STATE)
            )
            line_bytes = {kind: sum(map(len, filter(None, map(_LINE, group)))) for kind, group in of_kind}
            for seq in sorted(counts):
                result_bytes = (line_bytes.get((seq, SUCCEEDED), 0), line_bytes.get((seq, ERRORED), 0))
                self._add_counts(conn, seq, counts[seq], usage.get(seq) or None, result_bytes)
            return Completed(written, self._end_if_done(conn, sorted(counts), now))

    def _write_outcomes(self, conn: Connection, state: str, group: Sequence[Completion], owner: str) -> list[int]:
        """Compare-and-set these outcomes, all in `state`; return the ids actually written (each once)."""
        raise NotImplementedError

    @writes
    def release_requests(self, request_ids: Iterable[int], *, owner: str, started: bool, now: int) -> int:
        """Hand leased requests back (shutdown): pending again, or canceled if their batch is canceling.

        A request that never started gets its attempt back.
        """
        ids = list(request_ids)
        if not ids:
            return 0
        with self.engine.begin() as conn:
            self._begin_write(conn)
            freed = 0
            for start in range(0, len(ids), 500):
                mine = requests.c.id.in_(ids[start : start + 500]) & (requests.c.lease_owner == owner)
                freed += self._hand_back(conn, mine, attempt_delta=0 if started else -1, now=now)
            return freed

    @writes
    def recover_expired_leases(self, batch_seqs: Sequence[int], now: int, *, every_lease: bool = False) -> int:
        """Hand back requests whose lease lapsed (their worker died or stalled), as `release_requests`.

        `every_lease`: all running requests, lapsed or not — only for a `single_process` store at
        start, when no other worker can exist.
        """
        if not batch_seqs:
            return 0
        assert self.single_process or not every_lease, "other nodes may hold live leases"
        lapsed: ColumnElement[bool] = requests.c.batch_seq.in_(list(batch_seqs))
        if not every_lease:
            lapsed &= requests.c.lease_expires_at < now
        with self.engine.begin() as conn:
            self._begin_write(conn)
            return self._hand_back(conn, lapsed, attempt_delta=0, now=now)

    @writes
    def expire_batches(self, now: int) -> list[tuple[str, int]]:
        """End every unfinished batch past `expires_at`: its unfinished requests become expired.

        Exactly once with any number of nodes: a batch another node ended first is left alone.
        Returns (id, requests expired) of each batch this call ended."""
        expired_ids: list[tuple[str, int]] = []
        with self.engine.connect() as conn:
            due = conn.execute(select(batches.c.seq, batches.c.id).where(UNFINISHED, batches.c.expires_at <= now)).all()
        for seq, batch_id in due:
            with self.engine.begin() as conn:
                self._begin_write(conn)
                expired = conn.execute(
                    update(requests)
                    .where(requests.c.batch_seq == seq, requests.c.state.in_((PENDING, RUNNING)))
                    .values(state=EXPIRED, lease_owner=None, lease_expires_at=None)
                ).rowcount
                ended = conn.execute(
                    update(batches)
                    .where(batches.c.seq == seq, batches.c.status != ENDED)
                    .values(status=ENDED, ended_at=now)
                ).rowcount
                if not ended:
                    conn.rollback()
                    continue
                self._add_counts(conn, seq, {EXPIRED: expired})
                self._queue_ended_events(conn, [seq])
                expired_ids.append((batch_id, expired))
        return expired_ids

    @writes
    def archive_batches(self, now: int, *, retention_micros: int) -> list[str]:
        """Archive ended batches older than the retention window: their results are deleted, once."""
        archived: list[str] = []
        with self.engine.connect() as conn:
            due = conn.execute(
                select(batches.c.seq, batches.c.id).where(TO_ARCHIVE, batches.c.created_at <= now - retention_micros)
            ).all()
        for seq, batch_id in due:
            with self.engine.begin() as conn:
                self._begin_write(conn)
                moved = conn.execute(
                    update(batches)
                    .where(batches.c.seq == seq, batches.c.archived_at.is_(None))
                    .values(archived_at=now, first_request_id=None, last_request_id=None)
                ).rowcount
                if moved:
                    conn.execute(requests.delete().where(requests.c.batch_seq == seq))
                    archived.append(batch_id)
        return archived

    # --- webhooks: the sender's operations ----------------------------------------------------------

    @writes
    def lease_deliveries(self, limit: int, *, owner: str, now: int, lease_until: int) -> list[LeasedDelivery]:
        """Lease up to `limit` due webhook deliveries, oldest due first, for one attempt each.

        A lease moves `next_attempt_at` to `lease_until`: a sender that dies mid-attempt frees the row
        by itself then. On PostgreSQL rows another node is leasing are skipped (SKIP LOCKED), and the
        outer statement checks the row is still due, so two nodes never hold the same delivery."""
        wd = webhook_deliveries.c
        due = and_(DELIVERY_DUE, wd.next_attempt_at <= now)
        picked = (
            select(wd.id).where(due).order_by(wd.next_attempt_at, wd.id).limit(limit).with_for_update(skip_locked=True)
        )
        with self.engine.begin() as conn:
            self._begin_write(conn)
            rows = conn.execute(
                update(webhook_deliveries)
                .where(wd.id.in_(picked), due)
                .values(lease_owner=owner, next_attempt_at=lease_until, attempts=wd.attempts + 1)
                .returning(wd.id, wd.event_id, wd.workspace, wd.body, wd.attempts, wd.created_at)
            ).all()
        return sorted((LeasedDelivery(*row) for row in rows), key=lambda delivery: delivery.id)

    @reads
    def next_delivery_due(self) -> int | None:
        """When the next pending webhook delivery falls due (maybe already), or None if none is pending."""
        wd = webhook_deliveries.c
        with self.engine.connect() as conn:
            due = conn.execute(select(func.min(wd.next_attempt_at)).where(DELIVERY_DUE)).scalar_one_or_none()
        return None if due is None else int(due)

    @writes
    def release_deliveries(self, leased: Sequence[LeasedDelivery], *, owner: str, now: int) -> int:
        """Hand back deliveries whose attempt was cut short (shutdown): due again now, for any sender."""
        with self.engine.begin() as conn:
            self._begin_write(conn)
            return sum(
                conn.execute(
                    update(webhook_deliveries)
                    .where(_holds_delivery(delivery, owner))
                    .values(lease_owner=None, next_attempt_at=now)
                ).rowcount
                for delivery in leased
            )

    @writes
    def prune_deliveries(self, *, finished_before: int) -> int:
        """Delete delivered and given-up webhook deliveries that finished before this time."""
        wd = webhook_deliveries.c
        with self.engine.begin() as conn:
            self._begin_write(conn)
            return int(
                conn.execute(
                    webhook_deliveries.delete().where(wd.status != DELIVERY_PENDING, wd.finished_at < finished_before)
                ).rowcount
            )

    @writes
    def finish_delivery_attempt(
        self,
        delivery: LeasedDelivery,
        *,
        owner: str,
        now: int,
        error: str | None,
        retry_at: int | None = None,
    ) -> bool:
        """Record one attempt: delivered (`error` None), to retry at `retry_at`, or given up (neither).

        A compare-and-set on this lease (owner and attempt): False if the lease had lapsed and another
        sender took the delivery meanwhile, which then records its own attempt."""
        values: dict[str, Any]
        if error is None:  # keeps `last_error`: why earlier attempts failed
            values = {"status": DELIVERED, "finished_at": now}
        elif retry_at is None:
            values = {"status": DELIVERY_FAILED, "finished_at": now, "last_error": error[:500]}
        else:
            values = {"next_attempt_at": retry_at, "last_error": error[:500]}
        with self.engine.begin() as conn:
            self._begin_write(conn)
            return bool(
                conn.execute(
                    update(webhook_deliveries)
                    .where(_holds_delivery(delivery, owner))
                    .values(lease_owner=None, **values)
                ).rowcount
            )

    # --- nodes: who is alive, for caps shared across the cluster -------------------------------

    @writes
    def heartbeat(self, owner: str, now: int, *, live_after: int) -> NodeShare:
        """Record that this worker is alive; return its rank among the workers seen since `live_after`
        and how many there are (so a cap shared by all of them can be split exactly)."""
        with self.engine.begin() as conn:
            updated = conn.execute(update(nodes).where(nodes.c.owner == owner).values(seen_at=now)).rowcount
            if not updated:
                conn.execute(nodes.insert().values(owner=owner, seen_at=now))
            conn.execute(nodes.delete().where(nodes.c.seen_at < live_after))
            live = conn.execute(select(nodes.c.owner).where(nodes.c.seen_at >= live_after).order_by(nodes.c.owner))
            owners = list(live.scalars())
        return NodeShare(rank=owners.index(owner), nodes=len(owners))

    @writes
    def leave(self, owner: str) -> None:
        """This worker stops: it no longer counts towards shared caps."""
        with self.engine.begin() as conn:
            conn.execute(nodes.delete().where(nodes.c.owner == owner))

    # --- shared pieces ------------------------------------------------------------------------

    def _add_counts(
        self,
        conn: Connection,
        seq: int,
        by_state: dict[str, int],
        usage: Sequence[int] | None = None,
        result_bytes: tuple[int, int] = (0, 0),
    ) -> None:
        """Move `processing` into the terminal counters (and add token usage and the bytes of the
        succeeded and errored lines stored) in the same transaction as the state change."""
        moved = sum(by_state.values())
        if not moved:
            return
        values = [moved, *(by_state.get(state, 0) for state in (SUCCEEDED, ERRORED, CANCELED, EXPIRED))]
        values += [*(usage or (0, 0, 0, 0)), *result_bytes]
        # One fixed statement (prepared once): this runs with every group of results written.
        self._driver_cursor(conn).execute(self.add_counts_sql, (*values, seq))

    add_counts_sql: ClassVar[str] = (
        "UPDATE batches SET processing = processing - ?, succeeded = succeeded + ?, errored = errored + ?, "
        "canceled = canceled + ?, expired = expired + ?, input_tokens = input_tokens + ?, "
        "output_tokens = output_tokens + ?, cache_creation_input_tokens = cache_creation_input_tokens + ?, "
        "cache_read_input_tokens = cache_read_input_tokens + ?, succeeded_bytes = succeeded_bytes + ?, "
        "errored_bytes = errored_bytes + ? WHERE seq = ?"
    )

    def _end_if_done(self, conn: Connection, seqs: list[int], now: int) -> int:
        """End, exactly once, each of these batches that has nothing left to process; how many ended."""
        if not seqs:
            return 0
        ended = list(
            conn.execute(
                update(batches)
                .where(batches.c.seq.in_(seqs), batches.c.processing == 0, batches.c.status != ENDED)
                .values(status=ENDED, ended_at=now)
                .returning(batches.c.seq)
            ).scalars()
        )
        self._queue_ended_events(conn, sorted(ended))
        return len(ended)

    def _queue_ended_events(self, conn: Connection, seqs: Sequence[int]) -> None:
        """Queue the webhook events of batches this transaction ended, so they commit (or roll back)
        together: an ended batch never misses its event, and no event announces an end that never was."""
        if self.on_batch_ended is None or not seqs:
            return
        events: list[dict[str, Any]] = []
        for row in conn.execute(select(batches).where(batches.c.seq.in_(seqs)).order_by(batches.c.seq)):
            record = BatchRecord(**row._mapping)
            try:
                event = self.on_batch_ended(record)
            except Exception:  # a bug building the event must not keep the batch from ending
                logger.exception("building batch %s's webhook event failed; it ends without one", record.id)
                continue
            if event is not None:
                events.append(
                    {
                        "event_id": event.event_id,
                        "workspace": record.workspace,
                        "batch_id": record.id,
                        "body": event.body,
                        "status": DELIVERY_PENDING,
                        "attempts": 0,
                        "created_at": record.ended_at,
                        "next_attempt_at": record.ended_at,
                    }
                )
        if events:
            conn.execute(webhook_deliveries.insert(), events)

    def _hand_back(self, conn: Connection, which: ColumnElement[bool], *, attempt_delta: int, now: int) -> int:
        """Free the running requests `which` selects: to canceled in canceling batches (which lease no
        more, so nothing would ever run them), else to pending. Returns how many were freed.

        Counts come from the rows each statement changed (RETURNING), so two nodes recovering the same
        lapsed leases at once cannot both count them."""
        running = (requests.c.state == RUNNING) & which
        in_canceling = requests.c.batch_seq.in_(select(batches.c.seq).where(batches.c.status == CANCELING))
        lease_free = {"lease_owner": None, "lease_expires_at": None}
        canceled = Counter(
            conn.execute(
                update(requests)
                .where(running, in_canceling)
                .values(state=CANCELED, **lease_free)
                .returning(requests.c.batch_seq)
            ).scalars()
        )
        freed = conn.execute(
            update(requests)
            .where(running)
            .values(state=PENDING, attempt=requests.c.attempt + attempt_delta, **lease_free)
        ).rowcount
        for seq in sorted(canceled):
            self._add_counts(conn, seq, {CANCELED: canceled[seq]})
        self._end_if_done(conn, sorted(canceled), now)
        return freed + sum(canceled.values())

    @staticmethod
    def _driver_cursor(conn: Connection) -> Any:
        """A DBAPI cursor inside `conn`'s transaction, for the hot statements: tuples straight to the
        driver, since SQLAlchemy's per-row parameter and result handling would cost more than the
        database's work."""
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


def _holds_delivery(delivery: LeasedDelivery, owner: str) -> ColumnElement[bool]:
    """The delivery is still pending and leased by `owner` for this very attempt (a compare-and-set)."""
    wd = webhook_deliveries.c
    return and_(
        wd.id == delivery.id,
        wd.status == DELIVERY_PENDING,
        wd.lease_owner == owner,
        wd.attempts == delivery.attempt,
    )
