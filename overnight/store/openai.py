"""The OpenAI Files and Batches APIs' rows: files (bytes in the database, so every node sees them) and
what an OpenAI batch adds to the engine's `batches` row. Portable SQL, run on the store's threads."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import msgspec
from sqlalchemy import Connection, select, update

from overnight.store.base import Store, UnknownCursorError
from overnight.store.records import OPENAI, BatchRecord
from overnight.store.tables import batches, files, openai_batches, requests

T = TypeVar("T")
_OUTCOME_CHUNK = 5000


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


class NewFile(msgspec.Struct, frozen=True):
    id: str
    filename: str
    content: bytes


_FILE_COLUMNS = [files.c[name] for name in FileRecord.__struct_fields__]
_OPENAI_COLUMNS = [openai_batches.c[name] for name in OpenAIBatchRecord.__struct_fields__ if name != "batch"]


class OpenAIStore:
    """The OpenAI APIs' operations on a `Store`'s database, on its writer and reader threads."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.engine = store.engine

    async def _write(self, call: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.store._writer, functools.partial(call, *args))

    async def _read(self, call: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.store._reader, functools.partial(call, *args))

    # --- files --------------------------------------------------------------------------------

    async def insert_file(self, record: FileRecord, content: bytes) -> FileRecord:
        def insert() -> FileRecord:
            with self.engine.begin() as conn:
                values = msgspec.structs.asdict(record)
                del values["seq"]
                seq = conn.execute(files.insert().values(**values, content=content).returning(files.c.seq)).scalar_one()
            return msgspec.structs.replace(record, seq=seq)

        return await self._write(insert)

    async def get_file(self, workspace: str, file_id: str) -> FileRecord | None:
        def get() -> FileRecord | None:
            with self.engine.connect() as conn:
                row = conn.execute(
                    select(*_FILE_COLUMNS).where(files.c.id == file_id, files.c.workspace == workspace)
                ).one_or_none()
            return None if row is None else FileRecord(*row)

        return await self._read(get)

    async def file_content(self, workspace: str, file_id: str) -> bytes | None:
        def get() -> bytes | None:
            with self.engine.connect() as conn:
                return conn.execute(
                    select(files.c.content).where(files.c.id == file_id, files.c.workspace == workspace)
                ).scalar_one_or_none()

        return await self._read(get)

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

        return await self._read(page)

    async def delete_file(self, workspace: str, file_id: str) -> bool:
        def delete() -> bool:
            with self.engine.begin() as conn:
                return bool(
                    conn.execute(files.delete().where(files.c.id == file_id, files.c.workspace == workspace)).rowcount
                )

        return await self._write(delete)

    # --- batches ------------------------------------------------------------------------------

    async def insert_failed_batch(self, record: OpenAIBatchRecord) -> OpenAIBatchRecord:
        """A batch whose input file failed validation: never run, only its errors kept."""

        def insert() -> OpenAIBatchRecord:
            with self.engine.begin() as conn:
                _insert_openai(conn, record)
            return record

        return await self._write(insert)

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
                    conn, select(*_OPENAI_COLUMNS).where(
                        openai_batches.c.id == batch_id, openai_batches.c.workspace == workspace
                    )
                )
            return rows[0] if rows else None

        return await self._read(get)

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

        return await self._read(page)

    async def outcome_lines(self, batch: BatchRecord, render: Callable[[str, str], bytes]) -> list[tuple[str, bytes]]:
        """(state, line) of every request of an ended batch; `render(custom_id, state)` makes the lines
        of requests that never ran (canceled, expired)."""

        def read() -> list[tuple[str, bytes]]:
            out: list[tuple[str, bytes]] = []
            first, last = batch.first_request_id, batch.last_request_id
            if first is None or last is None:
                return out
            with self.engine.connect() as conn:
                for low in range(first, last + 1, _OUTCOME_CHUNK):
                    rows = conn.execute(
                        select(requests.c.custom_id, requests.c.state, requests.c.result)
                        .where(requests.c.id.between(low, min(low + _OUTCOME_CHUNK - 1, last)),
                               requests.c.batch_seq == batch.seq)
                        .order_by(requests.c.id)
                    ).all()
                    out.extend((state, result if result is not None else render(custom_id, state))
                               for custom_id, state, result in rows)
            return out

        return await self._read(read)

    async def finalize(
        self, record: OpenAIBatchRecord, output: FileRecord | None, output_content: bytes,
        error: FileRecord | None, error_content: bytes, now: int,
    ) -> bool:
        """Store the output and error files of an ended batch and link them, exactly once (False: another
        call or node did it first, and nothing was written)."""

        def write() -> bool:
            with self.engine.begin() as conn:
                self.store._begin_write(conn)
                moved = conn.execute(
                    update(openai_batches)
                    .where(openai_batches.c.seq == record.seq, openai_batches.c.finalized_at.is_(None))
                    .values(finalized_at=now, output_file_id=output.id if output else None,
                            error_file_id=error.id if error else None)
                ).rowcount
                if not moved:
                    conn.rollback()
                    return False
                for file, content in ((output, output_content), (error, error_content)):
                    if file is not None:
                        values = msgspec.structs.asdict(file)
                        del values["seq"]
                        conn.execute(files.insert().values(**values, content=content))
                return True

        return await self._write(write)


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
