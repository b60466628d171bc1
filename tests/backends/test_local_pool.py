"""How the local backend's instance pool picks an instance for a prompt prefix (no model needed: the pool
hands out whatever objects it is given)."""

from __future__ import annotations

import asyncio

from overnight.backends.local_pool import InstancePool


async def test_a_prefix_goes_back_to_the_free_instance_that_last_ran_it() -> None:
    pool = InstancePool(["i0", "i1", "i2"])
    first = [await pool.acquire(key) for key in ("a", "b", "c")]
    assert [index for index, _ in first] == [0, 1, 2]  # instances that ran nothing go first
    for index, _ in reversed(first):
        pool.release(index)
    assert (await pool.acquire("b"))[1] == "i1"
    assert (await pool.acquire("a"))[1] == "i0"


async def test_a_new_prefix_overwrites_a_duplicated_one_before_the_idlest_unique_one() -> None:
    pool = InstancePool(["i0", "i1", "i2"])
    for key in ("a", "a", "b"):
        await pool.acquire(key)
    pool.release(2)  # b: the only copy, and idle longest
    pool.release(0)  # a: also held by i1
    assert (await pool.acquire("c"))[0] == 0
    assert pool.last_keys() == {0: "c", 1: "a", 2: "b"}


async def test_the_idlest_instance_goes_when_every_prefix_is_unique() -> None:
    pool = InstancePool(["i0", "i1"])
    for key in ("a", "b"):
        await pool.acquire(key)
    pool.release(1)
    pool.release(0)
    assert (await pool.acquire("c"))[0] == 1


async def test_a_request_waits_for_a_free_instance_and_never_while_one_is_free() -> None:
    pool = InstancePool(["only"])
    index, _ = await pool.acquire("a")
    waiting = asyncio.create_task(pool.acquire("b"))
    await asyncio.sleep(0.01)
    assert not waiting.done()
    pool.release(index)
    assert await asyncio.wait_for(waiting, 1) == (0, "only")  # a different prefix still gets it


async def test_a_cancelled_waiter_passes_its_turn_on() -> None:
    pool = InstancePool(["only"])
    index, _ = await pool.acquire("a")
    cancelled = asyncio.create_task(pool.acquire("b"))
    patient = asyncio.create_task(pool.acquire("c"))
    await asyncio.sleep(0.01)
    cancelled.cancel()
    pool.release(index)
    assert await asyncio.wait_for(patient, 1) == (0, "only")
