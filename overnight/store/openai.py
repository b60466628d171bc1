"""The OpenAI Files and Batches APIs' rows: files (bytes in the database, in chunks, so every node sees
them and no one holds a whole file) and what an OpenAI batch adds to the engine's `batches` row.
Portable SQL, run on the store's threads."""

from __future__ import annotations

import contextlib
import functools
import queue
import threading
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from concurrent.futures import Executor
from typing import IO, Any, TypeVar

import msgspec
from sqlalchemy import Connection, and_, bindparam, func, or_, select, update

from overnight.store.base import Store, UnknownCursorError, _one_batch, result_chunk_ids
from overnight.store.records import CANCELED, EXPIRED, IN_PROGRESS, OPENAI, SUCCEEDED, BatchRecord
from overnight.store.sqlite import page_cache
from overnight.store.tables import (
    FILE_CHUNK_BYTES,
    VALIDATING,
    batches,
    file_chunks,
    files,
    openai_batches,
    requests,
)

T = TypeVar("T")
_OUTCOME_CHUNK = 5000
NEVER_RAN = (CANCELED, EXPIRED)
_SQLITE_CHUNK = (
    "SELECT CAST(group_concat(result, '') AS BLOB) FROM requests"
    " WHERE id BETWEEN ? AND ? AND +batch_seq = ? AND state {} 'succeeded'"  # `+`: by id, not by index
)
_SQLITE_OUTPUT_CHUNK = _SQLITE_CHUNK.format("=")
_SQLITE_ERROR_CHUNK = _SQLITE_CHUNK.format("!=")
_CHUNKS_PER_READ = 2
# A validating batch's requests reach the inserting thread in runs of this many (the store carries rows
# across runs to insert whole statements)...
_HANDOFF_ROWS = 8000
_HANDOFF_BYTES = 4 << 20  # ... or fewer, once their lines came from this much of the file (long lines)
_HANDOFF_DEPTH = 2  # runs checked ahead of the insert, at most


class InputFileGoneError(LookupError):
    """A validating batch's input file was deleted before its requests were enqueued."""


class FileRecord(msgspec.Struct, frozen=True):
    seq: int
    id: str
    workspace: str
    purpose: str
    filename: str
    bytes: int
    created_at: int
    expires_at: int | None


class OpenAIBatchRecord(msgspec.Struct, frozen=True, kw_only=True):
    seq: int = 0
    id: str
    workspace: str
    batch_seq: int | None = None
    endpoint: str
    input_file_id: str
    completion_window: str
    model: str | None = None
    metadata: bytes | None = None
    errors: bytes | None = None
    created_at: int
    failed_at: int | None = None
    finalized_at: int | None = None
    output_file_id: str | None = None
    error_file_id: str | None = None
    expires_at: int | None = None
    cancelled_at: int | None = None
    """Cancelled while validating (it never ran)."""
    batch: BatchRecord | None = None
    """The engine's row (None while validating, and for a batch that failed validation or was cancelled
    then)."""


_FILE_COLUMNS = [files.c[name] for name in FileRecord.__struct_fields__]
_OPENAI_NAMES = [name for name in OpenAIBatchRecord.__struct_fields__ if name != "batch"]
_OPENAI_COLUMNS = [openai_batches.c[name] for name in _OPENAI_NAMES]


def _openai_record(row: Any) -> OpenAIBatchRecord:
    return OpenAIBatchRecord(**dict(zip(_OPENAI_NAMES, row, strict=True)))


ItemGroups = Callable[[Iterator[bytes]], Iterator[Sequence[tuple[str, Any]]]]
"""Turns an input file's chunks into its requests, (custom_id, body) pairs, a group at a time."""


