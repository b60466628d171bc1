"""(a) Efficiency on a capacity-limited upstream: does overnight keep a slow, narrow model busy?

The upstream (`bench/_upstream.py`, its own process) is an Anthropic Messages server with C slots
and L ms per call (default C=32, L=50: at most 640 calls/s). Both clients keep 2xC calls in flight,
so the upstream always has a queue and never waits for a client:

- baseline: a direct asyncio httpx client making the 20,000 calls itself;
- overnight: one 20,000-request batch, `--concurrency 2C`, routed by a config file to an `anthropic`
  backend at the upstream with `max_concurrency = 2C`; timed as the create call plus the batch's
  `created_at` → `ended_at` (server clock, polled once a second).

Figure: overnight's calls/s ÷ the direct client's calls/s, both measured in this run.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import msgspec

from bench import _workload as work
from bench._cli import Run, main, profile_summary
from bench._process import (
    PYTHON,
    ChildServer,
    free_port,
    overnight_server,
    write_router_config,
)
from bench._report import Report, Row, rate, seconds, verdict

KEY = "a"
TITLE = "efficiency on a capacity-limited upstream"
MIN_RATIO = 0.98


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--requests", type=int, default=None, help="calls each side (default 20,000; quick 2,000)")
    parser.add_argument("--slots", type=int, default=32, help="upstream slots C (32)")
    parser.add_argument("--latency-ms", type=float, default=50.0, help="upstream latency per call L (50)")


def upstream_server(work_dir: Path, slots: int, latency_ms: float) -> ChildServer:
    port = free_port()
    command = [
        PYTHON,
        "-m",
        "bench._upstream",
        "--port",
        str(port),
        "--slots",
        str(slots),
        "--latency-ms",
        str(latency_ms),
    ]
    return ChildServer(command, port=port, log_path=work_dir / "upstream.log")


@dataclass(frozen=True)
class Phase:
    """One client's calls through the upstream: how long they took, how busy they kept its slots."""

    calls: int
    seconds: float
    busy_slot_seconds: float

    @property
    def rate(self) -> float:
        return self.calls / self.seconds

    def describe(self, slots: int, capacity: float) -> str:
        return (
            f"{seconds(self.seconds)} = {rate(self.rate, 'calls/s')} ({self.rate / capacity:.1%} of C/L); "
            f"upstream slots busy {self.busy_slot_seconds / (slots * self.seconds):.1%} of the time"
        )


def measure(upstream_url: str, calls: int, action: Callable[[], float]) -> Phase:
    """Run `action` (which returns its own timing) and take the upstream's counters around it."""
    before = httpx.get(upstream_url + "/stats", timeout=10).json()
    elapsed = action()
    after = httpx.get(upstream_url + "/stats", timeout=10).json()
    if after["calls"] - before["calls"] != calls:
        raise RuntimeError(f"the upstream served {after['calls'] - before['calls']} calls, expected {calls}")
    return Phase(calls, elapsed, after["busy_slot_seconds"] - before["busy_slot_seconds"])


async def direct_calls(port: int, params: list[bytes], in_flight: int) -> float:
    """Seconds for `in_flight` workers, each on its own keep-alive connection, to make every call once.

    A minimal HTTP/1.1 client on asyncio streams (~0.1 ms of CPU a call): it keeps the upstream
    saturated.
    """
    bodies = iter(params)

    async def worker() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            for body in bodies:
                writer.write(
                    b"POST /v1/messages HTTP/1.1\r\nhost: 127.0.0.1\r\nx-api-key: bench\r\n"
                    b"anthropic-version: 2023-06-01\r\ncontent-type: application/json\r\n"
                    b"content-length: %d\r\n\r\n%s" % (len(body), body)
                )
                head = await reader.readuntil(b"\r\n\r\n")
                status, *headers = head.decode("latin-1").split("\r\n")
                length = next(int(h.split(":", 1)[1]) for h in headers if h.lower().startswith("content-length:"))
                message = msgspec.json.decode(await reader.readexactly(length))
                if not status.startswith("HTTP/1.1 200") or message.get("type") != "message":
                    raise RuntimeError(f"upstream answered {status}: {message}")
        finally:
            writer.close()

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(in_flight)))
    return time.perf_counter() - start


def through_overnight(bench: Run, upstream_url: str, count: int, in_flight: int) -> work.Drained:
    """The batch of `count` requests, from the create call until it is seen ended."""
    config = write_router_config(
        bench.work / "routing.toml",
        "upstream",
        {
            "type": "anthropic",
            "base_url": upstream_url,
            "api_key": "bench",
            "max_concurrency": in_flight,
        },
    )
    body = work.batch_body(work.custom_ids(count), work.small_params(count))
    server = overnight_server(
        bench.work / "data",
        "--concurrency",
        str(in_flight),
        "--max-requests",
        str(max(count, 100_000)),
        backend=None,
        config=config,
    )
    with server, work.client(server.url) as http, bench.profiled(server.pid, KEY):
        # Polled once a second: the server's own `ended_at` times the run exactly, and a 50 ms poll would
        # be work for the server that competes with the upstream for this machine's two cores.
        drained = work.create_and_drain(http, body, timeout=max(600, 10 * count), poll_seconds=1.0)
    if work.succeeded(drained.batch) != count:
        raise RuntimeError(f"expected {count} succeeded, got {drained.batch['request_counts']}")
    return drained


def run(bench: Run) -> Report:
    count = bench.args.requests or (2_000 if bench.quick else 20_000)
    slots, latency_ms = bench.args.slots, bench.args.latency_ms
    in_flight = 2 * slots
    capacity = slots / (latency_ms / 1000)
    label = f"{TITLE} (C={slots}, L={latency_ms:g} ms, {count:,} calls)"
    target = f"overnight / direct ≥ {MIN_RATIO}"
    details = {"upstream capacity C/L": rate(capacity, "calls/s"), "in flight, each client": f"{in_flight} (2xC)"}

    with upstream_server(bench.work, slots, latency_ms) as upstream:
        direct = measure(
            upstream.url, count, lambda: asyncio.run(direct_calls(upstream.port, work.small_params(count), in_flight))
        )
        details["direct asyncio client"] = direct.describe(slots, capacity)
        baseline = f"direct asyncio client: {rate(direct.rate, 'calls/s')}"
        drains: list[work.Drained] = []

        def drain() -> float:
            drains.append(through_overnight(bench, upstream.url, count, in_flight))
            return drains[-1].create_seconds + drains[-1].server_run_seconds

        overnight = measure(upstream.url, count, drain)
        details["overnight (create call + created_at → ended_at)"] = overnight.describe(slots, capacity)
        details["overnight: the create call / created_at → ended_at"] = (
            f"{seconds(drains[0].create_seconds)} / {seconds(drains[0].server_run_seconds)}"
        )

    ratio = overnight.rate / direct.rate
    row = Row(
        KEY,
        label,
        f"overnight: {rate(overnight.rate, 'calls/s')}",
        baseline,
        ratio,
        target,
        verdict(ratio >= MIN_RATIO),
    )
    profile = profile_summary(bench.profile_file(KEY), "(a) overnight draining the batch")
    return Report(KEY, TITLE, [row], details, profile=profile)


if __name__ == "__main__":
    main(
        run,
        key=KEY,
        title=TITLE,
        description=__doc__ or "",
        add_arguments=add_arguments,
        profile_help="record the overnight server with py-spy while it drains the batch and summarise it",
    )
