"""Plain helpers shared by the end-to-end tests: request builders, polling, shape checks."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

import httpx
from anthropic import Anthropic, AsyncAnthropic

MODEL = "claude-fake-echo-1"
MESSAGE_BATCHES_BETA = "message-batches-2024-09-24"

BATCH_ID_RE = re.compile(r"^msgbatch_[0-9A-Za-z]{24}$")
REQUEST_ID_RE = re.compile(r"^req_[0-9A-Za-z]+$")
MESSAGE_ID_RE = re.compile(r"^msg_[0-9A-Za-z]+$")
TIMESTAMP_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$")

BATCH_KEYS = {
    "id",
    "type",
    "processing_status",
    "request_counts",
    "created_at",
    "expires_at",
    "ended_at",
    "cancel_initiated_at",
    "archived_at",
    "results_url",
}
COUNT_KEYS = {"processing", "succeeded", "errored", "canceled", "expired"}
ERROR_BODY_KEYS = {"type", "error", "request_id"}

DEFAULT_DEADLINE_S = 30.0


# -- building requests ---------------------------------------------------------------------------


def request(custom_id: str, text: str = "hello world", **params: Any) -> dict[str, Any]:
    """One batch request whose last user message is `text`; extra keyword args go into params."""
    body: dict[str, Any] = {
        "model": MODEL,
        "max_tokens": 1024,
        "messages": [{"role": "user", "content": text}],
    }
    body.update(params)
    return {"custom_id": custom_id, "params": body}


def make_requests(n: int, prefix: str = "req", text: str | None = None, **params: Any) -> list[dict[str, Any]]:
    """`n` valid requests `prefix-0..n-1`; the text defaults to one that names the request."""
    return [
        request(f"{prefix}-{i}", text if text is not None else f"echo {prefix} number {i}", **params) for i in range(n)
    ]


def expected_text(req: dict[str, Any]) -> str:
    """The fake backend's reply for a plain request made by `request()` (no stop/max_tokens cut)."""
    return req["params"]["messages"][-1]["content"]


# -- time ----------------------------------------------------------------------------------------


def parse_ts(value: str) -> datetime:
    """Parse an API timestamp, asserting the exact wire format (RFC 3339, UTC, `Z`, microseconds)."""
    assert isinstance(value, str), value
    assert TIMESTAMP_RE.match(value), f"timestamp not RFC 3339 with microseconds and Z: {value!r}"
    return datetime.strptime(value, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)


def micros_between(earlier: str, later: str) -> int:
    delta = parse_ts(later) - parse_ts(earlier)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


# -- shapes --------------------------------------------------------------------------------------


def counts_total(counts: Any) -> int:
    if isinstance(counts, dict):
        return sum(counts[k] for k in COUNT_KEYS)
    return counts.processing + counts.succeeded + counts.errored + counts.canceled + counts.expired


def assert_batch_json(data: Any, *, total: int | None = None) -> dict[str, Any]:
    """A raw MessageBatch JSON object: every key present (explicit nulls), well-formed values."""
    assert isinstance(data, dict), data
    assert set(data) == BATCH_KEYS, f"MessageBatch keys differ: {sorted(set(data) ^ BATCH_KEYS)} in {data}"
    assert data["type"] == "message_batch"
    assert BATCH_ID_RE.match(data["id"]), data["id"]
    assert data["processing_status"] in ("in_progress", "canceling", "ended")
    counts = data["request_counts"]
    assert isinstance(counts, dict) and set(counts) == COUNT_KEYS, counts
    for key in COUNT_KEYS:
        assert isinstance(counts[key], int) and not isinstance(counts[key], bool) and counts[key] >= 0, counts
    if total is not None:
        assert counts_total(counts) == total, f"request_counts {counts} do not add up to {total}"
    created = parse_ts(data["created_at"])
    assert parse_ts(data["expires_at"]) > created
    for key in ("ended_at", "cancel_initiated_at", "archived_at"):
        if data[key] is not None:
            assert parse_ts(data[key]) >= created, (key, data)
    if data["processing_status"] == "ended":
        assert data["ended_at"] is not None, data
        assert counts["processing"] == 0, data
    else:
        assert data["ended_at"] is None, data
        assert data["results_url"] is None, data
    if data["processing_status"] == "canceling":
        assert data["cancel_initiated_at"] is not None, data
    if data["results_url"] is not None:
        url = data["results_url"]
        assert url.startswith(("http://", "https://")), f"results_url not absolute: {url!r}"
        assert "{" not in url and "}" not in url, url
        assert url.endswith(f"/v1/messages/batches/{data['id']}/results"), url
    if data["archived_at"] is not None:
        assert data["results_url"] is None, data
    return data


def assert_request_id(response: httpx.Response | Any) -> str:
    value = response.headers.get("request-id")
    assert value is not None, f"no request-id header on {response.status_code} {response.request.url}"
    assert REQUEST_ID_RE.match(value), f"bad request-id header {value!r}"
    return value


