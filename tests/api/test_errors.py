"""Errors: every synchronous create check, 404/405, and the error envelope with its request id.

Raw httpx sends what the SDK cannot. After each refused create nothing may have been stored.
"""

from __future__ import annotations

import json
from typing import Any

import anthropic
import httpx
import pytest

from tests.api.helpers import (
    assert_batch_json,
    assert_error,
    assert_sdk_error,
    make_requests,
    request,
    sdk_results,
    wait_for_end,
)

BATCHES = "/v1/messages/batches"


def _count_batches(http: httpx.Client) -> int:
    total = 0
    after: str | None = None
    while True:
        params: dict[str, Any] = {"limit": 1000}
        if after:
            params["after_id"] = after
        body = http.get(BATCHES, params=params).json()
        total += len(body["data"])
        if not body["has_more"]:
            return total
        after = body["last_id"]


def _refused(http: httpx.Client, status: int, error_type: str, **kwargs: Any) -> str:
    before = _count_batches(http)
    message = assert_error(http.post(BATCHES, **kwargs), status, error_type)
    assert _count_batches(http) == before, "a refused create stored a batch"
    return message


def _json_body(value: Any) -> dict[str, Any]:
    return {"content": json.dumps(value).encode(), "headers": {"content-type": "application/json"}}


@pytest.mark.parametrize(
    "body",
    [
        b'{"requests": [',
        b"not json at all",
        b"",
        b"\xff\xfe\x00garbage",
        b'{"requests": []} trailing',
    ],
)
def test_malformed_json_is_400(raw: httpx.Client, body: bytes) -> None:
    _refused(raw, 400, "invalid_request_error", content=body, headers={"content-type": "application/json"})


@pytest.mark.parametrize("value", [[], "requests", 42, None])
def test_body_not_an_object_is_400(raw: httpx.Client, value: Any) -> None:
    _refused(raw, 400, "invalid_request_error", **_json_body(value))


def test_missing_requests_is_400(raw: httpx.Client) -> None:
    message = _refused(raw, 400, "invalid_request_error", **_json_body({"reqs": make_requests(1)}))
    assert "requests" in message, message


def test_empty_requests_is_400(raw: httpx.Client, client: anthropic.Anthropic) -> None:
    message = _refused(raw, 400, "invalid_request_error", **_json_body({"requests": []}))
    assert "requests" in message, message
    with pytest.raises(anthropic.BadRequestError) as info:
        client.messages.batches.create(requests=[])
    assert_sdk_error(info.value, 400, "invalid_request_error")


@pytest.mark.parametrize("value", ["abc", {"custom_id": "a", "params": {}}, 7, None, True])
def test_requests_not_a_list_is_400(raw: httpx.Client, value: Any) -> None:
    message = _refused(raw, 400, "invalid_request_error", **_json_body({"requests": value}))
    assert "requests" in message, message


def _with_bad_item_at(index: int, bad: Any, n: int = 9) -> dict[str, Any]:
    items: list[Any] = make_requests(n, prefix="item")
    items[index] = bad
    return {"requests": items}


@pytest.mark.parametrize(
    ("bad", "field"),
    [
        ("just a string", None),
        (17, None),
        (None, None),
        ([request("x")], None),
        ({"params": request("x")["params"]}, "custom_id"),
        ({"custom_id": "no-params"}, "params"),
        ({"custom_id": "str-params", "params": "a string"}, "params"),
        ({"custom_id": "list-params", "params": [1, 2]}, "params"),
        ({"custom_id": "null-params", "params": None}, "params"),
        ({"custom_id": 12345, "params": request("x")["params"]}, "custom_id"),
        ({"custom_id": None, "params": request("x")["params"]}, "custom_id"),
    ],
)
def test_bad_item_is_400_naming_index_and_field(raw: httpx.Client, bad: Any, field: str | None) -> None:
    message = _refused(raw, 400, "invalid_request_error", **_json_body(_with_bad_item_at(7, bad)))
    assert "7" in message, f"message does not name index 7: {message!r}"
    if field is not None:
        assert field in message, f"message does not name {field!r}: {message!r}"


@pytest.mark.parametrize(
    "custom_id",
    [
        "",
        "has space",
        "slash/inside",
        "dot.inside",
        "ümlaut",
        "tab\there",
        "x" * 65,
        "emoji-☃",
    ],
)
def test_bad_custom_id_is_400(raw: httpx.Client, custom_id: str) -> None:
    body = _with_bad_item_at(4, request(custom_id), n=6)
    message = _refused(raw, 400, "invalid_request_error", **_json_body(body))
    assert "custom_id" in message, message


