"""Requests handed from the event loop to a store thread while a create body still arrives."""

from __future__ import annotations

import queue
import time
from collections.abc import Sequence
from typing import Any

_END = object()
_ABORT = object()


class FeedAbortedError(Exception):
    """The create failed before its body was complete: roll the insert back."""


class StreamedInsertUndoneError(Exception):
    """The streamed insert was rolled back although the create itself did not fail (its body came too
    slowly to keep a transaction open for it, or the transaction lost a race): insert the batch whole
    once its body has arrived."""


class ItemFeed:
    """A one-way, thread-safe queue of (custom_id, params) runs, ended or aborted exactly once."""

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
        """The next run, or None at the end; `FeedAbortedError` when aborted, `StreamedInsertUndoneError`
        once `deadline` (monotonic) passes first."""
        try:
            items = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            raise StreamedInsertUndoneError(f"the body did not complete within {self.hold_seconds:g} s") from None
        if items is _ABORT:
            raise FeedAbortedError
        return None if items is _END else items
