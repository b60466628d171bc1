"""The OpenAI store's guarantees on real SQLite and PostgreSQL: files in chunks read back whole, a
validating batch claimed by one validator at a time, enqueued at most once (a stale or cancelled claim
changes nothing), and a claim that lapsed taken over."""

from __future__ import annotations

import asyncio
import io
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from overnight.store import Store
from overnight.store.openai import (
    _HANDOFF_DEPTH,
    FileRecord,
    InputFileGoneError,
    OpenAIBatchRecord,
    OpenAIStore,
    _ahead,
)
from overnight.store.tables import FILE_CHUNK_BYTES

FAR_FUTURE = 2**60


async def add_file(openai: OpenAIStore, content: bytes, file_id: str = "file-a") -> FileRecord:
    record = FileRecord(0, file_id, "w", "batch", "in.jsonl", len(content), 1, None)
    return await openai.insert_file(record, io.BytesIO(content))


async def add_batch(openai: OpenAIStore, batch_id: str, file_id: str = "file-a") -> OpenAIBatchRecord:
    return await openai.insert_batch(
        OpenAIBatchRecord(
            id=batch_id,
            workspace="w",
            endpoint="/v1/chat/completions",
            input_file_id=file_id,
            completion_window="24h",
            created_at=1,
            expires_at=FAR_FUTURE,
        )
    )


def line_groups(chunks: Iterator[bytes]) -> Iterator[Sequence[tuple[str, Any]]]:
    for number, raw in enumerate(b"".join(chunks).splitlines()):
        yield [(f"r{number}", raw)]


