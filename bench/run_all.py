"""Run every benchmark and write one markdown report: `python -m bench.run_all [--quick] [--profile]`.

Each benchmark runs as its own process (`python -m bench.<module> --json-out ...`), one after the
other, under a time limit, so that one failing or hanging cannot take the others with it and each
starts with a clean memory. The report (machine, the results table, each benchmark's measurements,
and profiles) is printed and written to `bench/results/latest.md`; logs and JSON sit beside it.

With --profile, the benchmarks whose targets concern where the time goes ((b) and (c)) and any other
benchmark that missed its target run a second time with py-spy attached to the server; the figures
in the table always come from the unprofiled runs.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from dataclasses import dataclass

from bench._process import REPO_ROOT, child_environment
from bench._report import (
    ERROR,
    FAIL,
    RESULTS_DIR,
    Report,
    Row,
    machine_info,
    machine_markdown,
    report_markdown,
    table,
)


@dataclass(frozen=True)
class Benchmark:
    key: str
    module: str
    title: str
    profilable: bool
    always_profile: bool = False


BENCHMARKS = [
    Benchmark("a", "a_upstream_efficiency", "efficiency on a capacity-limited upstream", profilable=True),
    Benchmark("b", "b_control_plane", "control-plane throughput", profilable=True, always_profile=True),
    Benchmark("c", "c_ingest", "ingest", profilable=True, always_profile=True),
    Benchmark("d", "d_results_download", "results download", profilable=True),
    Benchmark("e", "e_list", "list", profilable=False),
    Benchmark("f", "f_local_model", "local model", profilable=True),
    Benchmark("g", "g_scale_out", "scale-out across workers", profilable=False),
    Benchmark("h", "h_postgres_control_plane", "control plane on PostgreSQL", profilable=False),
    Benchmark("i", "i_postgres_ingest", "ingest on PostgreSQL", profilable=False),
    Benchmark("j", "j_openai_control_plane", "OpenAI-format control plane", profilable=True),
    Benchmark("k", "k_prefix_cache", "shared-prefix batch on the local model", profilable=True),
]
TIMEOUT_SECONDS = 900
QUICK_TIMEOUT_SECONDS = 300


def run_one(benchmark: Benchmark, *, quick: bool, profile: bool) -> Report:
    suffix = "-profile" if profile else ""
    json_path = RESULTS_DIR / f"{benchmark.key}{suffix}.json"
    log_path = RESULTS_DIR / f"{benchmark.key}{suffix}.log"
    json_path.unlink(missing_ok=True)
    command = [sys.executable, "-m", f"bench.{benchmark.module}", "--json-out", str(json_path)]
    command += ["--quick"] * quick + ["--profile"] * profile
    limit = QUICK_TIMEOUT_SECONDS if quick else TIMEOUT_SECONDS
    print(
        f"[run_all] {' '.join(command[1:])} (limit {limit} s, log {log_path.relative_to(REPO_ROOT)})",
        file=sys.stderr,
        flush=True,
    )
    start = time.monotonic()
    with log_path.open("wb") as log:
        try:
            subprocess.run(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=REPO_ROOT,
                env=child_environment(),
                timeout=limit,
                check=False,
            )
        except subprocess.TimeoutExpired:
            return _failed(benchmark, f"{ERROR}: no result within {limit} s (see {log_path.name})")
    print(f"[run_all] ({benchmark.key}) done in {time.monotonic() - start:.0f} s", file=sys.stderr, flush=True)
    if not json_path.exists():
        return _failed(benchmark, f"{ERROR}: no report (see {log_path.name})")
    return Report.from_json(json_path.read_text())


def _failed(benchmark: Benchmark, outcome: str) -> Report:
    return Report(benchmark.key, benchmark.title, [Row(benchmark.key, benchmark.title, "—", "—", None, "—", outcome)])


def missed(report: Report) -> bool:
    return any(row.outcome in (FAIL,) or row.outcome.startswith(ERROR) for row in report.rows)


def render(reports: list[Report], profiles: list[Report], machine: dict[str, str], quick: bool) -> str:
    rows = [row for report in reports for row in report.rows]
    parts = [
        "# overnight benchmarks" + (" (quick run: scaled-down sizes, not comparable with the targets)" * quick),
        "",
        machine_markdown(machine),
        "",
        "Ratio = figure ÷ the baseline measured in the same run (for (b) the baseline is the target itself).",
        "",
        table(rows),
        "",
        "## Measurements",
    ]
    for report in reports:
        parts += ["", report_markdown(report, with_rows=False)]
    if profiles:
        parts += ["", "## Profiles (separate runs with py-spy attached to the server)"]
        for report in profiles:
            parts += ["", f"### ({report.key}) {report.title}", ""]
            parts += [report.profile or f"(no profile: {'; '.join(row.outcome for row in report.rows)})"]
    return "\n".join(parts) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.run_all", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="scaled-down sizes for a smoke run")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="profile (b), (c) and every benchmark that missed its target, in extra runs",
    )
    parser.add_argument("--only", default="", help="comma-separated keys to run, e.g. b,c (default: all)")
    args = parser.parse_args()
    chosen = [b for b in BENCHMARKS if not args.only or b.key in args.only.split(",")]
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)

    machine = machine_info()
    reports = [run_one(benchmark, quick=args.quick, profile=False) for benchmark in chosen]
    profiles = []
    if args.profile:
        for benchmark, report in zip(chosen, reports, strict=True):
            if benchmark.profilable and (benchmark.always_profile or missed(report)):
                profiles.append(run_one(benchmark, quick=args.quick, profile=True))

    markdown = render(reports, profiles, machine, args.quick)
    (RESULTS_DIR / "latest.md").write_text(markdown)
    print(markdown)
    print(f"[run_all] written to {(RESULTS_DIR / 'latest.md').relative_to(REPO_ROOT)}", file=sys.stderr)


if __name__ == "__main__":
    main()
