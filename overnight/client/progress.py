"""Waiting for a batch to end: a live Rich progress bar on a terminal, a plain line every few seconds otherwise."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from anthropic.types.messages import MessageBatch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn


@dataclass(frozen=True)
class Counts:
    processing: int
    succeeded: int
    errored: int
    canceled: int
    expired: int

    @classmethod
    def of(cls, batch: MessageBatch) -> Counts:
        c = batch.request_counts
        return cls(c.processing, c.succeeded, c.errored, c.canceled, c.expired)

    @property
    def total(self) -> int:
        return self.processing + self.succeeded + self.errored + self.canceled + self.expired

    @property
    def done(self) -> int:
        return self.total - self.processing


def summary(counts: Counts) -> str:
    return (
        f"succeeded {counts.succeeded}, errored {counts.errored}, canceled {counts.canceled}, expired {counts.expired}"
    )


def wait_for_end(
    retrieve: Callable[[], MessageBatch],
    console: Console,
    *,
    poll_seconds: float,
    report_seconds: float,
) -> MessageBatch:
    """Poll `retrieve` until the batch has ended, showing progress on `console` (stderr)."""
    if console.is_terminal:
        return _wait_with_bar(retrieve, console, poll_seconds)
    return _wait_with_lines(retrieve, console, poll_seconds, report_seconds)


def _wait_with_bar(retrieve: Callable[[], MessageBatch], console: Console, poll_seconds: float) -> MessageBatch:
    batch = retrieve()
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("[green]{task.fields[succeeded]} ok[/] [red]{task.fields[errored]} errored[/]"),
        TextColumn("{task.fields[rate]}"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, transient=False) as progress:
        counts = Counts.of(batch)
        task = progress.add_task(
            batch.id,
            total=counts.total,
            completed=counts.done,
            succeeded=counts.succeeded,
            errored=counts.errored,
            rate="",
        )
        while True:
            counts = Counts.of(batch)
            speed = progress.tasks[0].speed
            progress.update(
                task,
                completed=counts.done,
                succeeded=counts.succeeded,
                errored=counts.errored,
                rate=f"{speed:.1f} req/s" if speed else "",
            )
            if batch.processing_status == "ended":
                return batch
            time.sleep(poll_seconds)
            batch = retrieve()


def _wait_with_lines(
    retrieve: Callable[[], MessageBatch], console: Console, poll_seconds: float, report_seconds: float
) -> MessageBatch:
    started = time.monotonic()
    batch = retrieve()
    first = Counts.of(batch)
    last_report: float | None = None
    while True:
        counts = Counts.of(batch)
        now = time.monotonic()
        ended = batch.processing_status == "ended"
        if ended:
            return batch  # the caller says how it ended
        if last_report is None or now - last_report >= report_seconds:
            console.print(
                _plain_line(batch.id, batch.processing_status, counts, first, now - started),
                highlight=False,
                markup=False,
                soft_wrap=True,
            )
            last_report = now
        time.sleep(poll_seconds)
        batch = retrieve()


def _plain_line(batch_id: str, status: str, counts: Counts, first: Counts, elapsed: float) -> str:
    line = f"{batch_id} {status}: {counts.done}/{counts.total} done ({summary(counts)})"
    finished_here = counts.done - first.done
    if status != "ended" and elapsed > 0 and finished_here > 0:
        rate = finished_here / elapsed
        line += f", {rate:.1f} req/s, ETA {_duration(counts.processing / rate)}"
    return line


def _duration(seconds: float) -> str:
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"