def test_good_custom_id_boundaries_accepted(client: anthropic.Anthropic) -> None:
    ids = ["a", "Z", "0", "-", "_", "aZ09_-" * 10 + "abcd", "x" * 64]
    assert len(ids[5]) == 64
    batch = client.messages.batches.create(requests=[request(cid) for cid in ids])  # type: ignore[misc]
    ended = wait_for_end(client, batch.id, total=len(ids))
    assert ended.request_counts.succeeded == len(ids)
    assert set(sdk_results(client, batch.id)) == set(ids)


def test_duplicate_custom_id_is_400(raw: httpx.Client) -> None:
    items = make_requests(6, prefix="dup")
    items[4] = request("dup-value")
    items[1] = request("dup-value")
    message = _refused(raw, 400, "invalid_request_error", **_json_body({"requests": items}))
    assert "custom_id" in message, message
    assert "4" in message or "dup-value" in message, message


def test_duplicate_custom_id_via_sdk(client: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.BadRequestError) as info:
        client.messages.batches.create(requests=[request("same"), request("same")])  # type: ignore[list-item]
    message = assert_sdk_error(info.value, 400, "invalid_request_error")
    assert "custom_id" in message


def test_params_are_not_validated_synchronously(client: anthropic.Anthropic) -> None:
    """Bad params inside a well-formed envelope are accepted now and become `errored` results later."""
    batch = client.messages.batches.create(
        requests=[  # type: ignore[list-item]
            {"custom_id": "no-max", "params": {"model": "m", "messages": [{"role": "user", "content": "x"}]}},
            {"custom_id": "empty", "params": {}},
        ]
    )
    assert batch.processing_status == "in_progress"
    assert batch.request_counts.processing == 2
    ended = wait_for_end(client, batch.id, total=2)
    assert ended.request_counts.errored == 2
    results = sdk_results(client, batch.id)
    assert results["no-max"].result.type == "errored"
    assert results["empty"].result.type == "errored"


@pytest.mark.parametrize("batch_id", ["msgbatch_000000000000000000000000", "msgbatch_short", "anything"])
def test_unknown_batch_is_404(raw: httpx.Client, client: anthropic.Anthropic, batch_id: str) -> None:
    assert_error(raw.get(f"{BATCHES}/{batch_id}"), 404, "not_found_error")
    with pytest.raises(anthropic.NotFoundError) as info:
        client.messages.batches.retrieve(batch_id)
    assert_sdk_error(info.value, 404, "not_found_error")


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/"),
        ("GET", "/v1"),
        ("GET", "/v1/nothing-here"),
        ("POST", "/v1/messages/batches/msgbatch_000000000000000000000000/resume"),
        ("GET", "/v1/messages/batches/msgbatch_000000000000000000000000/results/extra"),
        ("GET", "/v2/messages/batches"),
        ("GET", "/v1/messages/batches/"),  # a trailing slash is another path, not a redirect
        ("POST", "/v1/messages/batches/"),
        ("GET", "/v1/models/"),
    ],
)
def test_unknown_path_is_404_json(raw: httpx.Client, method: str, path: str) -> None:
    assert_error(raw.request(method, path), 404, "not_found_error")


ONE_BATCH = f"{BATCHES}/msgbatch_000000000000000000000000"


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("PUT", BATCHES, "GET, HEAD, POST"),
        ("DELETE", BATCHES, "GET, HEAD, POST"),
        ("PATCH", BATCHES, "GET, HEAD, POST"),
        ("PUT", ONE_BATCH, "DELETE, GET, HEAD"),
        ("POST", ONE_BATCH, "DELETE, GET, HEAD"),
        ("GET", f"{ONE_BATCH}/cancel", "POST"),
        ("DELETE", f"{ONE_BATCH}/cancel", "POST"),
        ("POST", f"{ONE_BATCH}/results", "GET, HEAD"),
    ],
)
def test_wrong_method_is_405_with_allow(raw: httpx.Client, method: str, path: str, allowed: str) -> None:
    response = raw.request(method, path)
    assert_error(response, 405, "invalid_request_error")
    assert response.headers["allow"] == allowed


def test_errors_carry_distinct_request_ids(raw: httpx.Client) -> None:
    seen = set()
    for _ in range(3):
        response = raw.get(f"{BATCHES}/msgbatch_000000000000000000000000")
        assert_error(response, 404, "not_found_error")
        seen.add(response.json()["request_id"])
    assert len(seen) == 3


def test_valid_create_after_errors_still_works(raw: httpx.Client) -> None:
    response = raw.post(BATCHES, json={"requests": make_requests(2, prefix="after-errors")})
    assert response.status_code == 200
    assert_batch_json(response.json(), total=2)
