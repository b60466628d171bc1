"""The OpenAI Files and Batches APIs' rows: files (bytes in the database, so every node sees them) and
what an OpenAI batch adds to the engine's `batches` row. Portable SQL, run on the store's threads."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import msgspec
from sqlalchemy import Connection, bindparam, func, select, update

from overnight.store.base import Store, UnknownCursorError
from overnight.store.records import CANCELED, EXPIRED, OPENAI, SUCCEEDED, BatchRecord
from overnight.store.tables import batches, files, openai_batches, requests

T = TypeVar("T")
_OUTCOME_CHUNK = 5000
NEVER_RAN = (CANCELED, EXPIRED)
_SQLITE_CHUNK = (
    "SELECT CAST(group_concat(result, '') AS BLOB) FROM requests"
    " WHERE id BETWEEN ? AND ? AND +batch_seq = ? AND state {} 'succeeded'"  # `+`: by id, not by index
)
_SQLITE_OUTPUT_CHUNK = _SQLITE_CHUNK.format("=")
_SQLITE_ERROR_CHUNK = _SQLITE_CHUNK.format("!=")


class FileRecord(msgspec.Struct, frozen=True):
    seq: int
    id: str
    workspace: str
    purpose: str
    filename: str
    bytes: int
    created_at: int
    expires_at: int | None


class OpenAIBatchRecord(msgspec.Struct, frozen=True):
    seq: int
    id: str
    workspace: str
    batch_seq: int | None
    endpoint: str
    input_file_id: str
    completion_window: str
    model: str | None
    metadata: bytes | None
    errors: bytes | None
    created_at: int
    failed_at: int | None
    finalized_at: int | None
    output_file_id: str | None
    error_file_id: str | None
    batch: BatchRecord | None = None
    """The engine's row (None for a batch that failed validation and never ran)."""


_FILE_COLUMNS = [files.c[name] for name in FileRecord.__struct_fields__]
_OPENAI_COLUMNS = [openai_batches.c[name] for name in OpenAIBatchRecord.__struct_fields__ if name != "batch"]


