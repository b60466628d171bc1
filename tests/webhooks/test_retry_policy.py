"""The retry schedule itself: exponential, jittered, capped, and going on for the whole window."""

from __future__ import annotations

import itertools

from overnight.engine.webhooks import RetryPolicy
from overnight.store.records import LeasedDelivery
from overnight.timestamps import MICROS

DAY = 86_400 * MICROS


def schedule(policy: RetryPolicy, created_at: int = 0) -> list[int]:
    """When each attempt happens if every one fails at once."""
    attempts, now, attempt = [created_at], created_at, 1
    while (retry_at := policy.retry_at(LeasedDelivery(1, "evt_x", "w", b"{}", attempt, created_at), now)) is not None:
        assert retry_at > now
        attempts.append(retry_at)
        now, attempt = retry_at, attempt + 1
    return attempts


def test_default_schedule_retries_for_a_day_then_gives_up() -> None:
    attempts = schedule(RetryPolicy())
    assert attempts[-1] == DAY  # the last attempt is at the end of the window, then it is given up
    delays = [(later - earlier) / MICROS for earlier, later in itertools.pairwise(attempts)]
    for number, delay in enumerate(delays[:10], start=1):  # 5 s doubling, each jittered to 50-100 %
        ceiling = min(5.0 * 2 ** (number - 1), 3600.0)
        assert ceiling * 0.5 <= delay <= ceiling, (number, delay)
    assert max(delays) <= 3600.0
    # 11 attempts until the delay is capped, then one every 30-60 min: 34 to 58 in all (about 41).
    assert 34 <= len(attempts) <= 58, len(attempts)


def test_jitter_spreads_deliveries_that_failed_together() -> None:
    policy = RetryPolicy(base_seconds=60.0)
    firsts = {schedule(policy)[1] for _ in range(20)}
    assert len(firsts) > 10


def test_window_is_counted_from_the_event_not_the_attempt() -> None:
    policy = RetryPolicy(window_seconds=10.0)
    late = LeasedDelivery(1, "evt_x", "w", b"{}", 7, created_at=0)
    assert policy.retry_at(late, now=9 * MICROS) == 10 * MICROS  # capped at the window's end
    assert policy.retry_at(late, now=10 * MICROS) is None
