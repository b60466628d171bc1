"""Connecting: the SQLAlchemy engine with SQLite tuned for one writer and many readers."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, create_engine, event

# Enough for the writer, the readers and the checkpointer threads the store runs.
_POOL_SIZE = 8


def is_supported(url: str) -> bool:
    """Whether the store can keep batches at this database URL (SQLite only, for now: the hot
    statements are SQLite's; PostgreSQL needs its own versions of them and SKIP LOCKED leasing)."""
    return url.startswith("sqlite")


def connect(url: str) -> Engine:
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
    cursor.execute("PRAGMA cache_size=-16384")  # 16 MiB per connection
    cursor.close()
