"""All SQL lives here: schema, migrations and one store interface with an implementation per database."""

from overnight.store.base import (
    QueueFullError,
    ResultsChangedError,
    Store,
    StoreUnavailableError,
    UnknownCursorError,
    UnsupportedDatabaseError,
)
from overnight.store.records import BatchRecord, Completed, Completion, LeasedRequest, Usage


def is_postgres(url: str) -> bool:
    return url.split(":", 1)[0].split("+", 1)[0] in ("postgresql", "postgres")


def is_supported(url: str) -> bool:
    """Whether the store can keep batches at this database URL."""
    return url.startswith("sqlite") or is_postgres(url)


def open_store(url: str) -> Store:
    """The store for a database URL: `sqlite:///PATH` or `postgresql://USER[:PASSWORD]@HOST:PORT/DB`."""
    if url.startswith("sqlite"):
        from overnight.store.sqlite import SQLiteStore

        return SQLiteStore(url)
    if is_postgres(url):
        from overnight.store.postgres import PostgresStore

        return PostgresStore(url)
    raise UnsupportedDatabaseError(
        f"unsupported database {url.split(':')[0]!r}: use sqlite:///PATH or postgresql://USER@HOST:PORT/DB"
    )


__all__ = [
    "BatchRecord",
    "Completed",
    "Completion",
    "LeasedRequest",
    "QueueFullError",
    "ResultsChangedError",
    "Store",
    "StoreUnavailableError",
    "UnknownCursorError",
    "UnsupportedDatabaseError",
    "Usage",
    "is_postgres",
    "is_supported",
    "open_store",
]
