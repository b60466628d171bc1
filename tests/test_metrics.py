"""The metrics' own parts, in one process: histogram buckets, registries kept apart per app, and counts
that a malformed usage object cannot break. (End to end, through real servers: tests/api/test_metrics.py.)"""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from overnight.metrics import LatencyHistogram, Metrics


def samples_of(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(metrics.render().decode())
        for sample in family.samples
    }


def test_histogram_buckets_are_cumulative_and_a_bound_is_inclusive() -> None:
    histogram = LatencyHistogram((0.1, 1.0))
    for seconds in (0.05, 0.1, 0.5, 1.0, 7.0):
        histogram.observe(seconds)
    assert histogram.cumulative() == [("0.1", 2), ("1.0", 4), ("+Inf", 5)]
    assert histogram.total_seconds == pytest.approx(8.65)


def test_each_app_counts_apart_and_renders_what_it_counted() -> None:
    one, other = Metrics(), Metrics()
    one.http_request("GET", "/v1/messages/batches/{batch_id}", 200)
    one.http_request("GET", "/v1/messages/batches/{batch_id}", 200)
    one.finished("errored", "fake", "overloaded_error")
    one.backend("fake").calls.observe(0.002)
    one.batches_created += 1
    samples = samples_of(one)
    route = (("method", "GET"), ("route", "/v1/messages/batches/{batch_id}"), ("status", "200"))
    assert samples[("overnight_http_requests_total", route)] == 2
    finished = (("backend", "fake"), ("error_type", "overloaded_error"), ("result", "errored"))
    assert samples[("overnight_requests_finished_total", finished)] == 1
    assert samples[("overnight_backend_call_duration_seconds_bucket", (("backend", "fake"), ("le", "0.005")))] == 1
    assert samples[("overnight_batches_created_total", ())] == 1
    assert ("overnight_requests_pending", ()) not in samples  # not read from a database yet

    untouched = samples_of(other)
    assert untouched[("overnight_batches_created_total", ())] == 0
    assert not any(name == "overnight_http_requests_total" for name, _ in untouched)


def test_a_malformed_usage_is_skipped_without_an_error() -> None:
    meter = Metrics().backend("upstream")
    meter.used({"input_tokens": 3, "output_tokens": 4, "cache_read_input_tokens": None})
    meter.used({"input_tokens": "many"})
    assert meter.tokens == [3, 4, 0, 0]
