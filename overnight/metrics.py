"""Every metric one app exports, in its own registry, rendered in Prometheus's text format.

The engine counts thousands of requests a second, so what it counts are plain ints and dicts bumped
on the event loop (a `prometheus_client` counter takes a lock: about 2 µs an increment here, ten
times a plain `+= 1`). They become metric families only when `/metrics` is scraped, and that runs on
the same loop, so nothing reads a count while it is being changed. State the engine already keeps (the
backends' concurrency caps, the requests running) is read at scrape time, at no cost per request.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from operator import attrgetter
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

from overnight.store.records import Completion

CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4

# From a fake backend's microseconds to a local model's minutes.
CALL_SECONDS_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)

TOKEN_TYPES = ("input", "output", "cache_creation_input", "cache_read_input")

_result_labels = attrgetter("state", "backend", "error_type")

NO_BACKEND = ""
"""The `backend` label of a request no backend answered (canceled, expired, invalid, unroutable)."""


class ConcurrencyCap(Protocol):
    """A backend's concurrency cap as the engine keeps it (`engine.limits.AdaptiveLimit`)."""

    active: int
    limit: int
    maximum: int

    @property
    def waiting(self) -> int: ...


class LatencyHistogram:
    """Counts per bucket (the last is +Inf) and their sum; cumulated only when scraped."""

    __slots__ = ("bounds", "counts", "total_seconds")

    def __init__(self, bounds: tuple[float, ...] = CALL_SECONDS_BUCKETS) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.total_seconds = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect_left(self.bounds, seconds)] += 1  # the first bucket whose bound is >= seconds
        self.total_seconds += seconds

    def cumulative(self) -> list[tuple[str, float]]:
        buckets: list[tuple[str, float]] = []
        running = 0
        for bound, count in zip((*self.bounds, float("inf")), self.counts, strict=True):
            running += count
            buckets.append(("+Inf" if bound == float("inf") else repr(float(bound)), running))
        return buckets


class BackendMeter:
    """What the engine counts for one backend."""

    __slots__ = ("calls", "cap", "retries", "tokens")

    def __init__(self) -> None:
        self.calls = LatencyHistogram()
        self.retries: dict[str, int] = {}  # by the error type that was retried
        self.tokens = [0] * len(TOKEN_TYPES)
        self.cap: ConcurrencyCap | None = None

    def used(self, usage: Mapping[str, Any]) -> None:
        """Add a successful call's `usage` (a Messages API usage object). Unrolled: once per request."""
        tokens = self.tokens
        try:
            tokens[0] += usage.get("input_tokens") or 0
            tokens[1] += usage.get("output_tokens") or 0
            tokens[2] += usage.get("cache_creation_input_tokens") or 0
            tokens[3] += usage.get("cache_read_input_tokens") or 0
        except TypeError:
            pass  # an upstream's malformed usage is not counted, and must not fail the call it came with

    def retried(self, error_type: str) -> None:
        self.retries[error_type] = self.retries.get(error_type, 0) + 1


