"""How many leased requests the scheduler keeps buffered: enough to outlast a flush, bounded in memory."""

from __future__ import annotations

from overnight.backends.fake import FakeBackend
from overnight.backends.routing import Router
from overnight.engine import scheduler as scheduler_module
from overnight.engine.calls import BackendCaller, RetryPolicy
from overnight.engine.scheduler import Scheduler


def _scheduler(concurrency: int = 64) -> Scheduler:
    # No store: only the buffer's sizing is exercised, which reads none.
    caller = BackendCaller(Router([("*", FakeBackend())]), RetryPolicy(), default_limit=concurrency)
    return Scheduler(
        None,  # type: ignore[arg-type]
        caller,
        concurrency=concurrency,
        lease_seconds=60,
        sweep_interval_seconds=1,
        results_retention_seconds=60,
    )


def test_idle_scheduler_buffers_two_requests_per_worker() -> None:
    assert _scheduler(concurrency=16)._buffer_target() == 32


def test_buffer_holds_half_a_second_at_the_measured_rate() -> None:
    scheduler = _scheduler()
    scheduler._rate_per_second = 20_000
    scheduler._params_bytes_each = 200
    assert scheduler._buffer_target() == 10_000


def test_ramp_outgrows_a_lagging_rate_up_to_the_cap() -> None:
    scheduler = _scheduler()
    scheduler._rate_per_second = 1_000
    scheduler._params_bytes_each = 100
    scheduler._ramp = 4096
    assert scheduler._buffer_target() == 4096
    scheduler._ramp = 10 * scheduler_module._MAX_BUFFER
    assert scheduler._buffer_target() == scheduler_module._MAX_BUFFER


def test_big_params_bound_the_buffer_by_bytes() -> None:
    scheduler = _scheduler()
    scheduler._rate_per_second = 100_000
    scheduler._ramp = scheduler_module._MAX_BUFFER
    scheduler._params_bytes_each = 100_000
    target = scheduler._buffer_target()
    assert target * 100_000 <= scheduler_module._MAX_BUFFER_BYTES
    assert target == scheduler_module._MAX_BUFFER_BYTES // 100_000
    # Never fewer than two per worker, whatever their size: every worker has one to run and one next.
    scheduler._params_bytes_each = 10 << 20
    assert scheduler._buffer_target() == 128
