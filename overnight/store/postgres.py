"""The PostgreSQL store: any number of nodes share one database.

Leasing is one statement per batch (`FOR UPDATE SKIP LOCKED` + `UPDATE … RETURNING`), so lessees on
many nodes never take the same request; ingest is a binary COPY; result chunks are fetched as binary
rows and joined here. Creates and cancels `NOTIFY overnight`, which `subscribe` turns into wake-ups.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from itertools import chain
from typing import Any, ClassVar

import msgspec
import psycopg
from psycopg import errors as pg_errors
from psycopg.copy import QueuedLibpqWriter
from psycopg.types.string import BytesBinaryDumper
from sqlalchemy import Connection, create_engine, text
from sqlalchemy import exc as sa_exc

from overnight.store.base import Store, writes
from overnight.store.feed import ItemFeed
from overnight.store.records import Completion, LeasedRequest

logger = logging.getLogger(__name__)

_CHANNEL = "overnight"
# Advisory lock keys (one namespace of our own, then what the lock guards).
_LOCK_NAMESPACE = 0x6F76
_LOCK_MIGRATE = 1
_LOCK_REQUEST_IDS = 2
_CONNECT_TIMEOUT_SECONDS = 5
_LEASE_SQL = """
WITH picked AS (
    SELECT id FROM requests
    WHERE batch_seq = %(seq)s AND state = 'pending'
      AND EXISTS (SELECT 1 FROM batches WHERE seq = %(seq)s AND status = 'in_progress')
    ORDER BY id LIMIT %(n)s
    FOR UPDATE SKIP LOCKED
)
UPDATE requests SET state = 'running', lease_owner = %(owner)s, lease_expires_at = %(until)s,
    attempt = requests.attempt + 1
