"""The adaptive concurrency limit: halves on 429, grows back on success, never exceeds its cap."""

from __future__ import annotations

import asyncio

from overnight.engine import limits as limits_module
from overnight.engine.limits import AdaptiveLimit


async def test_never_more_calls_at_once_than_the_limit() -> None:
    limit = AdaptiveLimit(3)
    running = peak = 0

    async def call() -> None:
        nonlocal running, peak
        async with limit:
            running += 1
            peak = max(peak, running)
            await asyncio.sleep(0.01)
            running -= 1

    await asyncio.gather(*(call() for _ in range(20)))
    assert peak == 3


def test_rate_limited_halves_once_per_cool_down_then_recovers(monkeypatch) -> None:
    limit = AdaptiveLimit(16)
    limit.rate_limited()
    limit.rate_limited()  # same burst: one signal
    assert limit.limit == 8
    monkeypatch.setattr(limits_module, "_COOL_DOWN_SECONDS", 0.0)
    limit.rate_limited()
    assert limit.limit == 4
    for _ in range(4):
        limit.succeeded()
    assert limit.limit == 5
    for _ in range(200):
        limit.succeeded()
    assert limit.limit == 16


async def test_a_lowered_limit_admits_waiters_again_when_raised() -> None:
    limit = AdaptiveLimit(2)
    limit.rate_limited()
    assert limit.limit == 1
    await limit.__aenter__()
    waiter = asyncio.create_task(limit.__aenter__())
    await asyncio.sleep(0.01)
    assert not waiter.done()
    limit.succeeded()  # one success at limit 1 raises it to 2
    await asyncio.wait_for(waiter, 1)
    assert limit.active == 2


async def test_a_cancelled_waiter_gives_up_its_place() -> None:
    limit = AdaptiveLimit(1)
    await limit.__aenter__()
    first = asyncio.create_task(limit.__aenter__())
    second = asyncio.create_task(limit.__aenter__())
    await asyncio.sleep(0.01)
    first.cancel()
    await asyncio.gather(first, return_exceptions=True)
    await limit.__aexit__(None, None, None)
    await asyncio.wait_for(second, 1)  # the slot went to the waiter still there
    assert limit.active == 1


async def test_a_waiter_admitted_then_cancelled_hands_its_slot_on() -> None:
    limit = AdaptiveLimit(1)
    await limit.__aenter__()
    first = asyncio.create_task(limit.__aenter__())
    second = asyncio.create_task(limit.__aenter__())
    await asyncio.sleep(0.01)
    await limit.__aexit__(None, None, None)  # admits `first`...
    first.cancel()  # ...which is cancelled before it runs again
    await asyncio.gather(first, return_exceptions=True)
    await asyncio.wait_for(second, 1)
    assert limit.active == 1
