"""(b) Control-plane throughput: a 100k-request batch through the zero-latency fake backend.

create → ended → results downloaded, on SQLite, timed end to end by a plain httpx client. The
backend does no work, so this is overnight's own cost per request: envelope check and insert,
leasing, params validation, result encoding, grouped result writes, and streaming the results back.

Baseline: there is no "same work without overnight" to compare with, so the target itself
(40,000 requests/s) is the baseline and the ratio is figure / target.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path

from bench import _workload as work
from bench._cli import Run, add_repeats_argument, main, profile_summary
from bench._process import overnight_server
from bench._report import Report, Row, mib, rate, seconds, verdict

KEY = "b"
TITLE = "control-plane throughput"
TARGET_PER_SECOND = 40_000


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--requests", type=int, default=None, help="batch size (default 100,000; quick 10,000)")
    parser.add_argument("--concurrency", type=int, default=64, help="overnight --concurrency (default 64)")
    add_repeats_argument(parser)


@dataclass(frozen=True)
class Measured:
    seconds: float
    drained: work.Drained
    download: work.Download
    profile: Path | None


def measure_once(bench: Run, body: bytes, count: int, attempt: int) -> Measured:
    server = overnight_server(
        bench.work / f"data-{attempt}",
        "--concurrency",
        str(bench.args.concurrency),
        "--max-requests",
        str(max(count, 100_000)),
    )
    with server, work.client(server.url) as http, bench.profiled(server.pid, KEY) as raw:
        start = time.perf_counter()
        drained = work.create_and_drain(http, body, timeout=600)
        download = work.download_results(http, drained.batch["results_url"])
        total = time.perf_counter() - start
    if work.succeeded(drained.batch) != count or download.lines != count:
        raise RuntimeError(
            f"expected {count} succeeded results, got {drained.batch['request_counts']} and {download.lines} lines"
        )
    return Measured(total, drained, download, raw)


def run(bench: Run) -> Report:
    count = bench.args.requests or (10_000 if bench.quick else 100_000)
    body = work.batch_body(work.custom_ids(count), work.small_params(count))
    runs = [measure_once(bench, body, count, attempt) for attempt in range(bench.repeats)]
    best = min(runs, key=lambda measured: measured.seconds)
    drained, download = best.drained, best.download

    per_second = count / best.seconds
    row = Row(
        KEY,
        f"{TITLE}: {count:,}-request batch, fake backend, SQLite",
        rate(per_second, "req/s"),
        f"the target, {TARGET_PER_SECOND:,} req/s",
        per_second / TARGET_PER_SECOND,
        f"≥ {TARGET_PER_SECOND:,} req/s end to end",
        verdict(per_second >= TARGET_PER_SECOND),
    )
    details = {
        "runs (fresh server each; the best is reported)": ", ".join(
            rate(count / measured.seconds, "req/s") for measured in runs
        ),
        "create body": mib(len(body)),
        "create (POST → batch returned)": seconds(drained.create_seconds),
        "run (created → ended seen)": f"{seconds(drained.run_seconds)} = {rate(count / drained.run_seconds, 'req/s')}",
        "results download": f"{seconds(download.seconds)} for {mib(download.bytes)} = "
        f"{download.megabytes_per_second:,.0f} MB/s",
        "end to end": seconds(best.seconds),
        "server --concurrency": str(bench.args.concurrency),
    }
    notes = (
        ["Profiled run: py-spy was attached, so the figures above are lower than an unprofiled run's."]
        if bench.profiling
        else []
    )
    return Report(KEY, TITLE, [row], details, notes, profile_summary(best.profile, "(b) create → ended → download"))


if __name__ == "__main__":
    main(
        run,
        key=KEY,
        title=TITLE,
        description=__doc__ or "",
        add_arguments=add_arguments,
        profile_help="record the server with py-spy during the measured window and summarise it",
    )
