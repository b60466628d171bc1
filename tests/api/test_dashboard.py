"""The dashboard's routes over plain HTTP: the page and its assets with their security headers, and the
paged, filterable results endpoint (auth, validation, paging, filters) against a real server with keys."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from typing import Any

import anthropic
import httpx
import pytest

from tests.api.helpers import assert_error, make_requests, request, wait_for_end
from tests.conftest import start_server
from tests.server import ServerProcess

KEY, OTHER_KEY = "dash-key", "other-key"
UNKNOWN_ID = "msgbatch_000000000000000000000000"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = start_server(
        tmp_path_factory.mktemp("dashboard"), ["--api-key", f"{KEY}:team", "--api-key", f"{OTHER_KEY}:other"]
    )
    yield proc
    proc.terminate_quietly()


@pytest.fixture
def client(server: ServerProcess, make_client: Callable[..., anthropic.Anthropic]) -> anthropic.Anthropic:
    return make_client(server, api_key=KEY)


@pytest.fixture(scope="module")
def mixed_batch(server: ServerProcess) -> tuple[str, list[dict[str, Any]]]:
    """An ended batch of 25 successes and 5 errors, interleaved (the fake backend errors a missing max_tokens)."""
    requests: list[dict[str, Any]] = []
    for i in range(30):
        if i % 6 == 5:
            requests.append(
                {"custom_id": f"bad-{i:02d}", "params": {"model": "m", "messages": [{"role": "user", "content": "x"}]}}
            )
        else:
            requests.append(request(f"good-{i:02d}", f"answer number {i}"))
    with anthropic.Anthropic(base_url=server.base_url, api_key=KEY, max_retries=0) as sdk:
        batch = sdk.messages.batches.create(requests=requests)  # type: ignore[arg-type]
        wait_for_end(sdk, batch.id, total=30)
    return batch.id, requests


def _page(raw: httpx.Client, batch_id: str, **params: Any) -> dict[str, Any]:
    response = raw.get(f"/v1/overnight/batches/{batch_id}/results", params=params)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"type", "batch_id", "result_type", "offset", "limit", "data", "has_more"}, body
    assert body["type"] == "results_page" and body["batch_id"] == batch_id
    return body


# -- the page and its assets ---------------------------------------------------------------------


def _assert_security_headers(response: httpx.Response) -> None:
    csp = response.headers["content-security-policy"]
    directives = dict(part.strip().split(" ", 1) for part in csp.split(";"))
    assert directives["default-src"] == "'none'"
    assert directives["script-src"] == "'self'", csp  # no 'unsafe-inline', no CDN
    assert "unsafe" not in csp
    assert directives["frame-ancestors"] == "'none'"
    assert response.headers["referrer-policy"] == "no-referrer"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["x-frame-options"] == "DENY"


def test_page_needs_no_key_and_sets_security_headers(server: ServerProcess) -> None:
    # The page itself holds nothing secret: it must load before anyone has signed in.
    response = httpx.get(f"{server.base_url}/ui")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert response.headers["request-id"].startswith("req_")
    _assert_security_headers(response)
    html = response.text
    assert '<script src="ui/assets/dashboard.js" defer></script>' in html
    # No inline script or style and nothing from another origin (the CSP would block them anyway).
    assert not re.search(r"<script(?![^>]*\bsrc=)", html), "inline <script> in the page"
    assert " style=" not in html and "<style" not in html
    assert not re.search(r"(src|href)=\"(https?:)?//", html), "a resource from another origin"
    assert 'id="sign-in-form"' in html and 'type="password"' in html


@pytest.mark.parametrize(
    ("name", "media_type", "marker"),
    [
        ("dashboard.js", "text/javascript; charset=utf-8", "x-api-key"),
        ("dashboard.css", "text/css; charset=utf-8", ".progress"),
    ],
)
def test_assets_are_served_with_etags(server: ServerProcess, name: str, media_type: str, marker: str) -> None:
    url = f"{server.base_url}/ui/assets/{name}"
    response = httpx.get(url)
    assert response.status_code == 200
    assert response.headers["content-type"] == media_type
    assert marker in response.text
    _assert_security_headers(response)
    etag = response.headers["etag"]
    again = httpx.get(url, headers={"if-none-match": etag})
    assert again.status_code == 304 and again.content == b""
    assert httpx.get(url, headers={"if-none-match": '"stale"'}).status_code == 200


def test_script_keeps_the_key_out_of_urls_and_logs(server: ServerProcess) -> None:
    script = httpx.get(f"{server.base_url}/ui/assets/dashboard.js").text
    assert "sessionStorage" in script and "localStorage" not in script
    assert "console." not in script
    assert "innerHTML" not in script  # server text goes in as textContent only
    assert not re.search(r"[?&]api[_-]?key=", script)


def test_unknown_asset_is_a_404_envelope(server: ServerProcess) -> None:
    response = httpx.get(f"{server.base_url}/ui/assets/../../pyproject.toml")
    assert response.status_code == 404
    assert_error(httpx.get(f"{server.base_url}/ui/assets/secret.py"), 404, "not_found_error")


def test_trailing_slash_redirects_to_the_page(server: ServerProcess) -> None:
    response = httpx.get(f"{server.base_url}/ui/")
    assert response.status_code == 308 and response.headers["location"] == "../ui"
    followed = httpx.get(f"{server.base_url}/ui/", follow_redirects=True)
    assert followed.status_code == 200 and followed.url.path == "/ui"


def test_worker_node_has_no_dashboard(server_factory: Callable[..., ServerProcess], postgres_url: str) -> None:
    worker = server_factory("--role", "worker", "--database", postgres_url)
    assert_error(httpx.get(f"{worker.base_url}/ui"), 404, "not_found_error")


# -- the results endpoint ------------------------------------------------------------------------


def test_results_page_needs_a_valid_key(
    server: ServerProcess, mixed_batch: tuple[str, Any], make_raw: Callable[..., httpx.Client]
) -> None:
    batch_id, _ = mixed_batch
    path = f"/v1/overnight/batches/{batch_id}/results"
    assert_error(make_raw(server, api_key=None).get(path), 401, "authentication_error")
    assert_error(make_raw(server, api_key="wrong").get(path), 401, "authentication_error")
    # Another workspace's key cannot see the batch at all.
    assert_error(make_raw(server, api_key=OTHER_KEY).get(path), 404, "not_found_error")


def test_results_pages_cover_every_line_in_order(
    server: ServerProcess, mixed_batch: tuple[str, Any], make_raw: Callable[..., httpx.Client]
) -> None:
    batch_id, requests = mixed_batch
    raw = make_raw(server, api_key=KEY)
    whole = raw.get(f"/v1/messages/batches/{batch_id}/results").text.splitlines()
    seen: list[dict[str, Any]] = []
    offset = 0
    while True:
        page = _page(raw, batch_id, limit=7, offset=offset)
        assert page["limit"] == 7 and page["offset"] == offset and page["result_type"] is None
        seen += page["data"]
        offset += 7
        if not page["has_more"]:
            break
        assert len(page["data"]) == 7
    assert seen == [json.loads(line) for line in whole]
    assert sorted(line["custom_id"] for line in seen) == sorted(r["custom_id"] for r in requests)


def test_results_filter_by_type_and_custom_id(
    server: ServerProcess, mixed_batch: tuple[str, Any], make_raw: Callable[..., httpx.Client]
) -> None:
    batch_id, _ = mixed_batch
    raw = make_raw(server, api_key=KEY)
    errored = _page(raw, batch_id, type="errored", limit=100)
    assert errored["result_type"] == "errored" and not errored["has_more"]
    assert sorted(line["custom_id"] for line in errored["data"]) == ["bad-05", "bad-11", "bad-17", "bad-23", "bad-29"]
    for line in errored["data"]:
        assert line["result"]["type"] == "errored"
        assert "max_tokens" in line["result"]["error"]["error"]["message"], line

    succeeded = _page(raw, batch_id, type="succeeded", limit=20)
    assert len(succeeded["data"]) == 20 and succeeded["has_more"]
    rest = _page(raw, batch_id, type="succeeded", limit=20, offset=20)
    assert len(rest["data"]) == 5 and not rest["has_more"]
    for line in succeeded["data"] + rest["data"]:
        number = int(line["custom_id"].split("-")[1])
        assert line["result"]["message"]["content"][0]["text"] == f"answer number {number}"

    assert _page(raw, batch_id, type="canceled")["data"] == []
    by_id = _page(raw, batch_id, custom_id="-1")  # good-10, bad-11, good-12 ... good-16, bad-17
    assert [line["custom_id"] for line in by_id["data"]] == [
        "good-10",
        "bad-11",
        "good-12",
        "good-13",
        "good-14",
        "good-15",
        "good-16",
        "bad-17",
        "good-18",
        "good-19",
    ]
    both = _page(raw, batch_id, custom_id="-1", type="errored")
    assert [line["custom_id"] for line in both["data"]] == ["bad-11", "bad-17"]


@pytest.mark.parametrize(
    ("params", "message_part"),
    [
        ({"type": "done"}, "type"),
        ({"offset": "-1"}, "offset"),
        ({"offset": "x"}, "offset"),
        ({"limit": "0"}, "limit"),
        ({"limit": "1001"}, "limit"),
    ],
)
def test_results_page_rejects_bad_parameters(
    server: ServerProcess,
    mixed_batch: tuple[str, Any],
    make_raw: Callable[..., httpx.Client],
    params: dict[str, str],
    message_part: str,
) -> None:
    batch_id, _ = mixed_batch
    response = make_raw(server, api_key=KEY).get(f"/v1/overnight/batches/{batch_id}/results", params=params)
    assert message_part in assert_error(response, 400, "invalid_request_error")


def test_results_page_of_unknown_or_running_batch(
    slow_server: ServerProcess, make_raw: Callable[..., httpx.Client]
) -> None:
    raw = make_raw(slow_server)
    assert_error(raw.get(f"/v1/overnight/batches/{UNKNOWN_ID}/results"), 404, "not_found_error")
    created = raw.post("/v1/messages/batches", json={"requests": make_requests(20)})
    assert created.status_code == 200, created.text
    batch_id = created.json()["id"]
    message = assert_error(raw.get(f"/v1/overnight/batches/{batch_id}/results"), 400, "invalid_request_error")
    assert "not ended" in message
    assert raw.post(f"/v1/messages/batches/{batch_id}/cancel").status_code == 200


def test_open_mode_serves_the_page_and_results_without_a_key(
    server_factory: Callable[..., ServerProcess], make_raw: Callable[..., httpx.Client]
) -> None:
    open_server = server_factory()
    raw = make_raw(open_server, api_key=None)
    assert raw.get("/ui").status_code == 200
    created = raw.post("/v1/messages/batches", json={"requests": make_requests(3)})
    assert created.status_code == 200, created.text
    batch_id = created.json()["id"]
    with anthropic.Anthropic(base_url=open_server.base_url, api_key="any", max_retries=0) as sdk:
        wait_for_end(sdk, batch_id, total=3)
    page = _page(raw, batch_id)
    assert [line["custom_id"] for line in page["data"]] == ["req-0", "req-1", "req-2"]