class OpenAIStore:
    """The OpenAI APIs' operations on a `Store`'s database, on its writer and reader threads."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.engine = store.engine

    # --- files --------------------------------------------------------------------------------

    async def insert_file(self, record: FileRecord, content: IO[bytes]) -> FileRecord:
        """The file's row and its bytes, read from `content` a chunk at a time, in one transaction: a file
        is listed whole or not at all."""

        def insert() -> FileRecord:
            content.seek(0)
            with self.engine.begin() as conn, _small_cache(conn):
                self.store._begin_write(conn)
                values = msgspec.structs.asdict(record)
                del values["seq"]
                seq = conn.execute(files.insert().values(**values).returning(files.c.seq)).scalar_one()
                idx = 0
                while data := content.read(FILE_CHUNK_BYTES):
                    conn.execute(file_chunks.insert().values(file_seq=seq, idx=idx, data=data))
                    idx += 1
            return msgspec.structs.replace(record, seq=seq)

        return await self.store.run_write(insert)

    async def get_file(self, workspace: str, file_id: str) -> FileRecord | None:
        def get() -> FileRecord | None:
            with self.engine.connect() as conn:
                row = conn.execute(
                    select(*_FILE_COLUMNS).where(files.c.id == file_id, files.c.workspace == workspace)
                ).one_or_none()
            return None if row is None else FileRecord(*row)

        return await self.store.run_read(get)

    async def file_content(self, workspace: str, file_id: str) -> tuple[FileRecord, AsyncIterator[bytes]] | None:
        """The file and its bytes as they are read, a chunk or a few thousand lines at a time; None if
        there is no such file, or its batch's results were archived."""

        def locate() -> tuple[FileRecord, list[Callable[[], bytes]]] | None:
            with self.engine.connect() as conn:
                row = conn.execute(
                    select(*_FILE_COLUMNS, files.c.batch_seq, files.c.kind).where(
                        files.c.id == file_id, files.c.workspace == workspace
                    )
                ).one_or_none()
                if row is None:
                    return None
                record = FileRecord(*row[: len(_FILE_COLUMNS)])
                batch_seq, kind = row.batch_seq, row.kind
                if batch_seq is None:
                    last_idx = conn.execute(
                        select(func.max(file_chunks.c.idx)).where(file_chunks.c.file_seq == record.seq)
                    ).scalar_one_or_none()
                    count = 0 if last_idx is None else int(last_idx) + 1
                    return record, [
                        functools.partial(self._chunk_range, record.seq, low, low + _CHUNKS_PER_READ - 1)
                        for low in range(0, count, _CHUNKS_PER_READ)
                    ]
                first, last, *counted = conn.execute(
                    select(
                        batches.c.first_request_id,
                        batches.c.last_request_id,
                        *(
                            (batches.c.succeeded, batches.c.succeeded_bytes)
                            if kind == "output"
                            else (batches.c.errored, batches.c.errored_bytes)
                        ),
                    ).where(batches.c.seq == batch_seq)
                ).one()
            if first is None or last is None:
                return None  # archived
            span = result_chunk_ids(*counted)
            return record, [
                functools.partial(self._lines_range, batch_seq, kind, low, min(low + span - 1, last))
                for low in range(first, last + 1, span)
            ]

        found = await self.store.run_read(locate)
        if found is None:
            return None
        record, reads = found

        async def chunks() -> AsyncIterator[bytes]:
            async for chunk in self.store._read_ahead(reads):
                if chunk:  # an empty one would end a chunked HTTP body early
                    yield chunk

        return record, chunks()

    def _chunk_range(self, file_seq: int, low: int, high: int) -> bytes:
        with self.engine.connect() as conn, _small_cache(conn):
            return b"".join(
                bytes(data)
                for data in conn.execute(
                    select(file_chunks.c.data)
                    .where(file_chunks.c.file_seq == file_seq, file_chunks.c.idx.between(low, high))
                    .order_by(file_chunks.c.idx)
                ).scalars()
            )

    def _lines_range(self, seq: int, kind: str, low: int, high: int) -> bytes:
        with self.engine.connect() as conn:
            return _batch_lines(conn, seq, kind, low, high)

    async def list_files(
        self, workspace: str, *, purpose: str | None, limit: int, after_id: str | None, ascending: bool
    ) -> tuple[list[FileRecord], bool]:
        def page() -> tuple[list[FileRecord], bool]:
            with self.engine.connect() as conn:
                query = select(*_FILE_COLUMNS).where(files.c.workspace == workspace)
                if purpose is not None:
                    query = query.where(files.c.purpose == purpose)
                if after_id is not None:
                    cursor = conn.execute(
                        select(files.c.seq).where(files.c.id == after_id, files.c.workspace == workspace)
                    ).scalar_one_or_none()
                    if cursor is None:
                        raise UnknownCursorError(after_id)
                    query = query.where(files.c.seq > cursor if ascending else files.c.seq < cursor)
                query = query.order_by(files.c.seq.asc() if ascending else files.c.seq.desc())
                rows = conn.execute(query.limit(limit + 1)).all()
            return [FileRecord(*row) for row in rows[:limit]], len(rows) > limit

        return await self.store.run_read(page)

    async def delete_file(self, workspace: str, file_id: str) -> bool:
        def delete() -> bool:
            with self.engine.begin() as conn:
                self.store._begin_write(conn)
                return bool(
                    conn.execute(files.delete().where(files.c.id == file_id, files.c.workspace == workspace)).rowcount
                )

        return await self.store.run_write(delete)

    # --- batches ------------------------------------------------------------------------------

    async def insert_batch(self, record: OpenAIBatchRecord) -> OpenAIBatchRecord:
        """A new batch's row: validating (a validator will claim it), or failed at once."""

        def insert() -> OpenAIBatchRecord:
            with self.engine.begin() as conn:
                values = msgspec.structs.asdict(record)
                del values["seq"], values["batch"]
                seq = conn.execute(
                    openai_batches.insert().values(**values).returning(openai_batches.c.seq)
                ).scalar_one()
            return msgspec.structs.replace(record, seq=seq)

        return await self.store.run_write(insert)

    async def get_batch(self, workspace: str, batch_id: str) -> OpenAIBatchRecord | None:
        def get() -> OpenAIBatchRecord | None:
            with self.engine.connect() as conn:
                rows = _with_engine_rows(
                    conn,
                    select(*_OPENAI_COLUMNS).where(
                        openai_batches.c.id == batch_id, openai_batches.c.workspace == workspace
                    ),
                )
            return rows[0] if rows else None

        return await self.store.run_read(get)

    async def list_batches(
        self, workspace: str, *, limit: int, after_id: str | None
    ) -> tuple[list[OpenAIBatchRecord], bool]:
        def page() -> tuple[list[OpenAIBatchRecord], bool]:
            with self.engine.connect() as conn:
                query = select(*_OPENAI_COLUMNS).where(openai_batches.c.workspace == workspace)
                if after_id is not None:
                    cursor = conn.execute(
                        select(openai_batches.c.seq).where(
                            openai_batches.c.id == after_id, openai_batches.c.workspace == workspace
                        )
                    ).scalar_one_or_none()
                    if cursor is None:
                        raise UnknownCursorError(after_id)
                    query = query.where(openai_batches.c.seq < cursor)
                rows = _with_engine_rows(conn, query.order_by(openai_batches.c.seq.desc()).limit(limit + 1))
            return rows[:limit], len(rows) > limit

        return await self.store.run_read(page)

    async def cancel_validating(self, seq: int, now: int) -> bool:
        """Cancel a batch that is still validating: it never runs (False: it was no longer validating, and
        nothing changed). A validator that had claimed it then fails its own compare-and-set."""

        def cancel() -> bool:
            with self.engine.begin() as conn:
                self.store._begin_write(conn)
                ob = openai_batches.c
                return bool(
                    conn.execute(
                        update(openai_batches)
                        .where(ob.seq == seq, VALIDATING)
                        .values(cancelled_at=now, validation_owner=None, validation_expires_at=None)
                    ).rowcount
                )

        return await self.store.run_write(cancel)

    # --- validation: the validators' operations ----------------------------------------------

    async def claim_validation(self, *, owner: str, now: int, lease_until: int) -> OpenAIBatchRecord | None:
        """Claim the oldest validating batch that no one holds an unlapsed claim on, until `lease_until`.

        One guarded statement (on PostgreSQL a row another node is claiming is skipped), so two validators
        never hold the same batch; a claim whose holder died lapses and is anyone's."""
        ob = openai_batches.c
        claimable = and_(VALIDATING, or_(ob.validation_expires_at.is_(None), ob.validation_expires_at < now))
        picked = (
            select(ob.seq).where(claimable).order_by(ob.seq).limit(1).with_for_update(skip_locked=True)
        ).scalar_subquery()

        def claim() -> OpenAIBatchRecord | None:
            with self.engine.begin() as conn:
                self.store._begin_write(conn)
                row = conn.execute(
                    update(openai_batches)
                    .where(ob.seq == picked, claimable)
                    .values(validation_owner=owner, validation_expires_at=lease_until)
                    .returning(*_OPENAI_COLUMNS)
                ).one_or_none()
            return None if row is None else _openai_record(row)

        return await self.store.run_write(claim)

    async def renew_validation(self, seq: int, *, owner: str, lease_until: int) -> bool:
        """Extend this owner's claim; False if it no longer holds one (cancelled, or lapsed and taken)."""

        def renew() -> bool:
            with self.engine.begin() as conn:
                self.store._begin_write(conn)
                return bool(
                    conn.execute(
                        update(openai_batches).where(_holds_claim(seq, owner)).values(validation_expires_at=lease_until)
                    ).rowcount
                )

        return await self.store.run_write(renew)

    async def release_validations(self, seqs: Sequence[int] = (), *, owner: str | None) -> int:
        """Hand claims back (shutdown, a database hiccup): these seqs of `owner`'s, or, with `owner` None,
        every claim — only for a `single_process` store at start, when no other validator can exist."""
        ob = openai_batches.c
        assert owner is not None or self.store.single_process, "other nodes may hold live claims"

        def release() -> int:
            which = and_(VALIDATING, ob.validation_owner.is_not(None))
            if owner is not None:
                which = and_(which, ob.validation_owner == owner, ob.seq.in_(list(seqs)))
            with self.engine.begin() as conn:
                self.store._begin_write(conn)
                return int(
                    conn.execute(
                        update(openai_batches).where(which).values(validation_owner=None, validation_expires_at=None)
                    ).rowcount
                )

        return await self.store.run_write(release)

    async def fail_validation(self, seq: int, *, owner: str, errors: bytes, now: int) -> bool:
        """Fail a batch whose file is invalid, if this owner still holds its claim (else nothing changes)."""

        def fail() -> bool:
            with self.engine.begin() as conn:
                self.store._begin_write(conn)
                return bool(
                    conn.execute(
                        update(openai_batches)
                        .where(_holds_claim(seq, owner))
                        .values(failed_at=now, errors=errors, validation_owner=None, validation_expires_at=None)
                    ).rowcount
                )

        return await self.store.run_write(fail)

    async def start_validated(
        self,
        record: OpenAIBatchRecord,
        *,
        owner: str,
        verdict: Callable[[], tuple[int, str | None]],
        item_groups: ItemGroups,
        now: int,
        max_queued_requests: int,
    ) -> BatchRecord | None:
        """Enqueue a validated batch's requests as an engine batch (format `openai`) and link it, in one
        transaction, if this owner still holds its claim: exactly once, whatever other validators, cancels
        and crashes do. None: the claim was lost (cancelled, or lapsed and taken), nothing changed.

        The requests are read from the file's chunks in this transaction (`item_groups`, which checks
        them as it goes), a group at a time, never all at once: `verdict()` is asked before anything
        commits and gives (requests, model) of a valid file; whatever it raises (the file is invalid)
        rolls everything back and reaches the caller.
        Raises `InputFileGoneError` (the file was deleted since), or `QueueFullError` (the workspace's
        queue is full); nothing is stored then either.
        """
        assert record.expires_at is not None

        def start() -> BatchRecord | None:
            with self.engine.begin() as conn:
                self.store._begin_write(conn)
                # The compare-and-set first: on PostgreSQL it also locks the row against a cancel.
                mine = conn.execute(
                    update(openai_batches).where(_holds_claim(record.seq, owner)).values(validation_owner=owner)
                ).rowcount
                if not mine:
                    conn.rollback()
                    return None
                # A shared lock: the file cannot be deleted under the reads below.
                file_seq = conn.execute(
                    select(files.c.seq)
                    .where(files.c.id == record.input_file_id, files.c.workspace == record.workspace)
                    .with_for_update(read=True)
                ).scalar_one_or_none()
                if file_seq is None:
                    raise InputFileGoneError(record.input_file_id)
                # Counted in once the requests are in: nothing may lease them before this commits.
                seq = conn.execute(
                    batches.insert()
                    .values(
                        id=record.id,
                        workspace=record.workspace,
                        status=IN_PROGRESS,
                        total=0,
                        processing=0,
                        created_at=now,
                        expires_at=record.expires_at,
                        format=OPENAI,
                    )
                    .returning(batches.c.seq)
                ).scalar_one()
                try:
                    # Read and checked on a reader thread, a few runs ahead: checking (Python, holding the
                    # GIL) overlaps inserting (SQLite, which releases it).
                    with _ahead(
                        self.store._reader, functools.partial(self._file_requests, file_seq, item_groups)
                    ) as runs:
                        inserted, first_id, last_id = self.store._insert_request_runs(conn, seq, runs)
                except Exception:
                    verdict()  # a lost claim or a refused file is what the caller wants to hear of
                    raise
                total, model = verdict()
                if inserted != total:  # the file cannot change; this would be a bug, so store nothing
                    raise RuntimeError(f"batch {record.id}: {inserted} requests enqueued, {total} validated")
                if max_queued_requests:
                    # Serialised per workspace only now that the requests are in (as a streamed create).
                    self.store._lock_workspace(conn, record.workspace)
                    self.store._check_queue(conn, record.workspace, total, max_queued_requests)
                conn.execute(
                    update(batches)
                    .where(batches.c.seq == seq)
                    .values(total=total, processing=total, first_request_id=first_id, last_request_id=last_id)
                )
                conn.execute(
                    update(openai_batches)
                    .where(openai_batches.c.seq == record.seq)
                    .values(batch_seq=seq, model=model, validation_owner=None, validation_expires_at=None)
                )
                self.store._notify(conn)
                return _one_batch(conn, seq)

        return await self.store.run_write(start)

    def _file_requests(self, file_seq: int, item_groups: ItemGroups) -> Iterator[Sequence[tuple[str, Any]]]:
        """A file's requests as `item_groups` gives them, read on a connection of their own (the file is
        locked against deletion by the transaction that asks), in runs of about `_HANDOFF_ROWS`, or shorter
        ones once a run's lines took `_HANDOFF_BYTES` of the file (the memory they pin)."""
        read = 0

        def counted(chunks: Iterator[bytes]) -> Iterator[bytes]:
            nonlocal read
            for chunk in chunks:
                read += len(chunk)
                yield chunk

        with self.engine.connect() as conn, _small_cache(conn):
            run: list[tuple[str, Any]] = []
            for group in item_groups(counted(_chunks_in(conn, file_seq))):
                run += group
                if len(run) >= _HANDOFF_ROWS or read >= _HANDOFF_BYTES:
                    yield run
                    run, read = [], 0
            if run:
                yield run

    # --- ended batches ------------------------------------------------------------------------

    async def finalize(
        self,
        record: OpenAIBatchRecord,
        render: Callable[[str, str], bytes],
        make_file: Callable[[str, int], FileRecord],
        now: int,
    ) -> bool:
        """Give an ended batch its output and error files, exactly once (False: another call or node did
        it first, and nothing changed).

        The files are rows naming the batch and a kind, not copies: their lines stay in `requests`. The
        requests that never ran get their lines (`render(custom_id, state)`) stored here, a few thousand
        at a time, so that both files are plain reads of stored lines; their sizes come from the batch's
        byte counters (summed as the engine stored its lines) and these lines, not from a scan of its
        results. `make_file(kind, size)` names a file of `kind` (`output`, `error`); an empty one is not
        made.
        """
        assert record.batch is not None
        seq = record.batch.seq

        def write() -> bool:
            with self.engine.begin() as conn:
                self.store._begin_write(conn)
                moved = conn.execute(
                    update(openai_batches)
                    .where(openai_batches.c.seq == record.seq, openai_batches.c.finalized_at.is_(None))
                    .values(finalized_at=now)
                ).rowcount
                if not moved:
                    conn.rollback()
                    return False
                counted = conn.execute(
                    select(
                        batches.c.first_request_id,
                        batches.c.last_request_id,
                        batches.c.canceled,
                        batches.c.expired,
                        batches.c.succeeded_bytes,
                        batches.c.errored_bytes,
                    ).where(batches.c.seq == seq)
                ).one()
                sizes = {"output": counted.succeeded_bytes, "error": counted.errored_bytes}
                first, last = counted.first_request_id or 0, counted.last_request_id or -1
                # Only a batch with canceled or expired requests has lines to render.
                for low in range(first, last + 1, _OUTCOME_CHUNK) if counted.canceled or counted.expired else ():
                    never_ran = conn.execute(
                        select(requests.c.id, requests.c.custom_id, requests.c.state).where(
                            requests.c.id.between(low, low + _OUTCOME_CHUNK - 1),
                            requests.c.batch_seq == seq,
                            requests.c.state.in_(NEVER_RAN),
                            requests.c.result.is_(None),
                        )
                    ).all()
                    if never_ran:
                        lines = [{"request_id": rid, "line": render(cid, state)} for rid, cid, state in never_ran]
                        conn.execute(
                            update(requests)
                            .where(requests.c.id == bindparam("request_id"))
                            .values(result=bindparam("line")),
                            lines,
                        )
                        sizes["error"] += sum(len(line["line"]) for line in lines)
                linked: dict[str, str | None] = {"output_file_id": None, "error_file_id": None}
                for kind, size in sizes.items():
                    if not size:
                        continue
                    file = make_file(kind, int(size))
                    values = msgspec.structs.asdict(file)
                    del values["seq"]
                    conn.execute(files.insert().values(**values, batch_seq=seq, kind=kind))
                    linked[f"{kind}_file_id"] = file.id
                conn.execute(update(openai_batches).where(openai_batches.c.seq == record.seq).values(**linked))
                return True

        return await self.store.run_write(write)


