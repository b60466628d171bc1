"""Prefix-aware ordering: requests sharing a prompt prefix reach the backend back to back, and a batch
with other prefixes is not starved by one whose requests all share a prefix.

The scheduler runs in-process on a real SQLite store. Its backend is `OrderRecordingBackend`, a real
backend written here (not a mock of ours): it answers like the fake backend and notes the order in which
requests reach it, one at a time, as a model instance would take them.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from overnight import ids
from overnight.backends.fake import reply_to
from overnight.engine.prefix import DEFAULT_MAX_OVERTAKES, PrefixQueue, prefix_key
from overnight.protocol.messages import MessageCreateParams, text_of
from overnight.protocol.results import Message
from overnight.store import Store, open_store
from overnight.timestamps import now_micros
from tests.engine.helpers import running

SYSTEMS = {name: f"You are assistant {name}. " + "Follow the house rules. " * 50 for name in "ABCD"}


class OrderRecordingBackend:
    """Takes one request at a time (like one llama.cpp instance) and records (system, question) in order."""

    name = "recording"
    max_concurrency: int | None = 1
    max_concurrency_scope = "node"

    def __init__(self) -> None:
        self.order: list[tuple[str, str]] = []

    async def start(self) -> None:
        return None

    async def create_message(self, params: MessageCreateParams) -> Message:
        system = params.system if isinstance(params.system, str) else ""
        self.order.append((system, text_of(params.messages[-1].content)))
        await asyncio.sleep(0.002)  # a call takes a moment: the others queue for the one slot meanwhile
        return reply_to(params)

    async def count_tokens(self, params: MessageCreateParams) -> int:
        return 1

    async def aclose(self) -> None:
        return None


def request(system: str, question: str) -> bytes:
    return msgspec.json.encode(
        {"model": "m", "max_tokens": 5, "system": system, "messages": [{"role": "user", "content": question}]}
    )


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    store = open_store(f"sqlite:///{tmp_path / 'db.sqlite3'}")
    store.migrate()
    yield store
    store.close()


async def insert(store: Store, workspace: str, items: list[tuple[str, bytes]]) -> int:
    now = now_micros()
    record = await store.insert_batch(
        batch_id=ids.batch_id(),
        workspace=workspace,
        created_at=now,
        expires_at=now + 3_600_000_000,
        items=[(custom_id, msgspec.Raw(params)) for custom_id, params in items],
    )
    return record.seq


async def sent(backend: OrderRecordingBackend, count: int) -> None:
    deadline = time.monotonic() + 30
    while len(backend.order) < count:
        assert time.monotonic() < deadline, f"only {len(backend.order)} of {count} requests were sent"
        await asyncio.sleep(0.005)


def runs(keys: list[Any]) -> int:
    """How many maximal stretches of equal neighbours `keys` has."""
    return sum(1 for index, key in enumerate(keys) if index == 0 or keys[index - 1] != key)


async def test_requests_sharing_a_system_prompt_are_sent_back_to_back(store: Store) -> None:
    # Submitted interleaved (A1 B1 C1 D1 A2 ...), as a client that builds a batch question by question would.
    items = [(f"{name}-{n}", request(SYSTEMS[name], f"question {n}")) for n in range(6) for name in "ABCD"]
    await insert(store, "w", items)
    backend = OrderRecordingBackend()
    async with running(store, backend, concurrency=32):  # the whole batch fits one lease round
        await sent(backend, len(items))
    systems = [system for system, _ in backend.order]
    assert sorted(backend.order) == sorted((SYSTEMS[c[0]], f"question {c.split('-')[1]}") for c, _ in items)
    assert runs(systems) == 4, [system[len("You are assistant ")] for system in systems]
    # Within a prefix, requests keep their submitted order.
    for name in "ABCD":
        assert [q for s, q in backend.order if s == SYSTEMS[name]] == [f"question {n}" for n in range(6)]


async def test_a_batch_with_other_prefixes_is_not_starved_by_a_well_cached_one(store: Store) -> None:
    # Batch X (workspace 1): 400 requests on one system prompt, the best cache key there is; it fills the
    # scheduler's buffer. Then batch Y (workspace 2): 6 requests, each with a prefix of its own. Left to
    # grouping alone, X's run would go on while the feeder keeps adding X requests beside Y's.
    shared = [(f"x-{n}", request(SYSTEMS["A"], f"x {n}")) for n in range(400)]
    unique = [(f"y-{n}", request(f"Unique system prompt {n}.", f"y {n}")) for n in range(6)]
    await insert(store, "w1", shared)
    backend = OrderRecordingBackend()
    async with running(store, backend, concurrency=32) as scheduler:
        await sent(backend, 5)
        scheduler.batch_created(await insert(store, "w2", unique), ())
        y_created_at = len(backend.order)
        await sent(backend, len(shared) + len(unique))
    questions = [question for _, question in backend.order]
    last_y = max(index for index, question in enumerate(questions) if question.startswith("y "))
    # Each Y request waits for what was buffered before it (~2 x 32) and then for at most
    # `max_overtakes` X requests: far from all of X's 400.
    bound = y_created_at + 2 * 32 + len(unique) * (DEFAULT_MAX_OVERTAKES + 1) + 16
    assert last_y < bound < len(shared) - 100, (last_y, bound, questions)


def test_the_key_covers_model_system_tools_and_leading_turns() -> None:
    def params(**overrides: Any) -> bytes:
        body: dict[str, Any] = {
            "model": "m",
            "max_tokens": 5,
            "system": "S",
            "messages": [{"role": "user", "content": "q"}],
        }
        body.update(overrides)
        return msgspec.json.encode(body)

    base = prefix_key(params())
    assert prefix_key(params(max_tokens=9, messages=[{"role": "user", "content": "other q"}])) == base
    assert prefix_key(params(model="n")) != base
    assert prefix_key(params(system="T")) != base
    assert prefix_key(params(tools=[{"name": "t", "input_schema": {"type": "object"}}])) != base
    few_shot = [{"role": "user", "content": "ex"}, {"role": "assistant", "content": "ans"}]
    with_shots = prefix_key(params(messages=[*few_shot, {"role": "user", "content": "q1"}]))
    assert prefix_key(params(messages=[*few_shot, {"role": "user", "content": "q2"}])) == with_shots != base
    assert prefix_key(b"not json") != prefix_key(b"[1, 2]")  # unparseable params: a key of their own


def test_the_oldest_request_is_overtaken_by_other_batches_at_most_max_overtakes_times() -> None:
    # Items are (batch, key, n). Batch 1's key "a" runs; batch 2's request is the oldest after the first.
    queue: PrefixQueue[tuple[int, str, int]] = PrefixQueue(lambda i: i[1], lambda i: i[0], max_overtakes=2)
    for item in [(1, "a", 0), (2, "b", 0), (1, "a", 1), (1, "a", 2), (1, "a", 3), (1, "a", 4), (2, "b", 1)]:
        queue.put_nowait(item)
    taken = [queue.get_nowait() for _ in range(queue.qsize())]
    assert taken == [(1, "a", 0), (1, "a", 1), (1, "a", 2), (2, "b", 0), (2, "b", 1), (1, "a", 3), (1, "a", 4)]
    assert queue.empty()


def test_a_batch_own_requests_are_grouped_without_limit() -> None:
    queue: PrefixQueue[tuple[int, str, int]] = PrefixQueue(lambda i: i[1], lambda i: i[0], max_overtakes=1)
    for n in range(5):
        for key in "abc":
            queue.put_nowait((1, key, n))
    taken = [queue.get_nowait()[1] for _ in range(queue.qsize())]
    assert taken == ["a"] * 5 + ["b"] * 5 + ["c"] * 5


def test_putting_many_at_once_is_putting_them_one_by_one() -> None:
    items = [(batch, key, n) for n in range(4) for batch, key in ((1, "a"), (2, "b"), (1, "c"), (2, "a"))]
    one_by_one: PrefixQueue[tuple[int, str, int]] = PrefixQueue(lambda i: i[1], lambda i: i[0], max_overtakes=3)
    at_once: PrefixQueue[tuple[int, str, int]] = PrefixQueue(lambda i: i[1], lambda i: i[0], max_overtakes=3)
    for item in items[:5]:
        one_by_one.put_nowait(item)
    at_once.put_many(items[:5])
    for queue in (one_by_one, at_once):  # take some, then put the rest while some are still queued
        queue.get_nowait()
        queue.get_nowait()
    for item in items[5:]:
        one_by_one.put_nowait(item)
    at_once.put_many(items[5:])
    assert one_by_one.qsize() == at_once.qsize() == len(items) - 2
    assert [one_by_one.get_nowait() for _ in range(len(items) - 2)] == [
        at_once.get_nowait() for _ in range(len(items) - 2)
    ]


async def test_putting_many_wakes_as_many_waiting_takers_as_there_are_items() -> None:
    queue: PrefixQueue[int] = PrefixQueue(lambda i: i % 2, lambda i: 0)
    takers = [asyncio.create_task(queue.get()) for _ in range(3)]
    await asyncio.sleep(0)  # all three wait
    queue.put_many([10, 11])
    done, pending = await asyncio.wait(takers, timeout=1)
    assert sorted(task.result() for task in done) == [10, 11] and len(pending) == 1
    queue.put_many([12])
    assert await asyncio.wait_for(pending.pop(), 1) == 12
