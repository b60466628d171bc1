"""What a benchmark reports (rows of the results table, details, a profile) and how it is rendered."""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import platform
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench._process import REPO_ROOT

RESULTS_DIR = Path(__file__).resolve().parent / "results"

PASS = "pass"
FAIL = "FAIL"
PENDING = "pending backend"
ERROR = "error"


@dataclass
class Row:
    """One line of the results table: a figure, the baseline it was measured against, the verdict."""

    key: str
    benchmark: str
    figure: str
    baseline: str
    ratio: float | None
    target: str
    outcome: str


@dataclass
class Report:
    key: str
    title: str
    rows: list[Row]
    details: dict[str, str] = field(default_factory=dict)
    """Phase times and other measured numbers behind the rows, in display form."""
    notes: list[str] = field(default_factory=list)
    profile: str | None = None
    """A markdown summary of where the server's time went, when the run was profiled."""
    quick: bool = False

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> Report:
        data = json.loads(text)
        data["rows"] = [Row(**row) for row in data["rows"]]
        return cls(**data)


def verdict(passed: bool) -> str:
    return PASS if passed else FAIL


def pending(key: str, benchmark: str, target: str, why: str) -> Row:
    return Row(key, benchmark, "—", "—", None, target, f"{PENDING}: {why}")


def rate(value: float, unit: str) -> str:
    return f"{value:,.0f} {unit}" if value >= 100 else f"{value:,.2f} {unit}"


def seconds(value: float) -> str:
    return f"{value * 1000:,.1f} ms" if value < 1 else f"{value:,.2f} s"


def mib(value: float) -> str:
    return f"{value / 2**20:,.1f} MiB"


def table(rows: list[Row]) -> str:
    lines = [
        "| # | benchmark | figure | baseline (same run) | ratio | target | result |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        ratio = "—" if row.ratio is None else f"{row.ratio:.3g}"
        lines.append(
            f"| {row.key} | {row.benchmark} | {row.figure} | {row.baseline} | {ratio} | {row.target} | {row.outcome} |"
        )
    return "\n".join(lines)


def report_markdown(report: Report, *, heading: str = "###", with_rows: bool = True) -> str:
    parts = [f"{heading} ({report.key}) {report.title}" + (" — quick run" if report.quick else "")]
    if with_rows:
        parts += ["", table(report.rows)]
    if report.details:
        parts += ["", "| measured | value |", "|---|---|"]
        parts += [f"| {name} | {value} |" for name, value in report.details.items()]
    if report.notes:
        parts += [""] + [f"- {note}" for note in report.notes]
    if report.profile:
        parts += ["", report.profile]
    return "\n".join(parts)


def machine_info() -> dict[str, str]:
    cpu = "unknown CPU"
    memory = 0
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            cpu = next((line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")), cpu)
        with open("/proc/meminfo") as meminfo:
            memory = next(int(line.split()[1]) * 1024 for line in meminfo if line.startswith("MemTotal"))
    except OSError:
        pass
    return {
        "cores": f"{os.cpu_count()} ({cpu})",
        "RAM": f"{memory / 2**30:.1f} GiB",
        "Python": platform.python_version(),
        "OS": f"{platform.system()} {platform.release()}",
        "overnight commit": git_revision(),
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }


def git_revision() -> str:
    """The checked-out commit of the repo, noting uncommitted changes under overnight/."""

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], capture_output=True, text=True, cwd=REPO_ROOT, check=False)
        return done.stdout.strip()

    revision = git("rev-parse", "--short", "HEAD") or "unknown"
    dirty = git("status", "--porcelain", "--", "overnight")
    return revision + (" + uncommitted changes in overnight/" if dirty else "")


def machine_markdown(info: dict[str, Any]) -> str:
    return "\n".join(f"- **{name}**: {value}" for name, value in info.items())
