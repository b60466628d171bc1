"""(h) The control plane on PostgreSQL: (b)'s 100k-request zero-latency batch, create → ended →
downloaded, by one `--role all` node on PostgreSQL against the same on SQLite, in the same run; and by
1 api + 2 workers on PostgreSQL. Target: PostgreSQL ≥ 0.5x SQLite.
"""

from __future__ import annotations

import argparse
import contextlib
import time

from bench import _workload as work
from bench._cli import Run, add_repeats_argument, main
from bench._postgres import fresh_database, postgres_server
from bench._process import overnight_server
from bench._report import Report, Row, rate, seconds, verdict

KEY = "h"
TITLE = "control plane on PostgreSQL"
TARGET_RATIO = 0.5
CONCURRENCY = 64


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--requests", type=int, default=None, help="batch size (default 100,000; quick 10,000)")
    add_repeats_argument(parser)


def end_to_end(bench: Run, name: str, body: bytes, count: int, database: str | None, workers: int = 0) -> float:
    """Requests per second, POST to the last result line downloaded."""
    common = ("--concurrency", str(CONCURRENCY), "--max-requests", str(max(count, 100_000)))
    with contextlib.ExitStack() as nodes:
        if database is None:
            api = nodes.enter_context(overnight_server(bench.work / name, *common))
        elif workers == 0:
            api = nodes.enter_context(overnight_server(bench.work / name, "--database", database, *common))
        else:
            api = nodes.enter_context(
                overnight_server(bench.work / f"{name}-api", "--database", database, "--role", "api", *common)
            )
            for n in range(workers):
                nodes.enter_context(
                    overnight_server(bench.work / f"{name}-w{n}", "--database", database, "--role", "worker", *common)
                )
        with work.client(api.url) as http:
            start = time.perf_counter()
            drained = work.create_and_drain(http, body, timeout=900)
            download = work.download_results(http, drained.batch["results_url"])
            took = time.perf_counter() - start
    if work.succeeded(drained.batch) != count or download.lines != count:
        raise RuntimeError(f"{name}: {drained.batch['request_counts']}, {download.lines} lines")
    return count / took


def run(bench: Run) -> Report:
    count = bench.args.requests or (10_000 if bench.quick else 100_000)
    body = work.batch_body(work.custom_ids(count), work.small_params(count))
    # Interleaved repeats, best of each: load from elsewhere only ever slows a run down.
    sqlites, postgreses, splits = [], [], []
    with postgres_server(bench.work) as admin_url:
        for n in range(bench.repeats):
            sqlites.append(end_to_end(bench, f"sqlite-{n}", body, count, None))
            postgreses.append(end_to_end(bench, f"pg-all-{n}", body, count, fresh_database(admin_url)))
            splits.append(end_to_end(bench, f"pg-split-{n}", body, count, fresh_database(admin_url), workers=2))
    sqlite, postgres, split = max(sqlites), max(postgreses), max(splits)
    ratio = postgres / sqlite
    row = Row(
        KEY,
        f"{TITLE}: {count:,}-request batch, fake backend, create → ended → downloaded, one --role all node",
        rate(postgres, "req/s"),
        f"the same on SQLite, {rate(sqlite, 'req/s')}",
        ratio,
        f"≥ {TARGET_RATIO}x",
        verdict(ratio >= TARGET_RATIO),
    )
    details = {
        "SQLite, one node": rate(sqlite, "req/s"),
        "PostgreSQL, one --role all node": f"{rate(postgres, 'req/s')} ({seconds(count / postgres)})",
        "PostgreSQL, 1 api + 2 workers (2 cores shared by all three)": f"{rate(split, 'req/s')} "
        f"({split / sqlite:.2f}x SQLite)",
        "server --concurrency": str(CONCURRENCY),
        "runs (req/s: SQLite / PostgreSQL / split)": "; ".join(
            f"{a:,.0f} / {b:,.0f} / {c:,.0f}" for a, b, c in zip(sqlites, postgreses, splits, strict=True)
        ),
    }
    return Report(KEY, TITLE, [row], details)


if __name__ == "__main__":
    main(run, key=KEY, title=TITLE, description=__doc__ or "", add_arguments=add_arguments)
