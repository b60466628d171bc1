"""Webhook deliveries in the store, on real SQLite files and real PostgreSQL: every path that ends a batch
queues its event in the same transaction, exactly once, and leases never hand one delivery to two senders."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from overnight.store import BatchRecord, Completion, Store, open_store
from overnight.store.records import SUCCEEDED, LeasedDelivery, WebhookEvent
from overnight.store.tables import webhook_deliveries
from overnight.webhooks.config import WebhookTarget
from overnight.webhooks.events import BatchEndedEvents

FAR_FUTURE = 2**60
EXPIRES = 4_000_000_000 * 1_000_000  # in 2096: late, and still a date
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[Store]:
    store = open_store(database_url)
    store.migrate()
    # Workspace "w" has a webhook; "quiet" has none.
    store.on_batch_ended = BatchEndedEvents({"w": WebhookTarget("http://127.0.0.1:9/hook", SECRET)}, "http://h")
    yield store
    store.close()


async def make_batch(store: Store, n: int, *, batch_id: str = "msgbatch_a", workspace: str = "w") -> BatchRecord:
    items = [(f"r{i}", b'{"model":"m"}') for i in range(n)]
    return await store.insert_batch(
        batch_id=batch_id, workspace=workspace, created_at=1_000, expires_at=EXPIRES, items=items
    )


async def complete_all(store: Store, record: BatchRecord, now: int) -> None:
    leased = await store.lease_requests([(record.seq, record.total)], owner="me", lease_until=FAR_FUTURE)
    done = [Completion(i.id, i.batch_seq, i.attempt, SUCCEEDED, b"ok\n") for i in leased]
    await store.complete_requests(done, owner="me", now=now)


def deliveries(store: Store) -> list[dict[str, Any]]:
    with store.engine.connect() as conn:
        rows = conn.execute(select(webhook_deliveries).order_by(webhook_deliveries.c.id)).all()
    return [dict(row._mapping) for row in rows]


async def test_completion_queues_one_event_with_the_batch_as_it_ended(store: Store) -> None:
    record = await make_batch(store, 3)
    await complete_all(store, record, now=5_000_000)
    await complete_all(store, record, now=6_000_000)  # nothing left: no second end, no second event
    [row] = deliveries(store)
    assert (row["batch_id"], row["workspace"], row["status"], row["attempts"]) == (record.id, "w", "pending", 0)
    assert row["created_at"] == row["next_attempt_at"] == 5_000_000
    event = json.loads(row["body"])
    assert event["type"] == "message_batch.ended"
    assert event["id"] == row["event_id"] and event["id"].startswith("evt_")
    assert event["created_at"] == "1970-01-01T00:00:05.000000Z"
    data = event["data"]
    assert (data["id"], data["processing_status"], data["ended_at"]) == (record.id, "ended", event["created_at"])
    assert data["request_counts"] == {"processing": 0, "succeeded": 3, "errored": 0, "canceled": 0, "expired": 0}
    assert data["results_url"] == f"http://h/v1/messages/batches/{record.id}/results"


async def test_workspace_without_webhook_queues_nothing(store: Store) -> None:
    record = await make_batch(store, 2, workspace="quiet")
    await complete_all(store, record, now=5)
    assert (await store.get_batch("quiet", record.id)).status == "ended"  # type: ignore[union-attr]
    assert deliveries(store) == []


async def test_cancel_that_ends_at_once_queues_the_event(store: Store) -> None:
    record = await make_batch(store, 4)
    await store.cancel_batch(record.seq, 7)
    [row] = deliveries(store)
    data = json.loads(row["body"])["data"]
    assert (data["processing_status"], data["request_counts"]["canceled"]) == ("ended", 4)
    assert data["cancel_initiated_at"] is not None


async def test_canceling_batch_handed_back_at_shutdown_queues_the_event(store: Store) -> None:
    record = await make_batch(store, 2)
    leased = await store.lease_requests([(record.seq, 2)], owner="me", lease_until=FAR_FUTURE)
    await store.cancel_batch(record.seq, 3)
    assert deliveries(store) == []  # still canceling: two requests are running
    await store.release_requests([i.id for i in leased], owner="me", started=True, now=9)
    [row] = deliveries(store)
    assert json.loads(row["body"])["data"]["request_counts"]["canceled"] == 2


async def test_expiry_queues_the_event_once(store: Store) -> None:
    record = await make_batch(store, 2)
    await store.expire_batches(now=EXPIRES)
    await store.expire_batches(now=EXPIRES + 1)
    [row] = deliveries(store)
    assert row["batch_id"] == record.id
    assert json.loads(row["body"])["data"]["request_counts"]["expired"] == 2


async def test_event_and_end_commit_together(store: Store) -> None:
    """If the event cannot be stored, the batch does not end either: one transaction. (Provoked with an
    event id that is already taken, so the database refuses the insert.)"""
    first = await make_batch(store, 1, batch_id="msgbatch_first")
    second = await make_batch(store, 1, batch_id="msgbatch_second")
    store.on_batch_ended = lambda batch: WebhookEvent("evt_same", b"{}")
    await store.cancel_batch(first.seq, 7)
    with pytest.raises(IntegrityError):
        await store.cancel_batch(second.seq, 7)
    after = await store.get_batch("w", second.id)
    assert after is not None and (after.status, after.canceled) == ("in_progress", 0)
    assert [row["batch_id"] for row in deliveries(store)] == [first.id]


async def test_a_broken_event_builder_does_not_keep_a_batch_from_ending(store: Store) -> None:
    record = await make_batch(store, 1)

    def broken(batch: BatchRecord) -> WebhookEvent:
        raise RuntimeError("a bug")

    store.on_batch_ended = broken
    ended = await store.cancel_batch(record.seq, 7)
    assert ended is not None and ended.status == "ended"
    assert deliveries(store) == []


async def test_lease_attempt_and_outcomes(store: Store) -> None:
    for name in ("a", "b", "c"):  # each ends by cancel, queuing one event
        batch = await make_batch(store, 1, batch_id=f"msgbatch_{name}")
        await store.cancel_batch(batch.seq, 10)
    leased = await store.lease_deliveries(10, owner="s1", now=10, lease_until=100)
    assert [(d.attempt, d.workspace, d.created_at) for d in leased] == [(1, "w", 10)] * 3
    assert await store.lease_deliveries(10, owner="s2", now=50, lease_until=200) == []  # held by s1
    first, second, third = leased
    assert await store.finish_delivery_attempt(first, owner="s1", now=20, error=None)
    assert await store.finish_delivery_attempt(second, owner="s1", now=20, error="HTTP 500", retry_at=60)
    assert await store.finish_delivery_attempt(third, owner="s1", now=20, error="HTTP 410")  # given up
    # Only the retried one comes back, when due, as attempt 2 of the same event.
    assert await store.lease_deliveries(10, owner="s2", now=59, lease_until=300) == []
    [again] = await store.lease_deliveries(10, owner="s2", now=60, lease_until=300)
    assert (again.event_id, again.body, again.attempt) == (second.event_id, second.body, 2)
    # A stale lease (s1's attempt 1) cannot record over s2's attempt.
    assert not await store.finish_delivery_attempt(second, owner="s1", now=61, error=None)
    rows = {row["event_id"]: row for row in deliveries(store)}
    assert (rows[first.event_id]["status"], rows[first.event_id]["finished_at"]) == ("delivered", 20)
    assert (rows[third.event_id]["status"], rows[third.event_id]["last_error"]) == ("failed", "HTTP 410")
    assert (rows[second.event_id]["status"], rows[second.event_id]["lease_owner"]) == ("pending", "s2")


async def test_lapsed_lease_is_leased_again(store: Store) -> None:
    record = await make_batch(store, 1)
    await store.cancel_batch(record.seq, 10)
    [first] = await store.lease_deliveries(1, owner="dead", now=10, lease_until=100)
    [again] = await store.lease_deliveries(1, owner="alive", now=100, lease_until=200)
    assert (again.id, again.event_id, again.attempt) == (first.id, first.event_id, 2)


async def test_concurrent_senders_never_share_a_delivery(store: Store) -> None:
    for n in range(20):
        record = await make_batch(store, 1, batch_id=f"msgbatch_{n}")
        await store.cancel_batch(record.seq, 10)

    async def sender(owner: str) -> list[LeasedDelivery]:
        mine: list[LeasedDelivery] = []
        while leased := await store.lease_deliveries(2, owner=owner, now=10, lease_until=FAR_FUTURE):
            mine.extend(leased)
        return mine

    taken = await asyncio.gather(*(sender(f"s{n}") for n in range(4)))
    ids = [delivery.id for mine in taken for delivery in mine]
    assert sorted(ids) == sorted(row["id"] for row in deliveries(store))  # each once, none left behind
    assert {row["lease_owner"] for row in deliveries(store)} <= {"s0", "s1", "s2", "s3"}


async def test_next_due_release_and_prune(store: Store) -> None:
    assert await store.next_delivery_due() is None
    for name in ("a", "b"):
        batch = await make_batch(store, 1, batch_id=f"msgbatch_{name}")
        await store.cancel_batch(batch.seq, 10 if name == "a" else 20)
    assert await store.next_delivery_due() == 10
    first, second = await store.lease_deliveries(2, owner="s1", now=30, lease_until=1_000)
    assert await store.next_delivery_due() == 1_000  # both leased until then
    # A sender that stops hands its cut-short attempts back, due at once; a stranger's hand-back is ignored.
    assert await store.release_deliveries([first], owner="someone else", now=40) == 0
    assert await store.release_deliveries([first], owner="s1", now=40) == 1
    assert await store.next_delivery_due() == 40
    [again] = await store.lease_deliveries(2, owner="s2", now=41, lease_until=2_000)
    assert (again.event_id, again.attempt) == (first.event_id, 2)
    assert await store.finish_delivery_attempt(again, owner="s2", now=50, error=None)
    assert await store.finish_delivery_attempt(second, owner="s1", now=60, error="HTTP 404")
    assert await store.next_delivery_due() is None
    # Finished deliveries go once old enough; pending ones never.
    assert await store.prune_deliveries(finished_before=50) == 0
    assert await store.prune_deliveries(finished_before=55) == 1
    assert [row["event_id"] for row in deliveries(store)] == [second.event_id]
    assert await store.prune_deliveries(finished_before=61) == 1
    assert deliveries(store) == []
