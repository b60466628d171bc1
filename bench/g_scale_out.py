"""(g) Work spreads across workers: 1 api + 1 worker against 1 api + 3 workers, on PostgreSQL.

Each worker runs `--concurrency 16` against the fake backend holding every call 100 ms, so one
worker can finish at most 160 requests a second and three at most 480: the ratio of the two runs'
throughputs (created → ended, by the server's own timestamps) says how well leasing spreads the work
between nodes. Target: three workers ≥ 2.7x one.
"""

from __future__ import annotations

import argparse
import contextlib

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


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--requests", type=int, default=None, help="batch size (default 6,000; quick 1,500)")


def throughput(bench: Run, admin_url: str, workers: int, body: bytes, count: int) -> float:
    database = fresh_database(admin_url)
    name = f"{workers}w"
    with contextlib.ExitStack() as nodes:
        api = nodes.enter_context(
            overnight_server(bench.work / f"{name}-api", "--database", database, "--role", "api",
                             "--max-requests", str(count))
        )
        for n in range(workers):
            nodes.enter_context(
                overnight_server(
                    bench.work / f"{name}-worker{n}", "--database", database, "--role", "worker",
                    "--fake-latency-ms", str(LATENCY_MS), "--concurrency", str(CONCURRENCY),
                )
            )
        with work.client(api.url) as http:
            drained = work.create_and_drain(http, body, timeout=600, poll_seconds=1.0)
    if work.succeeded(drained.batch) != count:
        raise RuntimeError(f"{name}: {drained.batch['request_counts']}")
    return count / drained.server_run_seconds


def run(bench: Run) -> Report:
    count = bench.args.requests or (1_500 if bench.quick else 6_000)
    body = work.batch_body(work.custom_ids(count), work.small_params(count))
    with postgres_server(bench.work) as admin_url:
        one = throughput(bench, admin_url, 1, body, count)
        three = throughput(bench, admin_url, 3, body, count)
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
    ceiling = 1000 / LATENCY_MS * CONCURRENCY
    details = {
        "1 api + 1 worker": f"{rate(one, 'req/s')} ({one / ceiling:.0%} of its {ceiling:.0f} req/s ceiling)",
        "1 api + 3 workers": f"{rate(three, 'req/s')} ({three / (3 * ceiling):.0%} of {3 * ceiling:.0f} req/s)",
        "run time (server's created_at → ended_at)": f"{seconds(count / one)} vs {seconds(count / three)}",
    }
    return Report(KEY, TITLE, [row], details)


if __name__ == "__main__":
    main(run, key=KEY, title=TITLE, description=__doc__ or "", add_arguments=add_arguments)
