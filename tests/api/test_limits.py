"""Create limits: `--max-body-bytes` → 413 `request_too_large`, `--max-requests` → 400; nothing stored."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import pytest

from tests.api.helpers import assert_batch_json, assert_error, assert_sdk_error, make_requests, request
from tests.conftest import start_server
from tests.server import ServerProcess

MAX_BODY = 100_000
MAX_REQUESTS = 10
BATCHES = "/v1/messages/batches"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = start_server(
        tmp_path_factory.mktemp("limits"), ["--max-body-bytes", str(MAX_BODY), "--max-requests", str(MAX_REQUESTS)]
    )
    yield proc
    proc.terminate_quietly()


def _stored(http: httpx.Client) -> int:
    body = http.get(BATCHES, params={"limit": 1000}).json()
    assert body["has_more"] is False
    return len(body["data"])


def _big_requests(total_bytes: int, n: int = 5) -> list[dict[str, Any]]:
    words = max(1, total_bytes // n // 6)
    return [request(f"big-{i}", " ".join(["abcde"] * words)) for i in range(n)]


def _encoded(requests: list[dict[str, Any]]) -> bytes:
    return json.dumps({"requests": requests}).encode()


def test_body_over_limit_is_413_and_nothing_stored(raw: httpx.Client) -> None:
    before = _stored(raw)
    body = _encoded(_big_requests(2 * MAX_BODY))
    assert len(body) > MAX_BODY
    response = raw.post(BATCHES, content=body, headers={"content-type": "application/json"})
    assert_error(response, 413, "request_too_large")
    assert _stored(raw) == before


def test_chunked_body_over_limit_is_413(raw: httpx.Client) -> None:
    before = _stored(raw)
    body = _encoded(_big_requests(2 * MAX_BODY))

    def chunks() -> Iterator[bytes]:
        for start in range(0, len(body), 8192):
            yield body[start : start + 8192]

    response = raw.post(BATCHES, content=chunks(), headers={"content-type": "application/json"})
    assert "content-length" not in response.request.headers
    assert_error(response, 413, "request_too_large")
    assert _stored(raw) == before


def test_sdk_sees_request_too_large(client: anthropic.Anthropic, raw: httpx.Client) -> None:
    before = _stored(raw)
    with pytest.raises(anthropic.APIStatusError) as info:
        client.messages.batches.create(requests=_big_requests(2 * MAX_BODY))  # type: ignore[arg-type]
    assert isinstance(info.value, anthropic.RequestTooLargeError)
    assert_sdk_error(info.value, 413, "request_too_large")
    assert _stored(raw) == before


def test_body_under_limit_is_accepted(client: anthropic.Anthropic, raw: httpx.Client) -> None:
    requests = _big_requests(MAX_BODY // 2)
    assert len(_encoded(requests)) < MAX_BODY
    batch = client.messages.batches.create(requests=requests)  # type: ignore[arg-type]
    assert batch.request_counts.processing == 5
    response = raw.get(f"{BATCHES}/{batch.id}")
    assert_batch_json(response.json(), total=5)


def test_more_than_max_requests_is_400(client: anthropic.Anthropic, raw: httpx.Client) -> None:
    before = _stored(raw)
    response = raw.post(BATCHES, json={"requests": make_requests(MAX_REQUESTS + 1, prefix="many")})
    assert_error(response, 400, "invalid_request_error")
    with pytest.raises(anthropic.BadRequestError) as info:
        client.messages.batches.create(requests=make_requests(MAX_REQUESTS + 5, prefix="many"))  # type: ignore[arg-type]
    assert_sdk_error(info.value, 400, "invalid_request_error")
    assert _stored(raw) == before


def test_exactly_max_requests_is_accepted(client: anthropic.Anthropic) -> None:
    batch = client.messages.batches.create(requests=make_requests(MAX_REQUESTS, prefix="max"))  # type: ignore[arg-type]
    assert batch.request_counts.processing == MAX_REQUESTS


def test_server_still_serves_after_413(raw: httpx.Client) -> None:
    for _ in range(3):
        big = _encoded(_big_requests(2 * MAX_BODY))
        assert_error(
            raw.post(BATCHES, content=big, headers={"content-type": "application/json"}), 413, "request_too_large"
        )
        ok = raw.post(BATCHES, json={"requests": make_requests(1, prefix="ok")})
        assert ok.status_code == 200, ok.text