class OpenAIStore:
    """The OpenAI APIs' operations on a `Store`'s database, on its writer and reader threads."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.engine = store.engine

    # --- files --------------------------------------------------------------------------------

    async def insert_file(self, record: FileRecord, content: bytes) -> FileRecord:
        def insert() -> FileRecord:
            with self.engine.begin() as conn:
                values = msgspec.structs.asdict(record)
                del values["seq"]
                seq = conn.execute(files.insert().values(**values, content=content).returning(files.c.seq)).scalar_one()
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

    async def file_content(self, workspace: str, file_id: str) -> bytes | None:
        """The file's bytes; None if there is no such file, or its batch's results were archived."""

        def get() -> bytes | None:
            with self.engine.connect() as conn:
                row = conn.execute(
                    select(files.c.content, files.c.batch_seq, files.c.kind).where(
                        files.c.id == file_id, files.c.workspace == workspace
                    )
                ).one_or_none()
                if row is None or row.content is not None:
                    return None if row is None else bytes(row.content)
                return _batch_lines(conn, row.batch_seq, row.kind)

        return await self.store.run_read(get)

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
                return bool(
                    conn.execute(files.delete().where(files.c.id == file_id, files.c.workspace == workspace)).rowcount
                )

        return await self.store.run_write(delete)

    # --- batches ------------------------------------------------------------------------------

    async def insert_failed_batch(self, record: OpenAIBatchRecord) -> OpenAIBatchRecord:
        """A batch whose input file failed validation: never run, only its errors kept."""

        def insert() -> OpenAIBatchRecord:
            with self.engine.begin() as conn:
                _insert_openai(conn, record)
            return record

        return await self.store.run_write(insert)

    async def insert_batch(
        self,
        record: OpenAIBatchRecord,
        items: Sequence[tuple[str, Any]],
        *,
        expires_at: int,
        max_queued_requests: int,
    ) -> OpenAIBatchRecord:
        """The engine's batch (format `openai`) and this API's row for it, in one transaction."""

        def also(conn: Connection, seq: int) -> None:
            _insert_openai(conn, msgspec.structs.replace(record, batch_seq=seq))

        engine_record = await self.store.insert_batch(
            batch_id=record.id,
            workspace=record.workspace,
            created_at=record.created_at,
            expires_at=expires_at,
            items=items,
            max_queued_requests=max_queued_requests,
            format=OPENAI,
            also=also,
        )
        return msgspec.structs.replace(record, batch_seq=engine_record.seq, batch=engine_record)

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
        requests that never ran get their lines (`render(custom_id, state)`) stored here, so that both
        files are plain reads of stored lines. `make_file(kind, size)` names a file of `kind`
        (`output`, `error`); an empty one is not made.
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
                never_ran = conn.execute(
                    select(requests.c.id, requests.c.custom_id, requests.c.state).where(
                        requests.c.batch_seq == seq, requests.c.state.in_(NEVER_RAN), requests.c.result.is_(None)
                    )
                ).all()
                if never_ran:
                    conn.execute(
                        update(requests)
                        .where(requests.c.id == bindparam("request_id"))
                        .values(result=bindparam("line")),
                        [{"request_id": rid, "line": render(cid, state)} for rid, cid, state in never_ran],
                    )
                by_state = conn.execute(
                    select(requests.c.state, func.coalesce(func.sum(func.length(requests.c.result)), 0))
                    .where(requests.c.batch_seq == seq)
                    .group_by(requests.c.state)
                ).all()
                sizes = {True: 0, False: 0}
                for state, size in by_state:
                    sizes[state == SUCCEEDED] += int(size)
                linked: dict[str, str | None] = {"output_file_id": None, "error_file_id": None}
                for kind, size in (("output", sizes[True]), ("error", sizes[False])):
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


def _insert_openai(conn: Connection, record: OpenAIBatchRecord) -> None:
    values = msgspec.structs.asdict(record)
    del values["seq"], values["batch"]
    conn.execute(openai_batches.insert().values(**values))


def _with_engine_rows(conn: Connection, query: Any) -> list[OpenAIBatchRecord]:
    rows = [OpenAIBatchRecord(*row) for row in conn.execute(query).all()]
    seqs = [row.batch_seq for row in rows if row.batch_seq is not None]
    engine_rows = {
        row.seq: BatchRecord(**row._mapping)
        for row in (conn.execute(select(batches).where(batches.c.seq.in_(seqs))).all() if seqs else [])
    }
    return [
        msgspec.structs.replace(row, batch=engine_rows.get(row.batch_seq)) if row.batch_seq is not None else row
        for row in rows
    ]


def _batch_lines(conn: Connection, seq: int, kind: str) -> bytes | None:
    """An output (`kind` output) or error file's lines, read from its batch's requests in id order."""
    first, last = conn.execute(
        select(batches.c.first_request_id, batches.c.last_request_id).where(batches.c.seq == seq)
    ).one()
    if first is None or last is None:
        return None  # archived
    wanted = requests.c.state == SUCCEEDED if kind == "output" else requests.c.state != SUCCEEDED
    parts: list[bytes] = []
    if conn.dialect.name == "sqlite":
        # SQLite joins each chunk's lines itself, in C, scanning by id (as the Anthropic results do).
        sql = _SQLITE_OUTPUT_CHUNK if kind == "output" else _SQLITE_ERROR_CHUNK
        cursor = Store._driver_cursor(conn)
        for low in range(first, last + 1, _OUTCOME_CHUNK):
            cursor.execute(sql, (low, min(low + _OUTCOME_CHUNK - 1, last), seq))
            parts.append(cursor.fetchone()[0] or b"")
        return b"".join(parts)
    for low in range(first, last + 1, _OUTCOME_CHUNK):
        parts.extend(
            conn.execute(
                select(requests.c.result)
                .where(
                    requests.c.id.between(low, min(low + _OUTCOME_CHUNK - 1, last)), requests.c.batch_seq == seq, wanted
                )
                .order_by(requests.c.id)
            ).scalars()
        )
    return b"".join(parts)
