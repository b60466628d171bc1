"""List: order, limits, both cursors, the SDKs' auto-pagination, empty pages.

The server here has many keys, each in its own workspace, so every test gets an empty workspace.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import anthropic
import httpx
import pytest

from tests.api.helpers import assert_batch_json, assert_error, assert_sdk_error, make_requests, wait_for_end
from tests.conftest import start_server
from tests.server import ServerProcess

KEYS = [f"list-key-{i}" for i in range(20)]
EMPTY_PAGE = {"data": [], "has_more": False, "first_id": None, "last_id": None}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    args: list[str] = []
    for i, key in enumerate(KEYS):
        args += ["--api-key", f"{key}:list-ws-{i}"]
    proc = start_server(tmp_path_factory.mktemp("list"), args)
    yield proc
    proc.terminate_quietly()


_key_pool = iter(KEYS[2:])


@pytest.fixture
def fresh_key() -> str:
    """A key whose workspace no other test uses."""
    return next(_key_pool)


@pytest.fixture
def lclient(
    server: ServerProcess, make_client: Callable[..., anthropic.Anthropic], fresh_key: str
) -> anthropic.Anthropic:
    return make_client(server, api_key=fresh_key)


@pytest.fixture
def lraw(server: ServerProcess, make_raw: Callable[..., httpx.Client], fresh_key: str) -> httpx.Client:
    return make_raw(server, api_key=fresh_key)


def create_batches(client: anthropic.Anthropic, n: int, prefix: str = "b") -> list[str]:
    """Create `n` one-request batches; ids oldest first."""
    return [
        client.messages.batches.create(requests=make_requests(1, prefix=f"{prefix}{i}")).id  # type: ignore[arg-type]
        for i in range(n)
    ]


def page(http: httpx.Client, **params: Any) -> dict[str, Any]:
    response = http.get("/v1/messages/batches", params=params)
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"data", "has_more", "first_id", "last_id"}, body
    assert isinstance(body["has_more"], bool)
    for item in body["data"]:
        assert_batch_json(item)
    if body["data"]:
        assert body["first_id"] == body["data"][0]["id"]
        assert body["last_id"] == body["data"][-1]["id"]
    else:
        assert body["first_id"] is None and body["last_id"] is None
    return body


def ids(body: dict[str, Any]) -> list[str]:
    return [item["id"] for item in body["data"]]


@pytest.fixture(scope="module")
def ten(server: ServerProcess) -> list[str]:
    """Ten batches b0 (oldest) .. b9 (newest) in a workspace of their own."""
    with anthropic.Anthropic(
        base_url=server.base_url, api_key=KEYS[0], max_retries=0, _strict_response_validation=True
    ) as client:
        return create_batches(client, 10)


@pytest.fixture
def ten_raw(server: ServerProcess, make_raw: Callable[..., httpx.Client]) -> httpx.Client:
    return make_raw(server, api_key=KEYS[0])


def test_empty_page_shape(lraw: httpx.Client, lclient: anthropic.Anthropic) -> None:
    response = lraw.get("/v1/messages/batches")
    assert response.status_code == 200
    assert response.json() == EMPTY_PAGE
    sdk_page = lclient.messages.batches.list()
    assert sdk_page.data == []
    assert sdk_page.has_more is False
    assert sdk_page.first_id is None and sdk_page.last_id is None
    assert list(sdk_page) == []


def test_newest_first_with_default_limit_20(lclient: anthropic.Anthropic, lraw: httpx.Client) -> None:
    created = create_batches(lclient, 25)
    first = page(lraw)
    assert ids(first) == created[::-1][:20]
    assert first["has_more"] is True
    rest = page(lraw, after_id=first["last_id"])
    assert ids(rest) == created[::-1][20:]
    assert rest["has_more"] is False
    sdk_first = lclient.messages.batches.list()
    assert [b.id for b in sdk_first.data] == created[::-1][:20]


def test_limit_bounds(lclient: anthropic.Anthropic, lraw: httpx.Client) -> None:
    created = create_batches(lclient, 3)
    one = page(lraw, limit=1)
    assert ids(one) == [created[-1]] and one["has_more"] is True
    assert ids(page(lraw, limit=2)) == created[::-1][:2]
    full = page(lraw, limit=1000)
    assert ids(full) == created[::-1] and full["has_more"] is False
    exact = page(lraw, limit=3)
    assert ids(exact) == created[::-1] and exact["has_more"] is False
    for bad in ("0", "1001", "-1", "abc", "1.5", "", "1e2"):
        assert_error(lraw.get("/v1/messages/batches", params={"limit": bad}), 400, "invalid_request_error")
    for bad_int in (0, 1001):
        with pytest.raises(anthropic.BadRequestError) as info:
            lclient.messages.batches.list(limit=bad_int)
        assert_sdk_error(info.value, 400, "invalid_request_error")


def test_after_id_pages_older_batches(ten: list[str], ten_raw: httpx.Client) -> None:
    b = ten
    body = page(ten_raw, after_id=b[5], limit=3)
    assert ids(body) == [b[4], b[3], b[2]] and body["has_more"] is True
    body = page(ten_raw, after_id=b[2], limit=3)
    assert ids(body) == [b[1], b[0]] and body["has_more"] is False
    body = page(ten_raw, after_id=b[9], limit=20)
    assert ids(body) == b[::-1][1:] and body["has_more"] is False
    assert page(ten_raw, after_id=b[0]) == EMPTY_PAGE


def test_before_id_pages_newer_batches_newest_first(ten: list[str], ten_raw: httpx.Client) -> None:
    b = ten
    body = page(ten_raw, before_id=b[2], limit=3)
    assert ids(body) == [b[5], b[4], b[3]] and body["has_more"] is True
    body = page(ten_raw, before_id=b[5], limit=3)
    assert ids(body) == [b[8], b[7], b[6]] and body["has_more"] is True
    body = page(ten_raw, before_id=b[6], limit=3)
    assert ids(body) == [b[9], b[8], b[7]] and body["has_more"] is False
    body = page(ten_raw, before_id=b[0], limit=20)
    assert ids(body) == b[::-1][:-1] and body["has_more"] is False
    assert page(ten_raw, before_id=b[9]) == EMPTY_PAGE


def test_both_cursors_mean_strictly_between(ten: list[str], ten_raw: httpx.Client) -> None:
    b = ten
    body = page(ten_raw, after_id=b[8], before_id=b[2], limit=20)
    assert ids(body) == [b[7], b[6], b[5], b[4], b[3]] and body["has_more"] is False
    # A short page is the one adjacent to before_id; the SDK continuation walks the interval.
    body = page(ten_raw, after_id=b[8], before_id=b[2], limit=2)
    assert ids(body) == [b[4], b[3]] and body["has_more"] is True
    body = page(ten_raw, after_id=b[8], before_id=body["first_id"], limit=2)
    assert ids(body) == [b[6], b[5]] and body["has_more"] is True
    body = page(ten_raw, after_id=b[8], before_id=body["first_id"], limit=2)
    assert ids(body) == [b[7]] and body["has_more"] is False
    # Neighbours: nothing strictly between.
    assert page(ten_raw, after_id=b[5], before_id=b[4]) == EMPTY_PAGE


def test_sdk_auto_pagination_with_both_cursors(
    ten: list[str], server: ServerProcess, make_client: Callable[..., anthropic.Anthropic]
) -> None:
    client = make_client(server, api_key=KEYS[0])
    b = ten
    got = [batch.id for batch in client.messages.batches.list(after_id=b[8], before_id=b[2], limit=2)]
    assert sorted(got) == sorted(b[3:8]) and len(got) == 5


def test_sdk_auto_pagination_45_batches_both_directions(lclient: anthropic.Anthropic, lraw: httpx.Client) -> None:
    created = create_batches(lclient, 45)
    forward = lclient.messages.batches.list(limit=7)
    collected: list[str] = []
    pages = 0
    for sdk_page in forward.iter_pages():
        pages += 1
        assert 1 <= len(sdk_page.data) <= 7
        collected += [batch.id for batch in sdk_page.data]
    assert collected == created[::-1], "forward auto-pagination must yield every batch once, newest first"
    assert pages == 7

    backward_ids = [batch.id for batch in lclient.messages.batches.list(limit=7, before_id=created[0])]
    assert len(backward_ids) == 44
    assert set(backward_ids) == set(created[1:])

    beta_ids = [batch.id for batch in lclient.beta.messages.batches.list(limit=7)]
    assert beta_ids == created[::-1]

    # has_more is exact: 14 older batches in pages of 7 is two pages, the second one saying no more.
    first = page(lraw, after_id=created[14], limit=7)
    assert ids(first) == created[7:14][::-1] and first["has_more"] is True
    second = page(lraw, after_id=first["last_id"], limit=7)
    assert ids(second) == created[0:7][::-1] and second["has_more"] is False


async def test_async_auto_pagination_both_directions(
    server: ServerProcess, make_async_client: Callable[..., anthropic.AsyncAnthropic], fresh_key: str
) -> None:
    client = make_async_client(server, api_key=fresh_key)
    created = [
        (await client.messages.batches.create(requests=make_requests(1, prefix=f"a{i}"))).id  # type: ignore[arg-type]
        for i in range(20)
    ]
    forward = [batch.id async for batch in client.messages.batches.list(limit=6)]
    assert forward == created[::-1]
    backward = [batch.id async for batch in client.messages.batches.list(limit=6, before_id=created[0])]
    assert len(backward) == 19 and set(backward) == set(created[1:])
    beta_backward = [b.id async for b in client.beta.messages.batches.list(limit=6, before_id=created[0])]
    assert sorted(beta_backward) == sorted(backward)


@pytest.mark.parametrize("cursor", ["after_id", "before_id"])
@pytest.mark.parametrize("value", ["msgbatch_000000000000000000000000", "nope"])
def test_unknown_cursor_is_400(ten: list[str], ten_raw: httpx.Client, cursor: str, value: str) -> None:
    assert_error(ten_raw.get("/v1/messages/batches", params={cursor: value}), 400, "invalid_request_error")


def test_cursor_from_another_workspace_is_unknown(
    ten: list[str], lraw: httpx.Client, lclient: anthropic.Anthropic
) -> None:
    create_batches(lclient, 2)
    for cursor in ("after_id", "before_id"):
        assert_error(lraw.get("/v1/messages/batches", params={cursor: ten[3]}), 400, "invalid_request_error")


def test_list_reflects_current_state(lclient: anthropic.Anthropic, lraw: httpx.Client) -> None:
    created = create_batches(lclient, 2)
    for batch_id in created:
        wait_for_end(lclient, batch_id, total=1)
    body = page(lraw)
    assert ids(body) == created[::-1]
    for item in body["data"]:
        assert item["processing_status"] == "ended"
        assert item["results_url"] is not None
        assert item["request_counts"]["succeeded"] == 1


def test_pages_never_overlap_or_skip(lclient: anthropic.Anthropic, lraw: httpx.Client) -> None:
    created = create_batches(lclient, 11)
    seen: list[str] = []
    after: str | None = None
    while True:
        params: dict[str, Any] = {"limit": 4}
        if after:
            params["after_id"] = after
        body = page(lraw, **params)
        seen += ids(body)
        if not body["has_more"]:
            break
        after = body["last_id"]
        assert len(seen) < 100
    assert seen == created[::-1]
