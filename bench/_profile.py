"""Where the server's time goes: py-spy attached to its process for the measured window, summarised.

py-spy samples every thread (the event loop and the store's writer/reader threads alike), which a
profiler inside the process (pyinstrument) cannot. Idle threads are left out, so the counts are
CPU time. The summary lists the threads, the hottest functions by own time, and overnight's own
functions by inclusive time, each as a share of all samples.
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

SAMPLE_RATE_HZ = 100
_FRAME = re.compile(r"^(?P<function>.*) \((?P<file>[^():]*)(?::(?P<line>\d+))?\)$")
_THREAD = re.compile(r"^thread \(\w+\): ?(?P<name>.*)$")


def py_spy() -> str | None:
    """The py-spy executable (next to this Python, else on PATH), or None."""
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else shutil.which("py-spy")


class PySpy:
    """`with PySpy(pid, raw_path):` records every thread of `pid` while the block runs."""

    def __init__(self, pid: int, raw_path: Path, *, rate_hz: int = SAMPLE_RATE_HZ) -> None:
        executable = py_spy()
        if executable is None:
            raise RuntimeError("py-spy is not installed: .venv/bin/pip install py-spy==0.4.3")
        self.raw_path = raw_path
        self.command = [
            executable,
            "record",
            "--pid",
            str(pid),
            "--format",
            "raw",
            "--threads",
            "--rate",
            str(rate_hz),
            "--output",
            str(raw_path),
        ]
        self.log_path = raw_path.with_suffix(".log")
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> PySpy:
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(self.command, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while b"Sampling" not in self.log_path.read_bytes() and time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"py-spy failed: {self.log_path.read_text(errors='replace')}")
            time.sleep(0.02)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGINT)  # py-spy writes its output on Ctrl-C
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)


@dataclass(frozen=True)
class Frame:
    function: str
    file: str

    def __str__(self) -> str:
        return f"`{_short(self.file)}:{self.function}`"


def _short(path: str) -> str:
    """Paths from the repo root (overnight/...) or from site-packages; others as py-spy gave them."""
    for marker in ("/overnight/", "site-packages/", "lib/python3"):
        index = path.rfind(marker)
        if index != -1:
            return path[index + 1 :] if marker == "/overnight/" else path[index + len(marker) :].lstrip("/")
    return path


def _parse_frame(text: str) -> Frame:
    match = _FRAME.match(text)
    if match is None:
        return Frame(text, "?")
    return Frame(match["function"], match["file"])


# Leaves that are not work: a store pool thread blocked on its queue, and the event loop inside
# uvloop's C run loop (socket I/O and HTTP parsing, or waiting in epoll: py-spy cannot tell which).
_WAITING = {
    ("_worker", "concurrent/futures/thread.py"): "store thread pools waiting for work",
    ("Runner.run", "asyncio/runners.py"): "event loop inside uvloop (C: socket I/O, HTTP parsing, or epoll wait)",
}


def _waiting(frame: Frame) -> str | None:
    return next(
        (
            label
            for (function, file), label in _WAITING.items()
            if frame.function == function and frame.file.endswith(file)
        ),
        None,
    )


def _is_overnight(frame: Frame) -> bool:
    return "overnight/" in frame.file and "/bench/" not in frame.file


@dataclass
class _Samples:
    threads: Counter[str] = field(default_factory=Counter)
    waiting: Counter[str] = field(default_factory=Counter)
    own: Counter[Frame] = field(default_factory=Counter)
    inclusive: Counter[Frame] = field(default_factory=Counter)
    overnight_own: Counter[Frame] = field(default_factory=Counter)
    work: int = 0

    def add(self, stack: str, count: int) -> None:
        parts = stack.split(";")
        thread = _THREAD.match(parts[0])
        if thread is not None:
            parts = parts[1:]
        frames = [_parse_frame(part) for part in parts]
        if not frames:
            return
        waiting = _waiting(frames[-1])
        if waiting is not None:
            self.waiting[waiting] += count
            return
        self.work += count
        self.threads[_thread_group(thread["name"]) if thread else "unnamed"] += count
        self.own[frames[-1]] += count
        for frame in set(frames):
            self.inclusive[frame] += count
        # Own time of overnight code: the innermost overnight frame pays for the library calls it makes.
        innermost = next((frame for frame in reversed(frames) if _is_overnight(frame)), None)
        if innermost is not None:
            self.overnight_own[innermost] += count


def summarize(raw_path: Path, *, title: str, top: int = 15) -> str:
    """A markdown summary of a py-spy raw (collapsed stacks) file."""
    samples = _Samples()
    for line in raw_path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            samples.add(stack, int(count))
    if not samples.work:
        return f"#### Profile: {title}\n\n(no samples)"

    def share(count: int) -> str:
        return f"{100 * count / samples.work:.1f}%"

    def rows(counts: list[tuple[Frame, int]]) -> list[str]:
        return [f"| {frame} | {share(count)} |" for frame, count in counts[:top]]

    lines = [
        f"#### Profile: {title}",
        "",
        f"py-spy at {SAMPLE_RATE_HZ} Hz over every thread: {samples.work:,} samples of work "
        f"(~{samples.work / SAMPLE_RATE_HZ:.1f} CPU-seconds); shares below are of those.",
        "",
        "- by thread: " + ", ".join(f"{name} {share(n)}" for name, n in samples.threads.most_common()),
        "- not counted: "
        + (", ".join(f"{label} {n / SAMPLE_RATE_HZ:.1f} s" for label, n in samples.waiting.most_common()) or "nothing"),
        "",
        "| overnight function, inclusive (it and all it calls) | share |",
        "|---|---|",
        *rows(
            [
                (frame, n)
                for frame, n in samples.inclusive.most_common()
                if _is_overnight(frame) and frame.function not in ("<module>", "serve")
            ]
        ),
        "",
        "| overnight function, own (its code and the library calls it makes directly) | share |",
        "|---|---|",
        *rows(samples.overnight_own.most_common()),
        "",
        "| hottest leaf functions (any code) | share |",
        "|---|---|",
        *rows(samples.own.most_common()),
    ]
    return "\n".join(lines)


def _thread_group(name: str) -> str:
    """Thread names without pool indexes: `store-write_0` → `store-write`."""
    base = re.sub(r"_\d+$", "", name.strip()) or "unnamed"
    return "event loop (MainThread)" if base == "MainThread" else base
