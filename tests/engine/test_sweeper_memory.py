"""The sweeper gives memory back once no batch is left to run and the process has grown and stopped
growing; never while a batch is unfinished. On a real SQLite store, with the process really grown (a
96 MiB buffer): what shows a release is the store's pool, whose idle connections it closes."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from overnight.engine.sweeper import Sweeper
from overnight.store import open_store
from overnight.store.sqlite import SQLiteStore

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/statm")

GROWTH = 96 << 20  # past the 64 MiB the sweeper waits for


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    store = open_store(f"sqlite:///{tmp_path / 'db.sqlite3'}")
    assert isinstance(store, SQLiteStore)
    store.migrate()
    yield store
    store.close()


def idle_connections(store: SQLiteStore) -> int:
    return int(store.engine.pool.checkedin())  # type: ignore[attr-defined]


async def test_memory_is_given_back_once_the_process_has_grown_and_stopped_growing(store: SQLiteStore) -> None:
    sweeper = Sweeper(store, None, interval_seconds=1.0, retention_micros=10**12)
    await sweeper.sweep_once()  # the first look gives back what came before it
    assert idle_connections(store) == 0
    await sweeper.sweep_once()  # not grown since: its own connections stay open
    assert idle_connections(store) > 0
    grown = bytearray(GROWTH)  # zero-filled: resident at once
    await sweeper.sweep_once()  # grown, but since the last look: still growing, maybe a create under way
    assert idle_connections(store) > 0
    await sweeper.sweep_once()  # grown and no longer growing
    assert idle_connections(store) == 0
    await sweeper.sweep_once()
    assert idle_connections(store) > 0  # and then not again until it grows again
    assert len(grown) == GROWTH


async def test_nothing_is_given_back_while_a_batch_is_unfinished(store: SQLiteStore) -> None:
    sweeper = Sweeper(store, None, interval_seconds=1.0, retention_micros=10**12)
    await sweeper.sweep_once()
    await store.insert_batch(
        batch_id="msgbatch_a", workspace="w", created_at=1, expires_at=2**60, items=[("r0", b'{"model":"m"}')]
    )
    grown = bytearray(GROWTH)
    for _ in range(3):
        await sweeper.sweep_once()
        assert idle_connections(store) > 0
    assert len(grown) == GROWTH
