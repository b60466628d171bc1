"""Requests handed from the event loop to the store's writer thread while a create body still arrives."""

from __future__ import annotations

import queue
import time
from collections.abc import Sequence
from typing import Any

_END = object()
_ABORT = object()


class FeedAbortedError(Exception):
    """The create failed before its body was complete: roll the insert back."""


class FeedTooSlowError(Exception):
    """The body did not complete within the time the insert may hold the write lock: roll back, and
    insert the whole batch at once when it has arrived."""


class ItemFeed:
    """A one-way, thread-safe queue of (custom_id, params) chunks, ended or aborted exactly once."""

    def __init__(self, hold_seconds: float) -> None:
        self.hold_seconds = hold_seconds
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()

    def put(self, items: Sequence[tuple[str, Any]]) -> None:
        if items:
            self._queue.put(items)

    def end(self) -> None:
        self._queue.put(_END)

    def abort(self) -> None:
        self._queue.put(_ABORT)

    def take(self, deadline: float) -> Sequence[tuple[str, Any]] | None:
        """The next chunk, or None at the end; raises when aborted or once `deadline` (monotonic) passes."""
        try:
            chunk = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            raise FeedTooSlowError from None
        if chunk is _ABORT:
            raise FeedAbortedError
        return None if chunk is _END else chunk