FROM picked WHERE requests.id = picked.id
RETURNING requests.id, requests.attempt, requests.custom_id, requests.params
"""
_ROWS_PER_STATEMENT = 500


@functools.cache
def _complete_sql(rows: int) -> str:
    """The compare-and-set of `rows` outcomes, with PostgreSQL's own `$n` placeholders (for a
    RawCursor: psycopg then sends the text as it is, with no per-call parsing of a long query)."""
    values = ",".join(f"(${3 * n + 3}::bigint, ${3 * n + 4}::bytea, ${3 * n + 5}::int)" for n in range(rows))
    return (
        "UPDATE requests SET state = $1, result = done.line, lease_owner = NULL, lease_expires_at = NULL "
        f"FROM (VALUES {values}) AS done(id, line, attempt) "
        "WHERE requests.id = done.id AND requests.state = 'running' AND requests.lease_owner = $2 "
        "AND requests.attempt = done.attempt RETURNING requests.id"
    )


_RESULT_CHUNK_SQL = """
SELECT result, custom_id, state FROM requests
WHERE batch_seq = %s AND id BETWEEN %s AND %s AND state IN ('succeeded', 'errored', 'canceled', 'expired')
ORDER BY id
"""


def sqlalchemy_url(url: str) -> str:
    """`postgresql://…` (what users write) → the URL naming the psycopg 3 driver."""
    scheme, rest = url.split("://", 1)
    return f"postgresql+psycopg://{rest}" if scheme in ("postgresql", "postgres") else url


def driver_url(url: str) -> str:
    """A URL libpq understands (without SQLAlchemy's `+driver`)."""
    scheme, rest = url.split("://", 1)
    return f"postgresql://{rest}" if scheme.startswith("postgres") else url


class PostgresStore(Store):
    _writer_threads: ClassVar[int] = 4  # creates, cancels and the engine's writes need not queue behind each other
    streamed_inserts: ClassVar[int] = 2  # each holds a connection and a transaction while its body arrives
    add_counts_sql: ClassVar[str] = Store.add_counts_sql.replace("?", "%s")

    def __init__(self, url: str) -> None:
        engine = create_engine(
            sqlalchemy_url(url),
            pool_size=10,
            max_overflow=10,
            pool_pre_ping=True,  # a connection broken by a database restart is replaced, not used
            pool_timeout=10,
            connect_args={"connect_timeout": _CONNECT_TIMEOUT_SECONDS, "application_name": "overnight"},
        )
        super().__init__(engine)
        self._url = driver_url(url)
        self._listener: threading.Thread | None = None
        self._closing = threading.Event()

    def close(self) -> None:
        self._closing.set()
        if self._listener is not None:
            self._listener.join(timeout=5)
        super().close()

    def is_unavailable(self, exc: BaseException) -> bool:
        return super().is_unavailable(exc) or isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError)

    def is_race_lost(self, exc: BaseException) -> bool:
        cause = exc.orig if isinstance(exc, sa_exc.DBAPIError) else exc
        return isinstance(cause, pg_errors.DeadlockDetected | pg_errors.SerializationFailure)

    # --- transactions ---------------------------------------------------------------------------

    def _lock_for_migration(self, conn: Connection) -> None:
        conn.execute(text("SELECT pg_advisory_xact_lock(:a, :b)"), {"a": _LOCK_NAMESPACE, "b": _LOCK_MIGRATE})

    def _lock_workspace(self, conn: Connection, workspace: str) -> None:
        conn.execute(text("SELECT pg_advisory_xact_lock(:a, hashtext(:w))"), {"a": _LOCK_NAMESPACE, "w": workspace})

    def _notify(self, conn: Connection) -> None:
        conn.exec_driver_sql(f"NOTIFY {_CHANNEL}")  # delivered when the transaction commits

    # --- hot statements -------------------------------------------------------------------------

    def _insert_requests(self, conn: Connection, seq: int, items: Sequence[tuple[str, Any]]) -> tuple[int, int]:
        cursor = self._driver_cursor(conn)
        first_id, last_id = _reserve_ids(cursor, len(items))
        with _copy_requests(cursor) as copy:
            write_row = copy.write_row
            for request_id, (custom_id, params) in enumerate(items, first_id):
                write_row((request_id, seq, custom_id, params, "pending", 0))
        return first_id, last_id

    def _insert_streamed_requests(
        self, conn: Connection, seq: int, feed: ItemFeed, deadline: float, max_requests: int
    ) -> tuple[int, int]:
        cursor = self._driver_cursor(conn)
        # The count is known only at the end, and the copy must be one statement (so that the server
        # stores rows while later ones are still on their way): reserve the most there can be, and give
        # back what is left over while no other create has reserved ids after ours (the usual case).
        first_id, reserved_last = _reserve_ids(cursor, max_requests)
        next_id = first_id
        with _copy_requests(cursor) as copy:
            write_row = copy.write_row
            for items in feed.runs(deadline, max_requests):  # so never past the ids reserved
                for request_id, (custom_id, params) in enumerate(items, next_id):
                    write_row((request_id, seq, custom_id, params, "pending", 0))
                next_id += len(items)
        last_id = next_id - 1
        if last_id < reserved_last:
            with _ids_locked(cursor):
                cursor.execute("SELECT last_value FROM requests_id_seq")
                if cursor.fetchone()[0] == reserved_last:
                    cursor.execute("SELECT setval('requests_id_seq', %s)", (last_id,))
        return first_id, last_id

    @writes
    def lease_requests(self, quotas: Sequence[tuple[int, int]], *, owner: str, lease_until: int) -> list[LeasedRequest]:
        leased: list[LeasedRequest] = []
        with self.engine.begin() as conn:
            cursor = self._driver_cursor(conn)
            for seq, n in quotas:
                cursor.execute(_LEASE_SQL, {"seq": seq, "n": n, "owner": owner, "until": lease_until}, binary=True)
                rows = sorted(cursor.fetchall())
                leased.extend(LeasedRequest(row[0], seq, row[2], row[3], row[1]) for row in rows)
        return leased

    def _write_outcomes(self, conn: Connection, state: str, group: Sequence[Completion], owner: str) -> list[int]:
        # Multi-row VALUES, not arrays: each parameter is dumped by psycopg's C code, where a list
        # parameter goes through its Python array dumper, element by element, holding the GIL.
        cursor = psycopg.RawCursor(conn.connection.dbapi_connection)  # type: ignore[call-overload]
        written: list[int] = []
        for start in range(0, len(group), _ROWS_PER_STATEMENT):
            some = group[start : start + _ROWS_PER_STATEMENT]
            cursor.execute(
                _complete_sql(len(some)),
                [state, owner, *chain.from_iterable((d.request_id, d.line, d.attempt) for d in some)],
            )
            written.extend(row[0] for row in cursor.fetchall())
        return written

    def _result_chunk(self, seq: int, first_id: int, last_id: int) -> tuple[bytes, int]:
        with self.engine.connect() as conn:
            cursor = self._driver_cursor(conn)
            cursor.execute(_RESULT_CHUNK_SQL, (seq, first_id, last_id), binary=True)
            rows = cursor.fetchall()
        return (
            b"".join(
                result if result is not None else _derived_line(custom_id, state) for result, custom_id, state in rows
            ),
            len(rows),
        )

    # --- wake-ups across nodes ------------------------------------------------------------------

    def subscribe(self, on_change: Callable[[], None]) -> None:
        self._listener = threading.Thread(target=self._listen, args=(on_change,), name="store-listen", daemon=True)
        self._listener.start()

    def _listen(self, on_change: Callable[[], None]) -> None:
        """LISTEN on a connection of its own, reconnecting whenever it is lost (a notification sent
        meanwhile is missed, so each reconnect counts as a change too)."""
        while not self._closing.is_set():
            try:
                with psycopg.connect(self._url, autocommit=True, connect_timeout=_CONNECT_TIMEOUT_SECONDS) as conn:
                    conn.execute(f"LISTEN {_CHANNEL}")
                    on_change()
                    while not self._closing.is_set():
                        for _ in conn.notifies(timeout=1.0, stop_after=1):
                            on_change()
            except psycopg.Error as exc:
                logger.warning("listening for new batches failed (%s); polling until reconnected", exc)
                self._closing.wait(1.0)