def _holds_claim(seq: int, owner: str) -> Any:
    """The batch is still validating and `owner` holds the claim on it (a compare-and-set)."""
    return and_(openai_batches.c.seq == seq, VALIDATING, openai_batches.c.validation_owner == owner)


def _file_seq(conn: Connection, workspace: str, file_id: str) -> int | None:
    seq = conn.execute(
        select(files.c.seq).where(files.c.id == file_id, files.c.workspace == workspace)
    ).scalar_one_or_none()
    return None if seq is None else int(seq)


@contextlib.contextmanager
def _small_cache(conn: Connection) -> Iterator[None]:
    """On SQLite, a small page cache on this connection while it moves a file's chunks: they are read
    once, and would otherwise fill each pooled connection's whole cache (16 MiB) with pages of no use."""
    if conn.dialect.name != "sqlite":
        yield
        return
    with page_cache(Store._driver_cursor(conn), kib=1024):
        yield


def _chunks_from(conn: Connection, file_seq: int, idx: int) -> list[Any]:
    """The next few (idx, data) chunks of a file from `idx` on."""
    return list(
        conn.execute(
            select(file_chunks.c.idx, file_chunks.c.data)
            .where(file_chunks.c.file_seq == file_seq, file_chunks.c.idx >= idx)
            .order_by(file_chunks.c.idx)
            .limit(_CHUNKS_PER_READ)
        ).all()
    )


