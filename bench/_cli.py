"""The command line every benchmark module shares: `python -m bench.<module> [--quick] [--profile]`."""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from bench._profile import PySpy, summarize
from bench._report import ERROR, RESULTS_DIR, Report, Row, git_revision, report_markdown


@dataclass(frozen=True)
class Run:
    """What a benchmark gets: its arguments and a scratch directory deleted afterwards."""

    args: argparse.Namespace
    work: Path

    @property
    def quick(self) -> bool:
        return bool(self.args.quick)

    @property
    def profiling(self) -> bool:
        return bool(self.args.profile)

    @property
    def repeats(self) -> int:
        """How many times to measure (on fresh servers), keeping the best: 1 when quick or profiling."""
        return 1 if self.quick or self.profiling else int(getattr(self.args, "repeats", 1))

    def profile_file(self, name: str) -> Path | None:
        """Where `profiled(pid, name)` writes its raw stacks; None without --profile."""
        return RESULTS_DIR / f"profile-{name}.txt" if self.profiling else None

    @contextlib.contextmanager
    def profiled(self, pid: int, name: str) -> Iterator[Path | None]:
        """Record `pid` with py-spy for the block if --profile was given; yields the raw file's path."""
        raw = self.profile_file(name)
        if raw is None:
            yield None
            return
        raw.parent.mkdir(parents=True, exist_ok=True)
        with PySpy(pid, raw):
            yield raw


def add_repeats_argument(parser: argparse.ArgumentParser, default: int = 2) -> None:
    parser.add_argument(
        "--repeats",
        type=int,
        default=default,
        help=f"measure N times on fresh servers and keep the best, since other load only ever slows a run "
        f"down (default {default}; 1 with --quick or --profile)",
    )


def profile_summary(raw: Path | None, title: str) -> str | None:
    return None if raw is None else summarize(raw, title=title) + f"\n\nRaw stacks: `bench/results/{raw.name}`."


Benchmark = Callable[[Run], Report]


class OtherLoad:
    """CPU time the machine spent outside this process and its (waited-for) children since creation."""

    def __init__(self) -> None:
        self.start = time.monotonic()
        self.busy = self._machine_busy_seconds()
        self.ours = self._our_seconds()

    @staticmethod
    def _machine_busy_seconds() -> float:
        with open("/proc/stat") as stat:
            fields = [int(value) for value in stat.readline().split()[1:]]
        idle = fields[3] + fields[4]  # idle + iowait
        return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")

    @staticmethod
    def _our_seconds() -> float:
        times = os.times()
        return times.user + times.system + times.children_user + times.children_system

    def describe(self) -> str:
        elapsed = time.monotonic() - self.start
        other = max(0.0, (self._machine_busy_seconds() - self.busy) - (self._our_seconds() - self.ours))
        share = other / (elapsed * (os.cpu_count() or 1))
        return f"{other:.1f} CPU-s over {elapsed:.0f} s ({share:.0%} of the machine; kernel writeback included)"


def main(
    benchmark: Benchmark,
    *,
    key: str,
    title: str,
    description: str,
    add_arguments: Callable[[argparse.ArgumentParser], None] | None = None,
    profile_help: str | None = None,
) -> None:
    parser = argparse.ArgumentParser(prog=f"python -m bench.{Path(sys.argv[0]).stem}", description=description)
    parser.add_argument("--quick", action="store_true", help="scaled-down sizes for a smoke run")
    if profile_help is not None:
        parser.add_argument("--profile", action="store_true", help=profile_help)
    parser.add_argument("--json-out", type=Path, help="also write the report as JSON here (used by run_all)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory (data dirs, logs)")
    if add_arguments is not None:
        add_arguments(parser)
    args = parser.parse_args()
    if profile_help is None:
        args.profile = False

    work = Path(tempfile.mkdtemp(prefix=f"overnight-bench-{key}-"))
    meter = OtherLoad()
    revision = git_revision()
    try:
        report = benchmark(Run(args, work))
    except Exception as exc:
        traceback.print_exc()
        row = Row(key, title, "—", "—", None, "—", f"{ERROR}: {type(exc).__name__}: {str(exc)[:200]}")
        report = Report(key, title, [row])
    finally:
        if args.keep:
            print(f"scratch directory kept: {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    report.quick = bool(args.quick)
    # Other work on the machine moves every figure: say how much there was.
    report.details["CPU used by other processes meanwhile"] = meter.describe()
    report.details["overnight commit"] = revision
    print(report_markdown(report))
    if args.json_out is not None:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        args.json_out.write_text(report.to_json())
