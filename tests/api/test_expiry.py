"""Expiry: a batch still running at `expires_at` ends, unfinished requests become `expired`.

Server: `--batch-ttl 3`, 1 s per request, concurrency 1, sweepers every 0.2 s.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import anthropic
import httpx
import pytest

from tests.api.helpers import (
    assert_batch_json,
    expected_text,
    make_requests,
    micros_between,
    parse_jsonl,
    wait_for_end,
)
from tests.conftest import start_server
from tests.server import ServerProcess

TTL_S = 3


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = start_server(
        tmp_path_factory.mktemp("expiry"),
        [
            "--batch-ttl",
            str(TTL_S),
            "--fake-latency-ms",
            "1000",
            "--concurrency",
            "1",
            "--sweep-interval",
            "0.2",
        ],
    )
    yield proc
    proc.terminate_quietly()


def test_batch_finishing_within_ttl_is_not_expired(client: anthropic.Anthropic) -> None:
    batch = client.messages.batches.create(requests=make_requests(1, prefix="quick"))  # type: ignore[arg-type]
    ended = wait_for_end(client, batch.id, total=1, timeout=15)
    assert ended.request_counts.succeeded == 1
    assert ended.request_counts.expired == 0
    assert ended.ended_at is not None and ended.ended_at < ended.expires_at


def test_unfinished_requests_expire(client: anthropic.Anthropic, raw: httpx.Client) -> None:
    requests = make_requests(10, prefix="exp")
    created = client.messages.batches.with_raw_response.create(requests=requests)  # type: ignore[arg-type]
    data = assert_batch_json(created.json(), total=10)
    assert micros_between(data["created_at"], data["expires_at"]) == TTL_S * 1_000_000
    batch_id = data["id"]

    ended = wait_for_end(client, batch_id, total=10, timeout=20, interval=0.1)
    counts = ended.request_counts
    assert counts.expired >= 1, counts
    assert counts.succeeded >= 1, counts
    assert counts.succeeded + counts.expired == 10, counts
    assert counts.errored == 0 and counts.canceled == 0
    assert ended.cancel_initiated_at is None
    final = raw.get(f"/v1/messages/batches/{batch_id}").json()
    assert micros_between(final["expires_at"], final["ended_at"]) >= 0, "ended before expires_at"
    assert micros_between(final["expires_at"], final["ended_at"]) < 3_000_000, "expiry sweep was late"

    assert ended.results_url is not None
    response = raw.get(ended.results_url)
    assert response.status_code == 200
    lines = {line["custom_id"]: line for line in parse_jsonl(response.content)}
    assert len(lines) == 10 and set(lines) == {r["custom_id"] for r in requests}
    kinds = {"succeeded": 0, "expired": 0}
    for req in requests:
        line = lines[req["custom_id"]]
        kind = line["result"]["type"]
        kinds[kind] += 1
        if kind == "expired":
            assert line == {"custom_id": req["custom_id"], "result": {"type": "expired"}}
        else:
            assert kind == "succeeded", line
            assert line["result"]["message"]["content"][0]["text"] == expected_text(req)
    assert kinds == {"succeeded": counts.succeeded, "expired": counts.expired}

    # The request that was running at expiry finishes within a second; its late result must not land.
    body = response.content
    deadline = time.monotonic() + 1.5
    while time.monotonic() < deadline:
        again = client.messages.batches.retrieve(batch_id)
        assert again.request_counts == counts, "counts changed after the batch ended"
        assert again.ended_at == ended.ended_at
        time.sleep(0.1)
    assert raw.get(ended.results_url).content.count(b"\n") == body.count(b"\n")
    assert {line["custom_id"]: line["result"]["type"] for line in parse_jsonl(raw.get(ended.results_url).content)} == {
        cid: line["result"]["type"] for cid, line in lines.items()
    }

    with pytest.raises(anthropic.BadRequestError):
        client.messages.batches.cancel(batch_id)
    assert client.messages.batches.delete(batch_id).id == batch_id