def assert_error(response: httpx.Response, status: int, error_type: str) -> str:
    """The API error envelope with the given status and type; returns the message."""
    assert response.status_code == status, (
        f"expected {status} {error_type}, got {response.status_code}: {response.text[:500]}"
    )
    header_id = assert_request_id(response)
    assert response.headers.get("content-type", "").startswith("application/json"), response.headers
    body = response.json()
    assert isinstance(body, dict) and set(body) == ERROR_BODY_KEYS, f"error envelope keys: {body}"
    assert body["type"] == "error", body
    assert isinstance(body["error"], dict), body
    assert body["error"].get("type") == error_type, body
    message = body["error"].get("message")
    assert isinstance(message, str) and message.strip(), body
    assert isinstance(body["request_id"], str) and REQUEST_ID_RE.match(body["request_id"]), body
    assert body["request_id"] == header_id, (body["request_id"], header_id)
    return message


def assert_sdk_error(exc: Any, status: int, error_type: str) -> str:
    """An SDK APIStatusError raised for one of our error responses."""
    assert exc.status_code == status, (exc.status_code, exc.body)
    assert exc.type == error_type, exc.body
    assert exc.request_id is not None and REQUEST_ID_RE.match(exc.request_id), exc.request_id
    assert isinstance(exc.body, dict) and exc.body.get("type") == "error", exc.body
    assert exc.body.get("request_id") == exc.request_id, exc.body
    assert isinstance(exc.api_message, str) and exc.api_message, exc.body
    return exc.api_message


# -- polling -------------------------------------------------------------------------------------


def wait_for(
    predicate: Callable[[], Any], *, timeout: float = DEFAULT_DEADLINE_S, interval: float = 0.05, what: str = ""
) -> Any:
    """Call `predicate` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        last = predicate()
        if last:
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}: last={last!r}")
        time.sleep(interval)


def _check_poll(batch: Any, total: int | None) -> None:
    if total is not None:
        assert counts_total(batch.request_counts) == total, (
            f"request_counts {batch.request_counts} do not add up to {total}"
        )
    assert batch.processing_status in ("in_progress", "canceling", "ended")
    if batch.processing_status == "ended":
        assert batch.ended_at is not None and batch.request_counts.processing == 0, batch
        assert batch.results_url is not None or batch.archived_at is not None, batch
    else:
        assert batch.ended_at is None and batch.results_url is None, batch


def wait_for_end(
    client: Anthropic,
    batch_id: str,
    *,
    total: int | None = None,
    timeout: float = DEFAULT_DEADLINE_S,
    interval: float = 0.05,
    beta: bool = False,
    on_poll: Callable[[Any], None] | None = None,
) -> Any:
    """Poll `retrieve` until the batch has ended, checking the count invariant at every poll."""
    resource = client.beta.messages.batches if beta else client.messages.batches
    deadline = time.monotonic() + timeout
    while True:
        batch = resource.retrieve(batch_id)
        _check_poll(batch, total)
        if on_poll is not None:
            on_poll(batch)
        if batch.processing_status == "ended":
            return batch
        if time.monotonic() > deadline:
            raise AssertionError(f"batch {batch_id} did not end within {timeout}s: {batch}")
        time.sleep(interval)


async def async_wait_for_end(
    client: AsyncAnthropic,
    batch_id: str,
    *,
    total: int | None = None,
    timeout: float = DEFAULT_DEADLINE_S,
    interval: float = 0.05,
    beta: bool = False,
) -> Any:
    resource = client.beta.messages.batches if beta else client.messages.batches
    deadline = time.monotonic() + timeout
    while True:
        batch = await resource.retrieve(batch_id)
        _check_poll(batch, total)
        if batch.processing_status == "ended":
            return batch
        if time.monotonic() > deadline:
            raise AssertionError(f"batch {batch_id} did not end within {timeout}s: {batch}")
        await asyncio.sleep(interval)


# -- results -------------------------------------------------------------------------------------


def index_results(lines: Iterable[Any]) -> dict[str, Any]:
    """Results keyed by custom_id, asserting no custom_id appears twice."""
    out: dict[str, Any] = {}
    for line in lines:
        custom_id = line["custom_id"] if isinstance(line, dict) else line.custom_id
        assert custom_id not in out, f"custom_id {custom_id!r} appears twice in the results"
        out[custom_id] = line
    return out


def sdk_results(client: Anthropic, batch_id: str, *, beta: bool = False) -> dict[str, Any]:
    resource = client.beta.messages.batches if beta else client.messages.batches
    return index_results(resource.results(batch_id))


async def async_sdk_results(client: AsyncAnthropic, batch_id: str, *, beta: bool = False) -> dict[str, Any]:
    resource = client.beta.messages.batches if beta else client.messages.batches
    decoder = await resource.results(batch_id)
    return index_results([line async for line in decoder])


def parse_jsonl(body: bytes) -> list[dict[str, Any]]:
    """Strictly parse a results body: no BOM, no `\\r`, no blank line, every line `\\n`-terminated."""
    assert not body.startswith(b"\xef\xbb\xbf"), "results body starts with a BOM"
    assert b"\r" not in body, "results body contains \\r"
    assert body.endswith(b"\n"), f"results body does not end with a newline: {body[-80:]!r}"
    assert b"\n\n" not in body, "results body contains a blank line"
    lines = body.split(b"\n")[:-1]
    parsed = []
    for raw_line in lines:
        assert raw_line.strip() == raw_line and raw_line, f"line with surrounding whitespace: {raw_line!r}"
        value = json.loads(raw_line)
        assert isinstance(value, dict), raw_line
        parsed.append(value)
    return parsed


def compact(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()
