"""(d) Results download: the 100k results of a (b)-style batch streamed over HTTP by a plain client.

The client is httpx reading the raw stream as the transport delivers it (64 KiB reads) and counting
lines — not the SDK, whose JSONL decoder reads 64-byte chunks and would measure itself. The median of
five downloads is the figure; the server's VmRSS is sampled every 5 ms throughout them.

Baseline, same run: the same stored result lines read straight from the server's SQLite file by plain
`sqlite3`, row by row (`fetchmany` of 2,000 along the (batch, state, id) index), the way a
straightforward reader would, in MB/s of lines. (The server reads differently: SQLite joins each run
of 2,000 ids into one chunk itself, see `Store._result_chunks_by_id`.)
"""

from __future__ import annotations

import argparse
import sqlite3
import statistics
import time
from pathlib import Path

from bench import _workload as work
from bench._cli import Run, main, profile_summary
from bench._process import RssSampler, overnight_server
from bench._report import Report, Row, mib, rate, seconds, verdict

KEY = "d"
TITLE = "results download"
TARGET_MB_PER_SECOND = 300
MAX_GROWTH_BYTES = 64 * 2**20
PASSES = 5


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--requests", type=int, default=None, help="batch size (default 100,000; quick 10,000)")


def sqlite_read_floor(database: Path) -> float:
    """MB/s of reading every stored result line of the (single) batch, row by row."""
    connection = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
    try:
        size = 0
        start = time.perf_counter()
        for state in ("succeeded", "errored"):
            cursor = connection.execute(
                "SELECT result FROM requests WHERE batch_seq = 1 AND state = ? ORDER BY id", (state,)
            )
            while rows := cursor.fetchmany(2000):
                size += sum(len(line) for (line,) in rows)
        return size / 1e6 / (time.perf_counter() - start)
    finally:
        connection.close()


def run(bench: Run) -> Report:
    count = bench.args.requests or (10_000 if bench.quick else 100_000)
    body = work.batch_body(work.custom_ids(count), work.small_params(count))
    data = bench.work / "data"
    server = overnight_server(data, "--concurrency", "64", "--max-requests", str(max(count, 100_000)))
    with server, work.client(server.url) as http:
        drained = work.create_and_drain(http, body, timeout=600)
        floor = sqlite_read_floor(data / "overnight.sqlite3")
        downloads, samplers = [], []
        with bench.profiled(server.pid, KEY) as raw:
            for _ in range(PASSES):
                with RssSampler(server.pid) as rss:
                    downloads.append(work.download_results(http, drained.batch["results_url"]))
                samplers.append(rss)
    if any(download.lines != count for download in downloads):
        raise RuntimeError(f"expected {count} lines per download, got {[d.lines for d in downloads]}")

    speed = statistics.median(download.megabytes_per_second for download in downloads)
    size = downloads[0].bytes
    before = samplers[0].start_bytes
    growth = max(sampler.peak for sampler in samplers) - before
    rows = [
        Row(
            f"{KEY}1",
            f"{TITLE}: {count:,} results ({mib(size)}), streamed",
            rate(speed, "MB/s"),
            f"SQLite read of the same rows: {rate(floor, 'MB/s')}",
            speed / floor,
            f"≥ {TARGET_MB_PER_SECOND} MB/s",
            verdict(speed >= TARGET_MB_PER_SECOND),
        ),
        Row(
            f"{KEY}2",
            f"{TITLE}: server RSS growth over {PASSES} downloads",
            mib(growth),
            f"bytes streamed: {mib(size * PASSES)}",
            growth / (size * PASSES),
            f"flat: ≤ {mib(MAX_GROWTH_BYTES)}",
            verdict(growth <= MAX_GROWTH_BYTES),
        ),
    ]
    details = {
        "downloads": ", ".join(f"{seconds(d.seconds)} ({d.megabytes_per_second:,.0f} MB/s)" for d in downloads),
        "server RSS before the downloads": mib(before),
        "server RSS peak above that, per download": ", ".join(mib(sampler.peak - before) for sampler in samplers),
        "bytes per result line": f"{size / count:,.0f}",
    }
    notes = ["Profiled run: py-spy was attached during the downloads."] if bench.profiling else []
    return Report(KEY, TITLE, rows, details, notes, profile_summary(raw, f"(d) {PASSES} downloads"))


if __name__ == "__main__":
    main(
        run,
        key=KEY,
        title=TITLE,
        description=__doc__ or "",
        add_arguments=add_arguments,
        profile_help="record the server with py-spy during the downloads and summarise it",
    )
