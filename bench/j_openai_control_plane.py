"""(j) OpenAI-format control plane: a 100k-request OpenAI batch against the Anthropic figure, same run.

On the zero-latency fake backend, SQLite, a fresh server for each: the Anthropic path is (b)'s (create →
ended → results downloaded); the OpenAI path is upload the input file → create → poll until
`completed` (the first read after the engine ends it writes the output file) → output file downloaded.
Both are timed end to end by a plain httpx client. Target: OpenAI / Anthropic throughput ≥ 0.9.
"""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import dataclass
from pathlib import Path

from bench import _workload as work
from bench._cli import Run, add_repeats_argument, main, profile_summary
from bench._process import ChildServer, overnight_server
from bench._report import Report, Row, mib, rate, seconds, verdict

KEY = "j"
TITLE = "OpenAI-format control plane"
TARGET_RATIO = 0.9
_OPENAI_HEADERS = {"authorization": "Bearer bench"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--requests", type=int, default=None, help="batch size (default 100,000; quick 10,000)")
    parser.add_argument("--concurrency", type=int, default=64, help="overnight --concurrency (default 64)")
    add_repeats_argument(parser)


@dataclass(frozen=True)
class Timed:
    seconds: float
    phases: dict[str, float]
    output_bytes: int
    cpu_seconds: float
    """The server's CPU time (all its threads) over the timed window: steadier than wall time when other
    work shares the machine, so the report gives its ratio too."""
    profile: Path | None = None


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process `pid` so far (/proc/PID/stat fields 14 and 15)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def input_file(count: int) -> bytes:
    """The same tiny requests as (b)'s, as OpenAI batch input lines."""
    return b"".join(
        b'{"custom_id":"%s","method":"POST","url":"/v1/chat/completions","body":{"model":"%s","max_tokens":16,'
        b'"messages":[{"role":"user","content":"Say hello number %d"}]}}\n' % (cid.encode(), work.MODEL.encode(), i)
        for i, cid in enumerate(work.custom_ids(count))
    )


def _server(bench: Run, name: str, count: int) -> ChildServer:
    return overnight_server(
        bench.work / name,
        "--concurrency",
        str(bench.args.concurrency),
        "--max-requests",
        str(max(count, 100_000)),
        "--openai-max-file-lines",
        str(max(count, 50_000)),
    )


def anthropic_once(bench: Run, body: bytes, count: int, attempt: int) -> Timed:
    with (
        _server(bench, f"anthropic-{attempt}", count) as server,
        work.client(server.url) as http,
        bench.profiled(server.pid, f"{KEY}-anthropic") as raw,
    ):
        cpu_start = cpu_seconds(server.pid)
        start = time.perf_counter()
        drained = work.create_and_drain(http, body, timeout=600)
        download = work.download_results(http, drained.batch["results_url"])
        total = time.perf_counter() - start
        cpu = cpu_seconds(server.pid) - cpu_start
    if work.succeeded(drained.batch) != count or download.lines != count:
        raise RuntimeError(f"anthropic: {drained.batch['request_counts']}, {download.lines} lines")
    return Timed(
        total,
        {"create": drained.create_seconds, "run": drained.run_seconds, "download": download.seconds},
        download.bytes,
        cpu,
        raw,
    )


def openai_once(bench: Run, content: bytes, count: int, attempt: int) -> Timed:
    with (
        _server(bench, f"openai-{attempt}", count) as server,
        work.client(server.url) as http,
        bench.profiled(server.pid, KEY) as raw,
    ):
        http.headers.update(_OPENAI_HEADERS)
        del http.headers["content-type"]
        cpu_start = cpu_seconds(server.pid)
        start = time.perf_counter()
        uploaded = http.post("/v1/files", files={"file": ("input.jsonl", content)}, data={"purpose": "batch"})
        uploaded.raise_for_status()
        upload_done = time.perf_counter()
        created = http.post(
            "/v1/batches",
            json={
                "input_file_id": uploaded.json()["id"],
                "completion_window": "24h",
                "endpoint": "/v1/chat/completions",
            },
        )
        created.raise_for_status()
        batch = created.json()
        create_done = time.perf_counter()
        validated = None  # when a poll first saw the batch past `validating`
        while batch["status"] not in ("completed", "failed", "expired", "cancelled"):
            time.sleep(work.POLL_SECONDS)
            batch = http.get(f"/v1/batches/{batch['id']}").raise_for_status().json()
            if validated is None and batch["status"] != "validating":
                validated = time.perf_counter()
        run_done = time.perf_counter()
        validated = validated or run_done
        size = lines = 0
        with http.stream("GET", f"/v1/files/{batch['output_file_id']}/content") as response:
            for chunk in response.iter_raw():
                size += len(chunk)
                lines += chunk.count(b"\n")
        total = time.perf_counter() - start
        cpu = cpu_seconds(server.pid) - cpu_start
    if batch["status"] != "completed" or batch["request_counts"]["completed"] != count or lines != count:
        raise RuntimeError(f"openai: {batch['status']} {batch['request_counts']}, {lines} lines")
    return Timed(
        total,
        {
            "upload": upload_done - start,
            "create": create_done - upload_done,
            "validating (to the poll that saw it end)": validated - create_done,
            "run (incl. writing the output file)": run_done - validated,
            "download": total - (run_done - start),
        },
        size,
        cpu,
        raw,
    )


def run(bench: Run) -> Report:
    count = bench.args.requests or (10_000 if bench.quick else 100_000)
    body = work.batch_body(work.custom_ids(count), work.small_params(count))
    content = input_file(count)
    anthropic_runs, openai_runs = [], []
    for attempt in range(bench.repeats):  # alternated, so that other load hits both alike
        anthropic_runs.append(anthropic_once(bench, body, count, attempt))
        openai_runs.append(openai_once(bench, content, count, attempt))
    best_anthropic = min(anthropic_runs, key=lambda timed: timed.seconds)
    best_openai = min(openai_runs, key=lambda timed: timed.seconds)
    ratio = best_anthropic.seconds / best_openai.seconds
    row = Row(
        KEY,
        f"{TITLE}: {count:,}-request OpenAI batch (upload → completed → output downloaded), fake backend, SQLite",
        rate(count / best_openai.seconds, "req/s"),
        f"Anthropic-format batch, same size, same run: {rate(count / best_anthropic.seconds, 'req/s')}",
        ratio,
        f"≥ {TARGET_RATIO}x the Anthropic figure",
        verdict(ratio >= TARGET_RATIO),
    )
    # Server CPU per request, summed over every run of each format: other load stretches wall time
    # far more than it does the server's own CPU time.
    cpu_ratio = sum(t.cpu_seconds for t in openai_runs) / sum(t.cpu_seconds for t in anthropic_runs)
    details = {
        "OpenAI runs": ", ".join(rate(count / t.seconds, "req/s") for t in openai_runs),
        "Anthropic runs": ", ".join(rate(count / t.seconds, "req/s") for t in anthropic_runs),
        "OpenAI phases (best run)": ", ".join(f"{k} {seconds(v)}" for k, v in best_openai.phases.items()),
        "Anthropic phases (best run)": ", ".join(f"{k} {seconds(v)}" for k, v in best_anthropic.phases.items()),
        "server CPU-s, OpenAI runs": ", ".join(f"{t.cpu_seconds:.2f}" for t in openai_runs),
        "server CPU-s, Anthropic runs": ", ".join(f"{t.cpu_seconds:.2f}" for t in anthropic_runs),
        "server CPU, OpenAI / Anthropic (all runs)": f"{cpu_ratio:.3f}",
        "input file / create body": f"{mib(len(content))} / {mib(len(body))}",
        "output file / results": f"{mib(best_openai.output_bytes)} / {mib(best_anthropic.output_bytes)}",
    }
    profiles = [
        profile_summary(best_openai.profile, "(j) OpenAI batch: upload → completed → output downloaded"),
        profile_summary(best_anthropic.profile, "(j) Anthropic batch: create → ended → results downloaded"),
    ]
    profile = "\n\n".join(summary for summary in profiles if summary) or None
    notes = ["Profiled run: py-spy was attached to both runs' servers."] if bench.profiling else []
    return Report(KEY, TITLE, [row], details, notes, profile)


if __name__ == "__main__":
    main(
        run,
        key=KEY,
        title=TITLE,
        description=__doc__ or "",
        add_arguments=add_arguments,
        profile_help="record both runs' servers with py-spy and summarise them",
    )
