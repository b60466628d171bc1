"""Results wait in memory for the writer while the database is slow, bounded in bytes as well as in number:
the workers stop running requests once the unwritten lines take the limit, and go on as they are written.

A real SQLite store and the fake backend, in-process; the store's `complete_requests` is wrapped to take
0.1 s longer (a slow or distant database, which a local SQLite file cannot be made into) and to record
the bytes of each group the writer hands it."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from overnight.backends.fake import FakeBackend
from overnight.engine import scheduler as scheduler_module
from overnight.store import Completed, Completion, open_store
from tests.engine.helpers import running

COUNT = 300
CONCURRENCY = 4
TEXT = "x" * 10_000  # echoed by the fake backend: result lines of about 10 KB


async def test_unwritten_results_are_bounded_in_bytes(tmp_path: Path, monkeypatch: Any) -> None:
    limit = 100_000
    monkeypatch.setattr(scheduler_module, "_MAX_UNWRITTEN_BYTES", limit)
    monkeypatch.setattr(scheduler_module, "_FLUSH_BYTES", limit // 4)
    store = open_store(f"sqlite:///{tmp_path / 'db.sqlite3'}")
    store.migrate()
    groups: list[int] = []
    write = store.complete_requests

    async def slow_write(completions: Sequence[Completion], *, owner: str, now: int) -> Completed:
        groups.append(sum(len(done.line or b"") for done in completions))
        await asyncio.sleep(0.1)
        return await write(completions, owner=owner, now=now)

    store.complete_requests = slow_write  # type: ignore[method-assign]
    params = {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": TEXT}]}
    items = [(f"r{i}", json.dumps(params).encode()) for i in range(COUNT)]
    batch = await store.insert_batch(batch_id="msgbatch_u", workspace="w", created_at=1, expires_at=2**60, items=items)
    async with running(store, FakeBackend(), concurrency=CONCURRENCY):
        deadline = time.monotonic() + 60
        while (record := await store.get_batch("w", batch.id)) is not None and record.status != "ended":
            assert time.monotonic() < deadline, record
            await asyncio.sleep(0.05)
    store.close()
    assert record is not None and record.succeeded == COUNT
    line = record.succeeded_bytes // COUNT  # about 10 KB
    # At most the limit, and one more line from each worker that was already running when it was reached.
    assert max(groups) <= limit + CONCURRENCY * line, groups
    assert sum(groups) == record.succeeded_bytes
