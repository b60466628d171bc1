"""Connecting: the SQLAlchemy engine with SQLite tuned for one writer and many readers."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, create_engine, event


def connect(url: str) -> Engine:
    is_sqlite = url.startswith("sqlite")
    engine = create_engine(url, pool_pre_ping=not is_sqlite, pool_size=8, max_overflow=8)
    if is_sqlite:
        event.listen(engine, "connect", _tune_sqlite)
    return engine


def _tune_sqlite(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # WAL: readers never block the writer; NORMAL sync is durable across process crashes in WAL mode.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA cache_size=-65536")
    cursor.close()
