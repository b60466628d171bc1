"""(g) Work spreads across workers: 1 api + 1 worker against 1 api + 3 workers, on PostgreSQL.

Each worker runs `--concurrency 16` against the fake backend holding every call 100 ms, so one
worker can finish at most 160 requests a second and three at most 480: the ratio of the two runs'
throughputs (created → ended, by the server's own timestamps) says how well leasing spreads the work
between nodes. Target: three workers ≥ 2.7x one.

A third run kills one of the three workers with SIGKILL a third of the way through (`--lease-seconds
5`): the batch must still end with exactly one result per request, the dead node's claimed requests
run by the others once their leases lapse.
"""

from __future__ import annotations

import argparse
import contextlib
import time
from collections import Counter

import msgspec

from bench import _workload as work
from bench._cli import Run, main
from bench._postgres import fresh_database, postgres_server
from bench._process import overnight_server
from bench._report import Report, Row, rate, seconds, verdict

KEY = "g"
TITLE = "scale-out across workers"
TARGET_RATIO = 2.7
LATENCY_MS = 100
CONCURRENCY = 16
KILL_LEASE_SECONDS = 5


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--requests", type=int, default=None, help="batch size (default 6,000; quick 1,500)")


def throughput(bench: Run, admin_url: str, workers: int, body: bytes, count: int) -> float:
    return drain(bench, admin_url, workers, body, count, kill_one=False).requests_per_second


class KillRun(msgspec.Struct):
    requests_per_second: float
    run_seconds: float
    result_lines: int
    distinct_custom_ids: int
    killed_at_succeeded: int


def drain(bench: Run, admin_url: str, workers: int, body: bytes, count: int, *, kill_one: bool) -> KillRun:
    """Create → ended on 1 api + `workers` workers; with `kill_one`, SIGKILL one worker a third of the way."""
    database = fresh_database(admin_url)
    name = f"{workers}w" + ("-kill" if kill_one else "")
    lease = ("--lease-seconds", str(KILL_LEASE_SECONDS)) if kill_one else ()
    with contextlib.ExitStack() as nodes:
        api = nodes.enter_context(
            overnight_server(
                bench.work / f"{name}-api", "--database", database, "--role", "api", "--max-requests", str(count)
            )
        )
        started = [
            nodes.enter_context(
                overnight_server(
                    bench.work / f"{name}-worker{n}",
                    "--database",
                    database,
                    "--role",
                    "worker",
                    "--fake-latency-ms",
                    str(LATENCY_MS),
                    "--concurrency",
                    str(CONCURRENCY),
                    *lease,
                )
            )
            for n in range(workers)
        ]
        with work.client(api.url) as http:
            created, _ = work.create_batch(http, body)
            killed_at = 0
            if kill_one:
                while killed_at < count // 3:
                    time.sleep(0.05)
                    killed_at = work.succeeded(http.get(f"/v1/messages/batches/{created['id']}").json())
                assert started[0].process is not None
                started[0].process.kill()
            batch = work.wait_until_ended(http, created["id"], timeout=600, poll_seconds=0.5)
            custom_ids: Counter[str] = Counter()
            with http.stream("GET", batch["results_url"]) as response:
                for line in response.iter_lines():
                    if line:
                        custom_ids[msgspec.json.decode(line)["custom_id"]] += 1
    if work.succeeded(batch) != count:
        raise RuntimeError(f"{name}: {batch['request_counts']}")
    run_seconds = work.Drained(batch, 0, 0, 0).server_run_seconds
    return KillRun(count / run_seconds, run_seconds, sum(custom_ids.values()), len(custom_ids), killed_at)


def run(bench: Run) -> Report:
    count = bench.args.requests or (1_500 if bench.quick else 6_000)
    body = work.batch_body(work.custom_ids(count), work.small_params(count))
    with postgres_server(bench.work) as admin_url:
        one = throughput(bench, admin_url, 1, body, count)
        three = throughput(bench, admin_url, 3, body, count)
        killed = drain(bench, admin_url, 3, body, count, kill_one=True)
    ratio = three / one
    row = Row(
        KEY,
        f"{TITLE}: {count:,} requests, fake backend {LATENCY_MS} ms, --concurrency {CONCURRENCY} per worker",
        rate(three, "req/s") + " with 3 workers",
        f"1 api + 1 worker, {rate(one, 'req/s')}",
        ratio,
        f"≥ {TARGET_RATIO}x",
        verdict(ratio >= TARGET_RATIO),
    )
    exactly_once = killed.result_lines == killed.distinct_custom_ids == count
    kill_row = Row(
        f"{KEY}2",
        f"{TITLE}: SIGKILL of 1 of 3 workers at {killed.killed_at_succeeded:,} done "
        f"(--lease-seconds {KILL_LEASE_SECONDS})",
        f"{killed.result_lines:,} result lines, {killed.distinct_custom_ids:,} distinct custom_ids",
        f"{count:,} requests",
        killed.result_lines / count,
        "exactly one result per request",
        verdict(exactly_once),
    )
    ceiling = 1000 / LATENCY_MS * CONCURRENCY
    details = {
        "1 api + 1 worker": f"{rate(one, 'req/s')} ({one / ceiling:.0%} of its {ceiling:.0f} req/s ceiling)",
        "1 api + 3 workers": f"{rate(three, 'req/s')} ({three / (3 * ceiling):.0%} of {3 * ceiling:.0f} req/s)",
        "run time (server's created_at → ended_at)": f"{seconds(count / one)} vs {seconds(count / three)}",
        "run time with one worker killed": seconds(killed.run_seconds),
    }
    return Report(KEY, TITLE, [row, kill_row], details)


if __name__ == "__main__":
    main(run, key=KEY, title=TITLE, description=__doc__ or "", add_arguments=add_arguments)
