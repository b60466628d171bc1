"""(c) Ingest: create one batch of 100,000 realistic requests (~2.5 KB of params each, ~250 MB body).

Figure: the create call's wall time, as the client sees it (upload, envelope check, insert, commit).
Baseline, measured in the same run: the store's floor as the issue defines it — the same 100,000
(custom_id, params) pairs bulk-inserted into a fresh, bare SQLite file (default settings, WAL) with
overnight's schema (tables and indexes from `overnight/store/tables.py`), by plain `sqlite3`
`executemany` on the raw DBAPI connection in one transaction. A second, stricter floor uses
overnight's own tuned connection settings (`overnight/store/sqlite.py:connect`: page size,
checkpoint policy, cache) and is reported beside it. Floor and
create alternate (floor, create, floor, create, floor; each create on a fresh server): the best
create is the figure, the best floor the baseline.

Where the rest goes, measured in the same run: the creates are sent over a plain socket that times
the upload (≈ the server's receive) apart from the wait for the answer; the same body with its last
custom_id made invalid goes to a separate server (so as not to disturb the memory figure), which
receives and checks the whole envelope and answers 400 without inserting anything; and
`Store.insert_batch`, overnight's own insert, runs in this process (no HTTP) into a fresh file.

Also: the server's peak resident memory (VmHWM, whole process, reset just before the create) against
the body's size.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import create_engine, event

from bench import _workload as work
from bench._cli import Run, add_repeats_argument, main, profile_summary
from bench._process import overnight_server, reset_peak
from bench._report import Report, Row, mib, seconds, verdict
from overnight.store import open_store
from overnight.store.sqlite import connect
from overnight.store.tables import metadata
from overnight.timestamps import now_micros

KEY = "c"
TITLE = "ingest"
MAX_TIME_RATIO = 1.3
MAX_MEMORY_RATIO = 1.5


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--requests", type=int, default=None, help="batch size (default 100,000; quick 10,000)")
    parser.add_argument("--params-bytes", type=int, default=2500, help="size of each request's params (2500)")
    add_repeats_argument(parser)


def on_fresh_file(path: Path, insert: Callable[[Path], float]) -> float:
    """Run a timed insert into a new database file, then delete it and flush dirty pages, so that
    the next measurement does not pay for this one's writeback."""
    try:
        return insert(path)
    finally:
        for leftover in path.parent.glob(path.name + "*"):
            leftover.unlink()
        os.sync()


def bare_insert(path: Path, ids: Sequence[str], params: Sequence[bytes], *, tuned: bool) -> float:
    """Seconds for plain sqlite3 `executemany` to insert the requests, in one transaction.

    `tuned=False` is the issue's floor: a bare SQLite file (default page size, automatic
    checkpoints, default cache) in WAL mode. `tuned=True` takes the file and the connection from
    overnight's own `connect()` (its page size, checkpoint policy, synchronous level and cache) — a
    stricter floor, since those settings already make storing cheaper. Both use overnight's schema;
    only the insert itself bypasses overnight, on the raw DBAPI connection.
    """
    engine = connect(f"sqlite:///{path}") if tuned else create_engine(f"sqlite:///{path}")
    if not tuned:
        event.listen(engine, "connect", lambda dbapi, _: dbapi.execute("PRAGMA journal_mode=WAL"))
    try:
        metadata.create_all(engine)
        connection = engine.raw_connection()
        try:
            cursor = connection.cursor()
            cursor.execute(
                "INSERT INTO batches (seq, id, workspace, status, total, processing, created_at, expires_at) "
                "VALUES (1, 'msgbatch_floor', 'default', 'in_progress', ?, ?, 0, 0)",
                (len(ids), len(ids)),
            )
            connection.commit()
            rows = list(zip(ids, params, strict=True))
            start = time.perf_counter()
            cursor.executemany(
                "INSERT INTO requests (batch_seq, custom_id, params, state, attempt) VALUES (1, ?, ?, 'pending', 0)",
                rows,
            )
            connection.commit()
            return time.perf_counter() - start
        finally:
            connection.close()
    finally:
        engine.dispose()


def store_insert(path: Path, ids: Sequence[str], params: Sequence[bytes]) -> float:
    """Seconds for overnight's `Store.insert_batch` (in this process) to store the batch."""
    store = open_store(f"sqlite:///{path}")
    try:
        store.migrate()
        items = list(zip(ids, params, strict=True))
        start = time.perf_counter()
        now = now_micros()

        async def insert() -> None:
            await store.insert_batch(
                batch_id="msgbatch_" + "0" * 24, workspace="default", created_at=now, expires_at=now + 1, items=items
            )

        asyncio.run(insert())
        return time.perf_counter() - start
    finally:
        store.close()


def post(port: int, body: bytes, expected_status: int) -> work.TimedPost:
    posted = work.post_timing_upload(port, "/v1/messages/batches", body)
    if posted.status != expected_status:
        raise RuntimeError(f"create answered {posted.status}, expected {expected_status}: {posted.body[:300]!r}")
    return posted


@dataclass(frozen=True)
class Created:
    posted: work.TimedPost
    idle_bytes: int
    peak_bytes: int
    profile: Path | None