def _chunks_in(conn: Connection, file_seq: int) -> Iterator[bytes]:
    """A file's bytes chunk by chunk, read in `conn`'s transaction."""
    idx = 0
    while rows := _chunks_from(conn, file_seq, idx):
        for _, data in rows:
            yield bytes(data)
        idx = rows[-1][0] + 1


class _Failed(msgspec.Struct):
    error: BaseException


_END = object()


@contextlib.contextmanager
def _ahead(pool: Executor, produce: Callable[[], Iterator[T]]) -> Iterator[Iterator[T]]:
    """`produce()`'s items, made on a thread of `pool` up to `_HANDOFF_DEPTH` items ahead of the block
    taking them; what it raises is raised where the item would have been. On leaving the block the
    producer is stopped and waited for: whatever it changed is settled, and it holds nothing."""
    handoff: queue.Queue[Any] = queue.Queue(_HANDOFF_DEPTH)
    stop = threading.Event()

    def run() -> None:
        try:
            for item in produce():
                handoff.put(item)
                if stop.is_set():
                    return
        except BaseException as exc:  # handed over, raised by the consumer
            handoff.put(_Failed(exc))
        else:
            handoff.put(_END)

    def items() -> Iterator[T]:
        while (item := handoff.get()) is not _END:
            if isinstance(item, _Failed):
                raise item.error
            yield item

    producing = pool.submit(run)
    try:
        yield items()
    finally:
        stop.set()
        # Room for the producer's next put (at most one more: it looks at `stop` after each), then wait.
        while not producing.done():
            with contextlib.suppress(queue.Empty):
                handoff.get(timeout=0.05)
        producing.result()


