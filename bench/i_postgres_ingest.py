"""(i) Ingest on PostgreSQL: (c)'s 100k x 2.5 KB create, against a bare binary COPY of the same rows
into the same table (in this process, psycopg, one transaction) in the same run; and the server's
peak RSS against the body. Targets: create ≤ 1.3x the COPY floor; peak RSS ≤ 2x the body.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence

import psycopg

from bench import _workload as work
from bench._cli import Run, add_repeats_argument, main
from bench._postgres import fresh_database, postgres_server
from bench._process import overnight_server, reset_peak
from bench._report import Report, Row, mib, seconds, verdict
from overnight.store import open_store

KEY = "i"
TITLE = "ingest on PostgreSQL"
MAX_TIME_RATIO = 1.3
MAX_MEMORY_RATIO = 2.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--requests", type=int, default=None, help="batch size (default 100,000; quick 10,000)")
    add_repeats_argument(parser)


def copy_floor(admin_url: str, ids: Sequence[str], params: Sequence[bytes]) -> float:
    """Seconds for a bare binary COPY of the requests into overnight's (migrated) schema, committed."""
    url = fresh_database(admin_url)
    store = open_store(url)
    store.migrate()
    store.close()
    with psycopg.connect(url) as conn:
        conn.execute(
            "INSERT INTO batches (seq, id, workspace, status, total, processing, created_at, expires_at) "
            "VALUES (1, 'msgbatch_floor', 'default', 'in_progress', %s, %s, 0, 0)",
            (len(ids), len(ids)),
        )
        conn.commit()
        start = time.perf_counter()
        with (
            conn.cursor() as cursor,
            cursor.copy(
                "COPY requests (batch_seq, custom_id, params, state, attempt) FROM STDIN (FORMAT BINARY)"
            ) as copy,
        ):
            copy.set_types(["int8", "text", "bytea", "text", "int4"])
            for custom_id, param in zip(ids, params, strict=True):
                copy.write_row((1, custom_id, param, "pending", 0))
        conn.commit()
        return time.perf_counter() - start


def create_once(bench: Run, admin_url: str, body: bytes, count: int, attempt: int) -> tuple[float, int]:
    """Seconds for the create call on a fresh server and database, and the server's peak RSS."""
    database = fresh_database(admin_url)
    limits = ("--max-body-bytes", str(len(body) + 1), "--max-requests", str(max(count, 100_000)))
    with overnight_server(bench.work / f"create-{attempt}", "--database", database, "--role", "api", *limits) as api:
        # A running server has its database connections open; the floor's is open too.
        with work.client(api.url) as http:
            http.get("/v1/messages/batches").raise_for_status()
        reset_peak(api.pid)
        posted = work.post_timing_upload(api.port, "/v1/messages/batches", body)
        if posted.status != 200:
            raise RuntimeError(f"create answered {posted.status}: {posted.body[:300]!r}")
        return posted.seconds, api.memory().peak_bytes


def run(bench: Run) -> Report:
    count = bench.args.requests or (10_000 if bench.quick else 100_000)
    ids = work.custom_ids(count)
    params = work.realistic_params(count)
    body = work.batch_body(ids, params)
    floors, creates = [], []
    with postgres_server(bench.work) as admin_url:
        for attempt in range(bench.repeats):
            floors.append(copy_floor(admin_url, ids, params))
            creates.append(create_once(bench, admin_url, body, count, attempt))
        floors.append(copy_floor(admin_url, ids, params))
    floor = min(floors)
    create = min(seconds_ for seconds_, _ in creates)
    peak = max(peak for _, peak in creates)
    size = f"{count:,} requests, {mib(len(body))} body"
    rows = [
        Row(
            f"{KEY}1",
            f"{TITLE}: create time ({size})",
            seconds(create),
            f"bare binary COPY of the same rows, same table: {seconds(floor)}",
            create / floor,
            f"≤ {MAX_TIME_RATIO}x the floor",
            verdict(create <= MAX_TIME_RATIO * floor),
        ),
        Row(
            f"{KEY}2",
            f"{TITLE}: server peak RSS during create",
            mib(peak),
            f"body size: {mib(len(body))}",
            peak / len(body),
            f"≤ {MAX_MEMORY_RATIO}x the body",
            verdict(peak <= MAX_MEMORY_RATIO * len(body)),
        ),
    ]
    details = {
        "creates (fresh server and database each)": ", ".join(seconds(s) for s, _ in creates),
        "COPY floor runs (before, between and after)": ", ".join(map(seconds, floors)),
        "params per request": f"{sum(map(len, params)) / count:,.0f} bytes",
    }
    return Report(KEY, TITLE, rows, details)


if __name__ == "__main__":
    main(run, key=KEY, title=TITLE, description=__doc__ or "", add_arguments=add_arguments)
