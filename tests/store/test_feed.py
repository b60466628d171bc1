"""The queue between a create's event loop and its streamed insert's thread (no database involved)."""

from __future__ import annotations

import threading
import time

import pytest

from overnight.store.feed import FeedAbortedError, ItemFeed, StreamedInsertUndoneError

FAR = 60.0


def _deadline(seconds: float = FAR) -> float:
    return time.monotonic() + seconds


def test_runs_come_out_in_order_then_the_end() -> None:
    feed = ItemFeed(hold_seconds=FAR)
    feed.put([("a", b"1")])
    feed.put([])  # nothing to store: not a run
    feed.put([("b", b"2"), ("c", b"3")])
    feed.end()
    deadline = _deadline()
    assert feed.take(deadline) == [("a", b"1")]
    assert feed.take(deadline) == [("b", b"2"), ("c", b"3")]
    assert feed.take(deadline) is None


def test_an_abort_overtakes_the_runs_still_queued() -> None:
    feed = ItemFeed(hold_seconds=FAR)
    feed.put([("a", b"1")])
    feed.put([("b", b"2")])
    feed.abort()
    with pytest.raises(FeedAbortedError):
        feed.take(_deadline())


def test_an_abort_wakes_a_waiting_take() -> None:
    feed = ItemFeed(hold_seconds=FAR)
    threading.Timer(0.1, feed.abort).start()
    started = time.monotonic()
    with pytest.raises(FeedAbortedError):
        feed.take(_deadline())
    assert time.monotonic() - started < 5


def test_the_hold_bounds_the_whole_wait() -> None:
    feed = ItemFeed(hold_seconds=0.2)
    with pytest.raises(StreamedInsertUndoneError, match=r"did not complete within 0\.2 s"):
        feed.take(_deadline(0.2))


def test_the_pause_bounds_each_wait_after_the_first_run() -> None:
    feed = ItemFeed(hold_seconds=FAR, pause_seconds=0.2)
    deadline = _deadline()
    threading.Timer(0.4, feed.put, [[("a", b"1")]]).start()
    assert feed.take(deadline) == [("a", b"1")]  # the first run may take longer than the pause
    threading.Timer(0.1, feed.put, [[("b", b"2")]]).start()
    assert feed.take(deadline) == [("b", b"2")]  # within the pause
    started = time.monotonic()
    with pytest.raises(StreamedInsertUndoneError, match=r"paused for more than 0\.2 s"):
        feed.take(deadline)
    assert 0.15 < time.monotonic() - started < 5


def test_near_the_deadline_the_hold_is_what_ran_out() -> None:
    feed = ItemFeed(hold_seconds=0.3, pause_seconds=5.0)
    deadline = _deadline(0.3)
    feed.put([("a", b"1")])
    assert feed.take(deadline) == [("a", b"1")]
    with pytest.raises(StreamedInsertUndoneError, match="did not complete"):
        feed.take(deadline)


def test_runs_hold_at_least_one_request_and_no_more_than_announced() -> None:
    feed = ItemFeed(hold_seconds=FAR)
    feed.put([("a", b"1"), ("b", b"2")])
    feed.end()
    assert list(feed.runs(_deadline(), max_requests=2)) == [[("a", b"1"), ("b", b"2")]]
    feed = ItemFeed(hold_seconds=FAR)
    feed.put([("a", b"1"), ("b", b"2")])
    feed.end()
    with pytest.raises(RuntimeError, match="more than the 1 requests announced"):
        list(feed.runs(_deadline(), max_requests=1))
    feed = ItemFeed(hold_seconds=FAR)
    feed.end()
    with pytest.raises(RuntimeError, match="without requests"):
        list(feed.runs(_deadline(), max_requests=1))


def test_what_the_taker_left_is_handed_back_in_order() -> None:
    feed = ItemFeed(hold_seconds=FAR)
    feed.put([("a", b"1"), ("b", b"2")])
    feed.put([("c", b"3")])
    assert feed.take(_deadline()) == [("a", b"1"), ("b", b"2")]
    feed.put([("d", b"4")])
    feed.end()
    assert feed.untaken() == [("c", b"3"), ("d", b"4")]
    assert feed.untaken() == []
