"""The validator in-process, on a real SQLite store, where a transaction must be made to lose a race."""

from __future__ import annotations

import asyncio
import io
import json
from pathlib import Path
from typing import Any

from overnight.config import Settings
from overnight.openai_api.validation import Validator
from overnight.store import Store, open_store
from overnight.store.openai import FileRecord, OpenAIBatchRecord, OpenAIStore
from overnight.store.records import BatchRecord
from tests.openai.helpers import MODEL


class RaceLost(Exception):
    """Stands for a PostgreSQL deadlock or serialization failure, after which the store runs the
    transaction again."""


def input_lines(count: int) -> bytes:
    return b"".join(
        json.dumps(
            {
                "custom_id": f"r{number}",
                "method": "POST",
                "url": "/v1/chat/completions",
                "body": {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]},
            }
        ).encode()
        + b"\n"
        for number in range(count)
    )


async def test_a_transaction_that_lost_a_race_checks_the_file_afresh(tmp_path: Path) -> None:
    # SQLite never loses such a race, so this store is told that its first insert did (a mock where a
    # real deadlock cannot be set up on purpose). The retry must not find the file's custom_ids already
    # seen by the first try and call them duplicates.
    store: Store = open_store(f"sqlite:///{tmp_path / 'db.sqlite3'}")
    store.migrate()
    try:
        openai = OpenAIStore(store)
        content = input_lines(3)
        file = await openai.insert_file(
            FileRecord(0, "file-a", "w", "batch", "in.jsonl", len(content), 1, None), io.BytesIO(content)
        )
        await openai.insert_batch(
            OpenAIBatchRecord(
                id="batch_a",
                workspace="w",
                endpoint="/v1/chat/completions",
                input_file_id=file.id,
                completion_window="24h",
                created_at=1,
                expires_at=2**60,
            )
        )
        inserts = 0
        insert = store._insert_request_runs

        def first_insert_loses(conn: Any, seq: int, runs: Any) -> tuple[int, int | None, int | None]:
            nonlocal inserts
            inserts += 1
            if inserts == 1:
                next(iter(runs))  # the file's first lines were read and checked
                raise RaceLost
            return insert(conn, seq, runs)

        store._insert_request_runs = first_insert_loses  # type: ignore[method-assign]
        store.is_race_lost = lambda exc: isinstance(exc, RaceLost)  # type: ignore[method-assign]
        started: list[BatchRecord] = []
        validator = Validator(openai, Settings(), model_is_served=lambda model: True, on_started=started.append)
        await validator.start()
        try:
            for _ in range(200):
                record = await openai.get_batch("w", "batch_a")
                assert record is not None
                if started or record.failed_at is not None:
                    break
                await asyncio.sleep(0.05)
        finally:
            await validator.stop()
        assert inserts == 2
        assert record.errors is None and record.failed_at is None
        assert len(started) == 1 and started[0].total == 3
    finally:
        store.close()
