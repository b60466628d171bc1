"""Time as integer microseconds since the epoch (exact, portable across SQLite and PostgreSQL)."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

MICROS = 1_000_000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def now_micros() -> int:
    return time.time_ns() // 1000


def to_rfc3339(micros: int | None) -> str | None:
    """RFC 3339 in UTC with microseconds and a `Z` suffix, as the API writes timestamps."""
    if micros is None:
        return None
    return (_EPOCH + timedelta(microseconds=micros)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