def _reserve_ids(cursor: Any, count: int) -> tuple[int, int]:
    """The first and last of `count` consecutive request ids, taken from the sequence for one batch
    (its results are then a few range scans)."""
    with _ids_locked(cursor):
        cursor.execute("SELECT setval('requests_id_seq', nextval('requests_id_seq') + %s - 1)", (max(count, 1),))
        last_id: int = cursor.fetchone()[0]
    return last_id - max(count, 1) + 1, last_id


@contextmanager
def _ids_locked(cursor: Any) -> Iterator[None]:
    """Hold the lock every id reservation takes: short, taken only by creates, released at once (not at
    commit)."""
    cursor.execute("SELECT pg_advisory_lock(%s, %s)", (_LOCK_NAMESPACE, _LOCK_REQUEST_IDS))
    try:
        yield
    finally:
        cursor.execute("SELECT pg_advisory_unlock(%s, %s)", (_LOCK_NAMESPACE, _LOCK_REQUEST_IDS))


@contextmanager
def _copy_requests(cursor: Any) -> Iterator[psycopg.Copy]:
    """A binary COPY of pending requests (id, batch_seq, custom_id, params, state, attempt)."""
    # The queued writer sends on a thread of its own: encoding rows here overlaps with sending them and
    # with the server storing them.
    with cursor.copy(
        "COPY requests (id, batch_seq, custom_id, params, state, attempt) FROM STDIN (FORMAT BINARY)",
        writer=QueuedLibpqWriter(cursor),
    ) as copy:
        copy.set_types(["int8", "int8", "text", "bytea", "text", "int4"])
        yield copy


def _derived_line(custom_id: str, state: str) -> bytes:
    """A canceled or expired request's line: nothing but its custom_id and state ([A-Za-z0-9_-]: no
    escaping needed)."""
    return b'{"custom_id":"%s","result":{"type":"%s"}}\n' % (custom_id.encode(), state.encode())


class _RawDumper(BytesBinaryDumper):
    """Params arrive as msgspec.Raw views of the create body: sent as bytea without a copy to bytes."""


psycopg.adapters.register_dumper(msgspec.Raw, _RawDumper)
