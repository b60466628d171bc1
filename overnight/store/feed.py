"""Requests handed from the event loop to a store thread while a create body still arrives."""

from __future__ import annotations

import queue
import time
from collections.abc import Iterator, Sequence
from typing import Any

_END = object()
_ABORT = object()


class FeedAbortedError(Exception):
    """The create failed before its body was complete: roll the insert back."""


class StreamedInsertUndoneError(Exception):
    """The streamed insert was rolled back although the create itself did not fail (its body came too
    slowly to keep a transaction open for it, or the transaction lost a race): insert the batch whole
    once its body has arrived."""

    taken: list[tuple[str, Any]] | None = None
    """The requests the insert had taken from its feed, in order, read back before rolling back (where
    the store can: `Store.streamed_insert_reads_back`); the rest are still in the feed (`untaken`)."""


class ItemFeed:
    """A one-way, thread-safe queue of (custom_id, params) runs, ended or aborted exactly once.

    The store thread taking the runs waits for all of them at most `hold_seconds` in total, and, with
    `pause_seconds`, at most that long for each run after the first.
    """

    def __init__(self, hold_seconds: float, pause_seconds: float | None = None) -> None:
        self.hold_seconds = hold_seconds
        self.pause_seconds = pause_seconds
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._taken = False
        self._aborted = False

    def put(self, items: Sequence[tuple[str, Any]]) -> None:
        if items:
            self._queue.put(items)

    def end(self) -> None:
        self._queue.put(_END)

    def abort(self) -> None:
        # Seen at the next `take`, not after the runs still queued: nothing more is stored for nothing.
        self._aborted = True
        self._queue.put(_ABORT)

    def take(self, deadline: float) -> Sequence[tuple[str, Any]] | None:
        """The next run, or None at the end; `FeedAbortedError` when aborted, `StreamedInsertUndoneError`
        once `deadline` (monotonic) passes first, or the pause allowed between runs."""
        if self._aborted:
            raise FeedAbortedError
        now = time.monotonic()
        pause = self.pause_seconds if self._taken else None  # the first run may take longer
        if pause is not None and now + pause < deadline:
            until, reason = now + pause, f"the body paused for more than {pause:g} s"
        else:
            until, reason = deadline, f"the body did not complete within {self.hold_seconds:g} s"
        try:
            items = self._queue.get(timeout=max(0.0, until - now))
        except queue.Empty:
            raise StreamedInsertUndoneError(reason) from None
        self._taken = True
        if items is _ABORT:
            raise FeedAbortedError
        return None if items is _END else items

    def untaken(self) -> list[tuple[str, Any]]:
        """The requests put and never taken, in order (once the taker has given up)."""
        left: list[tuple[str, Any]] = []
        while True:
            try:
                items = self._queue.get_nowait()
            except queue.Empty:
                return left
            if items is not _END and items is not _ABORT:
                left += items

    def runs(self, deadline: float, max_requests: int) -> Iterator[Sequence[tuple[str, Any]]]:
        """Each run (`take`) until the end: at least one request in all, and at most `max_requests`
        (`RuntimeError` otherwise, which rolls the insert back)."""
        taken = 0
        while (items := self.take(deadline)) is not None:
            taken += len(items)
            if taken > max_requests:
                raise RuntimeError(f"more than the {max_requests} requests announced")
            yield items
        if not taken:
            raise RuntimeError("a streamed insert without requests")