def create_once(bench: Run, body: bytes, limits: Sequence[str], attempt: int) -> Created:
    """One create on a fresh server and data dir (deleted afterwards), with the server's peak RSS."""
    data = bench.work / f"data-{attempt}"
    server = overnight_server(data, *limits)
    try:
        with server:
            idle = server.memory()
            reset_peak(server.pid)
            with bench.profiled(server.pid, KEY) as raw:
                posted = post(server.port, body, 200)
            peak = server.memory().peak_bytes
    finally:
        shutil.rmtree(data, ignore_errors=True)
        os.sync()
    return Created(posted, idle.rss_bytes, peak, raw)


def run(bench: Run) -> Report:
    count = bench.args.requests or (10_000 if bench.quick else 100_000)
    ids = work.custom_ids(count)
    params = work.realistic_params(count, size=bench.args.params_bytes)
    body = work.batch_body(ids, params)
    invalid_last = work.batch_body([*ids[:-1], ids[-1][:-1] + "!"], params)  # same size, fails the check
    limits = ("--max-body-bytes", str(len(body) + 1), "--max-requests", str(max(count, 100_000)))

    def floor_run(attempt: int, *, tuned: bool) -> float:
        path = bench.work / f"floor-{'tuned' if tuned else 'bare'}-{attempt}.sqlite3"
        return on_fresh_file(path, lambda path: bare_insert(path, ids, params, tuned=tuned))

    floors, tuned_floors, creates = [], [], []
    for attempt in range(bench.repeats):  # floors, create, floors, create, ..., floors
        floors.append(floor_run(attempt, tuned=False))
        tuned_floors.append(floor_run(attempt, tuned=True))
        creates.append(create_once(bench, body, limits, attempt))
    floors.append(floor_run(bench.repeats, tuned=False))
    tuned_floors.append(floor_run(bench.repeats, tuned=True))
    tuned_floor = min(tuned_floors)
    store_seconds = on_fresh_file(bench.work / "store.sqlite3", lambda path: store_insert(path, ids, params))
    with overnight_server(bench.work / "envelope", *limits) as server:
        envelope = post(server.port, invalid_last, 400)

    best = min(creates, key=lambda created: created.posted.seconds)
    created, create, floor = best.posted, best.posted.seconds, min(floors)
    peak = max(attempt.peak_bytes for attempt in creates)
    idle_bytes = best.idle_bytes
    size = f"{count:,} requests, {mib(len(body))} body"
    rows = [
        Row(
            f"{KEY}1",
            f"{TITLE}: create time ({size})",
            seconds(create),
            f"bare sqlite3 bulk insert (default settings, WAL), same schema: {seconds(floor)}",
            create / floor,
            f"≤ {MAX_TIME_RATIO}x the floor",
            verdict(create <= MAX_TIME_RATIO * floor),
        ),
        Row(
            f"{KEY}1'",
            f"{TITLE}: the same create against a stricter floor",
            seconds(create),
            f"sqlite3 bulk insert with overnight's tuned settings: {seconds(tuned_floor)}",
            create / tuned_floor,
            f"≤ {MAX_TIME_RATIO}x the tuned floor (stricter than c1's)",
            verdict(create <= MAX_TIME_RATIO * tuned_floor),
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
        "params per request": f"{sum(map(len, params)) / count:,.0f} bytes",
        "create throughput": f"{count / create:,.0f} requests/s, {len(body) / 1e6 / create:,.0f} MB/s",
        "creates (fresh server each; the best is reported)": ", ".join(
            seconds(attempt.posted.seconds) for attempt in creates
        ),
        "floor runs (before, between and after the creates)": ", ".join(map(seconds, floors)),
        "tuned floor runs (likewise)": ", ".join(map(seconds, tuned_floors)),
        "create: receiving the body (client's upload)": seconds(created.upload_seconds),
        "create: from the body's arrival to the answer": seconds(create - created.upload_seconds),
        "invalid body: receiving / arrival to the 400 (envelope decode + check)": f"{seconds(envelope.upload_seconds)}"
        f" / {seconds(envelope.seconds - envelope.upload_seconds)}",
        "so: insert + commit inside the server, about": seconds(
            (create - created.upload_seconds) - (envelope.seconds - envelope.upload_seconds)
        ),
        "Store.insert_batch alone, in-process, fresh file": f"{seconds(store_seconds)} "
        f"({store_seconds / floor:.2f}x the floor)",
        "server RSS before create": mib(idle_bytes),
        "server peak RSS growth during create (the worst create)": f"{mib(peak - idle_bytes)} "
        f"({(peak - idle_bytes) / len(body):.2f}x the body)",
    }
    notes = (
        ["Profiled run: py-spy was attached during the create call, so it is slower than unprofiled."]
        if bench.profiling
        else []
    )
    return Report(KEY, TITLE, rows, details, notes, profile_summary(best.profile, "(c) the create call"))


if __name__ == "__main__":
    main(
        run,
        key=KEY,
        title=TITLE,
        description=__doc__ or "",
        add_arguments=add_arguments,
        profile_help="record the server with py-spy during the create call and summarise it",
    )