async def test_a_file_of_many_chunks_reads_back_whole(store: Store) -> None:
    openai = OpenAIStore(store)
    content = bytes(range(256)) * (3 * FILE_CHUNK_BYTES // 256 + 7)
    await add_file(openai, content)
    found = await openai.file_content("w", "file-a")
    assert found is not None
    record, chunks = found
    assert record.bytes == len(content)
    assert b"".join([chunk async for chunk in chunks]) == content
    assert await openai.file_content("elsewhere", "file-a") is None


async def test_one_claim_at_a_time_and_a_stale_claim_enqueues_nothing(store: Store) -> None:
    openai = OpenAIStore(store)
    await add_file(openai, b"{}\n{}\n")
    batch = await add_batch(openai, "batch_a")
    claims = await asyncio.gather(*(openai.claim_validation(owner=f"v{n}", now=10, lease_until=20) for n in range(4)))
    held = [claim for claim in claims if claim is not None]
    assert len(held) == 1 and held[0].seq == batch.seq
    winner = next(f"v{n}" for n, claim in enumerate(claims) if claim is not None)
    assert not await openai.renew_validation(batch.seq, owner="someone-else", lease_until=30)

    # The claim lapses; another validator takes it: the first one's enqueue is refused.
    taken = await openai.claim_validation(owner="late", now=25, lease_until=40)
    assert taken is not None and taken.seq == batch.seq
    assert not await openai.renew_validation(batch.seq, owner=winner, lease_until=50)
    stale = await openai.start_validated(
        held[0], owner=winner, verdict=lambda: (2, None), item_groups=line_groups, now=26, max_queued_requests=0
    )
    assert stale is None
    started = await openai.start_validated(
        taken, owner="late", verdict=lambda: (2, None), item_groups=line_groups, now=26, max_queued_requests=0
    )
    assert started is not None and started.total == 2 and started.created_at == 26
    again = await openai.start_validated(
        taken, owner="late", verdict=lambda: (2, None), item_groups=line_groups, now=27, max_queued_requests=0
    )
    assert again is None  # in progress now: never twice
    record = await openai.get_batch("w", "batch_a")
    assert record is not None and record.batch is not None and record.batch.seq == started.seq
    assert await openai.claim_validation(owner="v0", now=100, lease_until=200) is None


async def test_cancel_beats_a_claim_and_a_gone_file_is_reported(store: Store) -> None:
    openai = OpenAIStore(store)
    await add_file(openai, b"{}\n")
    first = await add_batch(openai, "batch_a")
    claim = await openai.claim_validation(owner="v", now=10, lease_until=FAR_FUTURE)
    assert claim is not None and claim.seq == first.seq
    assert await openai.cancel_validating(first.seq, 11)
    assert not await openai.cancel_validating(first.seq, 12)
    assert (
        await openai.start_validated(
            claim, owner="v", verdict=lambda: (1, None), item_groups=line_groups, now=13, max_queued_requests=0
        )
        is None
    )
    assert not await openai.fail_validation(first.seq, owner="v", errors=b"[]", now=13)

    await add_batch(openai, "batch_b")
    claim = await openai.claim_validation(owner="v", now=10, lease_until=FAR_FUTURE)
    assert claim is not None and claim.id == "batch_b"
    assert await openai.delete_file("w", "file-a")
    with pytest.raises(InputFileGoneError):
        await openai.start_validated(
            claim, owner="v", verdict=lambda: (1, None), item_groups=line_groups, now=13, max_queued_requests=0
        )
    assert await openai.fail_validation(claim.seq, owner="v", errors=b"[]", now=14)
    failed = await openai.get_batch("w", "batch_b")
    assert failed is not None and failed.failed_at == 14 and failed.batch is None


async def claimed_two_line_batch(openai: OpenAIStore) -> OpenAIBatchRecord:
    await add_file(openai, b'{"a": 1}\n{"b": 2}\n')
    await add_batch(openai, "batch_a")
    claim = await openai.claim_validation(owner="v", now=10, lease_until=FAR_FUTURE)
    assert claim is not None
    return claim


async def test_the_enqueue_commits_only_once_the_verdict_is_in(store: Store) -> None:
    openai = OpenAIStore(store)
    claim = await claimed_two_line_batch(openai)
    seen_while_waiting: list[int] = []

    class FileInvalid(Exception):
        pass

    def refused() -> tuple[int, str | None]:
        # The requests are in (uncommitted) by now; another connection sees none of them.
        with store.engine.connect() as conn:
            seen_while_waiting.append(conn.exec_driver_sql("SELECT count(*) FROM requests").scalar_one())
        raise FileInvalid

    with pytest.raises(FileInvalid):
        await openai.start_validated(
            claim, owner="v", verdict=refused, item_groups=line_groups, now=11, max_queued_requests=0
        )
    assert seen_while_waiting == [0]
    record = await openai.get_batch("w", "batch_a")
    assert record is not None and record.batch is None and record.batch_seq is None  # nothing stored
    with store.engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM requests").scalar_one() == 0

    # The claim still holds: the same validator can enqueue it (or fail it) now.
    started = await openai.start_validated(
        claim, owner="v", verdict=lambda: (2, "m"), item_groups=line_groups, now=12, max_queued_requests=0
    )
    assert started is not None and (started.total, started.processing) == (2, 2)
    record = await openai.get_batch("w", "batch_a")
    assert record is not None and record.model == "m" and record.batch is not None


async def test_a_verdict_that_disagrees_with_the_lines_read_stores_nothing(store: Store) -> None:
    openai = OpenAIStore(store)
    claim = await claimed_two_line_batch(openai)
    with pytest.raises(RuntimeError, match="2 requests enqueued, 3 validated"):
        await openai.start_validated(
            claim, owner="v", verdict=lambda: (3, "m"), item_groups=line_groups, now=11, max_queued_requests=0
        )
    record = await openai.get_batch("w", "batch_a")
    assert record is not None and record.batch is None


def numbered_lines(count: int) -> bytes:
    """`count` lines of ~100 bytes: a few thousand to a file chunk."""
    return b"".join(b'{"n": %d, "text": "%s"}\n' % (number, b"x" * 80) for number in range(count))


def chunk_groups(chunks: Iterator[bytes]) -> Iterator[Sequence[tuple[str, Any]]]:
    """A group per chunk, of the lines it completes (as the validator's `checked_requests` gives them)."""
    rest = b""
    number = 0
    for chunk in chunks:
        *lines, rest = (rest + chunk).split(b"\n")
        group = []
        for raw in lines:
            group.append((f"r{number}", raw))
            number += 1
        yield group


async def test_a_big_file_is_enqueued_whole_and_in_order(store: Store) -> None:
    # The lines are checked on another thread a few runs ahead of the insert: every one arrives, once,
    # in the file's order, across many chunks and handoffs.
    openai = OpenAIStore(store)
    count = 40_000
    content = numbered_lines(count)
    assert len(content) > 2 * FILE_CHUNK_BYTES
    await add_file(openai, content)
    await add_batch(openai, "batch_a")
    claim = await openai.claim_validation(owner="v", now=10, lease_until=FAR_FUTURE)
    assert claim is not None
    started = await openai.start_validated(
        claim, owner="v", verdict=lambda: (count, "m"), item_groups=chunk_groups, now=11, max_queued_requests=0
    )
    assert started is not None and started.total == count
    with store.engine.connect() as conn:
        rows = conn.exec_driver_sql(
            f"SELECT id, custom_id, params FROM requests WHERE batch_seq = {started.seq} ORDER BY id"
        ).all()
    assert [row.custom_id for row in rows] == [f"r{number}" for number in range(count)]
    assert [bytes(row.params) for row in rows] == content.splitlines()
    assert (rows[0].id, rows[-1].id) == (started.first_request_id, started.last_request_id)


async def test_an_insert_that_fails_stops_the_reading_ahead(store: Store) -> None:
    # The second line repeats the first one's custom_id: the insert fails on the first run, while the
    # thread reading ahead is at most a few runs further. It is stopped and waited for (its connection
    # closed), nothing is stored, and the claim still holds.
    openai = OpenAIStore(store)
    count = 100_000
    await add_file(openai, numbered_lines(count))
    await add_batch(openai, "batch_a")
    claim = await openai.claim_validation(owner="v", now=10, lease_until=FAR_FUTURE)
    assert claim is not None
    given = 0
    closed = False

    def duplicated(chunks: Iterator[bytes]) -> Iterator[Sequence[tuple[str, Any]]]:
        nonlocal given, closed
        try:
            for group in chunk_groups(chunks):
                if given == 0:
                    group[1] = (group[0][0], group[1][1])
                given += len(group)
                yield group
        finally:
            closed = True

    with pytest.raises(Exception, match=r"(?i)unique"):
        await openai.start_validated(
            claim, owner="v", verdict=lambda: (count, "m"), item_groups=duplicated, now=11, max_queued_requests=0
        )
    assert closed
    assert 0 < given < count // 2
    with store.engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM requests").scalar_one() == 0
    started = await openai.start_validated(
        claim, owner="v", verdict=lambda: (count, "m"), item_groups=chunk_groups, now=12, max_queued_requests=0
    )
    assert started is not None and started.total == count


async def test_what_reading_the_file_raises_reaches_the_caller(store: Store) -> None:
    openai = OpenAIStore(store)
    await add_file(openai, numbered_lines(30_000))
    await add_batch(openai, "batch_a")
    claim = await openai.claim_validation(owner="v", now=10, lease_until=FAR_FUTURE)
    assert claim is not None

    class Unreadable(Exception):
        pass

    def failing(chunks: Iterator[bytes]) -> Iterator[Sequence[tuple[str, Any]]]:
        for number, group in enumerate(chunk_groups(chunks)):
            if number == 5:
                raise Unreadable
            yield group

    with pytest.raises(Unreadable):
        await openai.start_validated(
            claim, owner="v", verdict=lambda: (30_000, "m"), item_groups=failing, now=11, max_queued_requests=0
        )
    with store.engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM requests").scalar_one() == 0


def test_the_reading_ahead_is_bounded_and_stops_with_the_block() -> None:
    # `_ahead` itself: the producer gets at most its depth (plus the item in hand and the one it is
    # making) ahead of a consumer that takes its time, and stops once the block is left.
    made = 0
    closed = threading.Event()

    def produce() -> Iterator[int]:
        nonlocal made
        try:
            for number in range(1000):
                made += 1
                yield number
        finally:
            closed.set()

    with ThreadPoolExecutor(1) as pool:
        with _ahead(pool, produce) as items:
            assert next(items) == 0
            time.sleep(0.3)  # the producer runs as far ahead as it may
            assert made <= 1 + _HANDOFF_DEPTH + 1
            assert next(items) == 1
        assert closed.is_set() and made < 10

        def broken() -> Iterator[int]:
            yield 1
            raise KeyError("unreadable")

        with pytest.raises(KeyError, match="unreadable"), _ahead(pool, broken) as items:
            assert list(items) == [1]