def _with_engine_rows(conn: Connection, query: Any) -> list[OpenAIBatchRecord]:
    rows = [_openai_record(row) for row in conn.execute(query).all()]
    seqs = [row.batch_seq for row in rows if row.batch_seq is not None]
    engine_rows = {
        row.seq: BatchRecord(**row._mapping)
        for row in (conn.execute(select(batches).where(batches.c.seq.in_(seqs))).all() if seqs else [])
    }
    return [
        msgspec.structs.replace(row, batch=engine_rows.get(row.batch_seq)) if row.batch_seq is not None else row
        for row in rows
    ]


def _batch_lines(conn: Connection, seq: int, kind: str, low: int, high: int) -> bytes:
    """The lines of an output (`kind` output) or error file whose requests have ids in [low, high]."""
    if conn.dialect.name == "sqlite":
        # SQLite joins the lines itself, in C, scanning by id (as the Anthropic results do).
        cursor = Store._driver_cursor(conn)
        cursor.execute(_SQLITE_OUTPUT_CHUNK if kind == "output" else _SQLITE_ERROR_CHUNK, (low, high, seq))
        return bytes(cursor.fetchone()[0] or b"")
    wanted = requests.c.state == SUCCEEDED if kind == "output" else requests.c.state != SUCCEEDED
    return b"".join(
        conn.execute(
            select(requests.c.result)
            .where(requests.c.id.between(low, high), requests.c.batch_seq == seq, wanted)
            .order_by(requests.c.id)
        ).scalars()
    )
