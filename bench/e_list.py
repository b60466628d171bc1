"""(e) List: `GET /v1/messages/batches?limit=20` with 100,000 batches in the store.

The store is filled directly while no server runs (creating 100k batches through the API would take
minutes and measure create, not list): overnight's own migrations make the schema, then plain SQL
inserts 100,000 ended batches of one succeeded request each, ids `msgbatch_` + 24 base62 characters.
Then the server starts on that data dir and a plain httpx client (keep-alive, one call at a time)
times the first page and a deep page (`after_id` ~90% of the way down), 200 calls each after a
warm-up, and reports p50/p99.

Baseline, same run: `GET /healthz` timed the same way — the HTTP round trip with no work behind it.
"""

from __future__ import annotations

import argparse
import random
import sqlite3
import statistics
import string
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from bench import _workload as work
from bench._cli import Run, main
from bench._process import overnight_server
from bench._report import Report, Row, verdict
from overnight.store import open_store
from overnight.timestamps import now_micros

KEY = "e"
TITLE = "list"
TARGET_P99_SECONDS = 0.020
CALLS = 200
WARM_UP = 20
_BASE62 = string.digits + string.ascii_letters


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--batches", type=int, default=None, help="batches in the store (default 100,000; quick 10,000)"
    )


def fill_store(data_dir: Path, count: int) -> list[str]:
    """`count` ended one-request batches, oldest first; their ids in that order."""
    data_dir.mkdir(parents=True, exist_ok=True)
    database = data_dir / "overnight.sqlite3"
    store = open_store(f"sqlite:///{database}")
    store.migrate()
    store.close()
    rng = random.Random(5)
    ids = ["msgbatch_" + "".join(rng.choices(_BASE62, k=24)) for _ in range(count)]
    # One batch a second up to now: all ended, none old enough for the sweeper to archive.
    start = now_micros() - (count + 1) * 10**6
    connection = sqlite3.connect(database)
    try:
        with connection:
            connection.executemany(
                "INSERT INTO batches (seq, id, workspace, status, total, processing, succeeded, errored, "
                "canceled, expired, created_at, expires_at, ended_at) "
                "VALUES (?, ?, 'default', 'ended', 1, 0, 1, 0, 0, 0, ?, ?, ?)",
                (
                    (seq, batch_id, start + seq * 10**6, start + seq * 10**6 + 86_400 * 10**6, start + seq * 10**6 + 5)
                    for seq, batch_id in enumerate(ids, start=1)
                ),
            )
            connection.executemany(
                "INSERT INTO requests (batch_seq, custom_id, params, state, attempt, result) "
                "VALUES (?, 'only', ?, 'succeeded', 1, ?)",
                (
                    (seq, b'{"model":"m","max_tokens":1,"messages":[]}', b'{"custom_id":"only","result":{}}\n')
                    for seq in range(1, count + 1)
                ),
            )
    finally:
        connection.close()
    return ids


def latencies(call: Callable[[], httpx.Response], check: Callable[[httpx.Response], object]) -> list[float]:
    for _ in range(WARM_UP):
        check(call())
    timings = []
    for _ in range(CALLS):
        start = time.perf_counter()
        response = call()
        timings.append(time.perf_counter() - start)
        check(response)
    return timings


def p(timings: list[float], percentile: int) -> float:
    return statistics.quantiles(timings, n=100, method="inclusive")[percentile - 1]


def ms(value: float) -> str:
    return f"{value * 1000:.2f} ms"


def run(bench: Run) -> Report:
    count = bench.args.batches or (10_000 if bench.quick else 100_000)
    data = bench.work / "data"
    fill_start = time.perf_counter()
    ids = fill_store(data, count)
    fill_seconds = time.perf_counter() - fill_start
    cursor = ids[count // 10]  # 90% of the way down from the newest

    def page_of_20(response: httpx.Response) -> None:
        response.raise_for_status()
        page = response.json()
        if len(page["data"]) != 20 or not page["has_more"]:
            raise RuntimeError(f"unexpected page: {len(page['data'])} batches, has_more={page['has_more']}")

    with overnight_server(data) as server, work.client(server.url) as http:
        health = latencies(lambda: http.get("/healthz"), httpx.Response.raise_for_status)
        first = latencies(lambda: http.get("/v1/messages/batches", params={"limit": 20}), page_of_20)
        deep = latencies(lambda: http.get("/v1/messages/batches", params={"limit": 20, "after_id": cursor}), page_of_20)

    baseline = p(health, 99)
    rows = [
        Row(
            f"{KEY}{n}",
            f"{TITLE}: {name} (limit=20, {count:,} batches)",
            f"p99 {ms(p(timings, 99))}",
            f"`GET /healthz` p99 {ms(baseline)}",
            p(timings, 99) / baseline,
            f"p99 ≤ {ms(TARGET_P99_SECONDS)}",
            verdict(p(timings, 99) <= TARGET_P99_SECONDS),
        )
        for n, name, timings in (
            (1, "first page", first),
            (2, f"deep page (after_id {count - count // 10:,} deep)", deep),
        )
    ]
    details = {
        f"{name} p50 / p99 / max": f"{ms(p(timings, 50))} / {ms(p(timings, 99))} / {ms(max(timings))}"
        for name, timings in (("healthz", health), ("first page", first), ("deep page", deep))
    }
    details["store filled in"] = f"{fill_seconds:.1f} s (direct SQL, server stopped)"
    details["calls"] = f"{CALLS} per endpoint after {WARM_UP} warm-up calls, sequential, keep-alive"
    return Report(KEY, TITLE, rows, details)


if __name__ == "__main__":
    main(run, key=KEY, title=TITLE, description=__doc__ or "", add_arguments=add_arguments)