class Metrics:
    """One app's metrics: the engine and the API bump the counts, `/metrics` renders them."""

    def __init__(self) -> None:
        self.http_requests: dict[tuple[str, str, int], int] = {}  # (method, route template, status)
        self.requests_finished: dict[tuple[str, str, str], int] = {}  # (result, backend, error type)
        self.batches_created = 0
        self.batches_ended = 0
        self.requests_running = 0
        self.queue: tuple[int, int] | None = None
        """(pending, leased) requests in the database, read just before a scrape; None if unreadable."""
        self.backends: dict[str, BackendMeter] = {}
        # Per app, not prometheus_client's global registry: several apps in one process keep apart.
        self.registry = CollectorRegistry()
        self.registry.register(_Collector(self))
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)

    def backend(self, name: str) -> BackendMeter:
        meter = self.backends.get(name)
        if meter is None:
            meter = self.backends[name] = BackendMeter()
        return meter

    def http_request(self, method: str, route: str, status: int) -> None:
        key = (method, route, status)
        self.http_requests[key] = self.http_requests.get(key, 0) + 1

    def finished(self, result: str, backend: str, error_type: str = "", count: int = 1) -> None:
        """`count` requests reached their final result (`succeeded`, `errored`, `canceled`, `expired`)."""
        key = (result, backend, error_type)
        self.requests_finished[key] = self.requests_finished.get(key, 0) + count

    def written(self, completions: Iterable[Completion]) -> None:
        """Results the store wrote: counted by (state, backend, error type), in C, since a group is
        up to a thousand."""
        for key, count in Counter(map(_result_labels, completions)).items():
            self.requests_finished[key] = self.requests_finished.get(key, 0) + count

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _Collector:
    """Turns the counts into metric families, once per scrape."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        m = self.metrics
        http = CounterMetricFamily(
            "overnight_http_requests",
            "HTTP requests answered, by route template and status.",
            labels=["method", "route", "status"],
        )
        for (method, route, status), count in sorted(m.http_requests.items()):
            http.add_metric([method, route, str(status)], count)
        yield http

        finished = CounterMetricFamily(
            "overnight_requests_finished",
            "Batch requests this node brought to their final result.",
            labels=["result", "backend", "error_type"],
        )
        for labels, count in sorted(m.requests_finished.items()):
            finished.add_metric(list(labels), count)
        yield finished

        yield CounterMetricFamily(
            "overnight_batches_created", "Batches created through this node.", value=m.batches_created
        )
        yield CounterMetricFamily("overnight_batches_ended", "Batches this node ended.", value=m.batches_ended)
        yield GaugeMetricFamily(
            "overnight_requests_running", "Requests this node's workers are running now.", value=m.requests_running
        )
        if m.queue is not None:
            pending, leased = m.queue
            yield GaugeMetricFamily(
                "overnight_requests_pending", "Requests waiting for a worker, in the whole database.", value=pending
            )
            yield GaugeMetricFamily(
                "overnight_requests_leased", "Requests leased by some worker, in the whole database.", value=leased
            )
        yield from _backend_families(m.backends)


def _backend_families(backends: Mapping[str, BackendMeter]) -> Iterator[Metric]:
    calls = HistogramMetricFamily(
        "overnight_backend_call_duration_seconds",
        "Backend calls (every attempt, failed ones too), by duration.",
        labels=["backend"],
    )
    retries = CounterMetricFamily(
        "overnight_backend_retries",
        "Backend calls tried again, by the error retried.",
        labels=["backend", "error_type"],
    )
    tokens = CounterMetricFamily(
        "overnight_tokens", "Tokens the backends reported for successful calls.", labels=["backend", "type"]
    )
    in_flight = GaugeMetricFamily(
        "overnight_backend_calls_in_flight", "Calls being made to the backend now.", labels=["backend"]
    )
    waiting = GaugeMetricFamily(
        "overnight_backend_calls_waiting", "Calls waiting for a free slot under the cap.", labels=["backend"]
    )
    limit = GaugeMetricFamily(
        "overnight_backend_concurrency_limit",
        "Calls allowed at once now (lowered after 429s, regrown after successes).",
        labels=["backend"],
    )
    cap = GaugeMetricFamily(
        "overnight_backend_concurrency_cap", "Calls allowed at once at most, on this node.", labels=["backend"]
    )
    for name, meter in sorted(backends.items()):
        calls.add_metric([name], meter.calls.cumulative(), meter.calls.total_seconds)
        for error_type, count in sorted(meter.retries.items()):
            retries.add_metric([name, error_type], count)
        for kind, count in zip(TOKEN_TYPES, meter.tokens, strict=True):
            tokens.add_metric([name, kind], count)
        if meter.cap is not None:
            in_flight.add_metric([name], meter.cap.active)
            waiting.add_metric([name], meter.cap.waiting)
            limit.add_metric([name], meter.cap.limit)
            cap.add_metric([name], meter.cap.maximum)
    yield from (calls, retries, tokens, in_flight, waiting, limit, cap)
