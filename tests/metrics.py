"""Scraping a server's `/metrics` in the tests: parsed by prometheus_client's own parser, compared by delta."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.server import ServerProcess

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(proc: ServerProcess) -> Samples:
    """Every sample of one scrape, by (name, labels); fails on a bad answer or a sample listed twice."""
    response = httpx.get(f"{proc.base_url}/metrics", timeout=10)
    assert response.status_code == 200, response.text[:500]
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4"), response.headers
    samples: Samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            key = (sample.name, frozenset(sample.labels.items()))
            assert key not in samples, f"duplicate sample {key}"
            samples[key] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    """A sample's value; 0 when absent (a count nothing has bumped yet is not listed)."""
    return samples.get((name, frozenset(labels.items())), 0.0)


def delta(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


def finished(result: str, backend: str = "", error_type: str = "") -> dict[str, str]:
    """The labels of `overnight_requests_finished_total`."""
    return {"result": result, "backend": backend, "error_type": error_type}
