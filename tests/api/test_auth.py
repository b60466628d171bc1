"""Keys and workspaces: 401 for missing/unknown keys, 403 for a workspace mismatch, isolation (404)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import anthropic
import httpx
import pytest

from tests.api.helpers import assert_batch_json, assert_error, assert_sdk_error, make_requests, wait_for_end
from tests.conftest import start_server
from tests.server import ServerProcess

ALPHA, BETA, SOLO = "k-alpha", "k-beta", "k-solo"
BATCHES = "/v1/messages/batches"
UNKNOWN_ID = "msgbatch_000000000000000000000000"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = start_server(
        tmp_path_factory.mktemp("auth"),
        [
            "--api-key",
            f"{ALPHA}:ws-alpha",
            "--api-key",
            f"{BETA}:ws-beta",
            "--api-key",
            SOLO,
        ],
    )
    yield proc
    proc.terminate_quietly()


@pytest.fixture
def alpha(server: ServerProcess, make_client: Callable[..., anthropic.Anthropic]) -> anthropic.Anthropic:
    return make_client(server, api_key=ALPHA)


@pytest.fixture
def beta(server: ServerProcess, make_client: Callable[..., anthropic.Anthropic]) -> anthropic.Anthropic:
    return make_client(server, api_key=BETA)


@pytest.fixture
def alpha_batch(alpha: anthropic.Anthropic) -> str:
    batch = alpha.messages.batches.create(requests=make_requests(2, prefix="alpha"))  # type: ignore[arg-type]
    wait_for_end(alpha, batch.id, total=2)
    return batch.id


def _all_ids(client: anthropic.Anthropic) -> set[str]:
    return {b.id for b in client.messages.batches.list(limit=1000)}


def _endpoints(batch_id: str) -> list[tuple[str, str]]:
    return [
        ("GET", BATCHES),
        ("POST", BATCHES),
        ("GET", f"{BATCHES}/{batch_id}"),
        ("POST", f"{BATCHES}/{batch_id}/cancel"),
        ("DELETE", f"{BATCHES}/{batch_id}"),
        ("GET", f"{BATCHES}/{batch_id}/results"),
    ]


def test_missing_key_is_401_everywhere(
    make_raw: Callable[..., httpx.Client], server: ServerProcess, alpha_batch: str
) -> None:
    http = make_raw(server, api_key=None)
    for method, path in _endpoints(alpha_batch):
        kwargs = {"json": {"requests": make_requests(1)}} if (method, path) == ("POST", BATCHES) else {}
        assert_error(http.request(method, path, **kwargs), 401, "authentication_error")


def test_unknown_key_is_401_everywhere(
    make_raw: Callable[..., httpx.Client], server: ServerProcess, alpha_batch: str
) -> None:
    for headers in (
        {"x-api-key": "k-nope"},
        {"authorization": "Bearer k-nope"},
        {"authorization": f"Basic {ALPHA}"},
        {"authorization": "Bearer"},
        {"x-api-key": ""},
    ):
        http = make_raw(server, api_key=None, headers=headers)
        for method, path in _endpoints(alpha_batch):
            kwargs = {"json": {"requests": make_requests(1)}} if (method, path) == ("POST", BATCHES) else {}
            assert_error(http.request(method, path, **kwargs), 401, "authentication_error")


def test_sdk_unknown_key(server: ServerProcess, make_client: Callable[..., anthropic.Anthropic]) -> None:
    client = make_client(server, api_key="k-unknown")
    with pytest.raises(anthropic.AuthenticationError) as info:
        client.messages.batches.list()
    assert_sdk_error(info.value, 401, "authentication_error")
    with pytest.raises(anthropic.AuthenticationError):
        client.messages.batches.create(requests=make_requests(1))  # type: ignore[arg-type]


def test_x_api_key_and_bearer_both_accepted(
    make_raw: Callable[..., httpx.Client], server: ServerProcess, alpha: anthropic.Anthropic
) -> None:
    by_header = make_raw(server, api_key=ALPHA)
    created = by_header.post(BATCHES, json={"requests": make_requests(1, prefix="xkey")})
    assert created.status_code == 200, created.text
    batch_id = assert_batch_json(created.json(), total=1)["id"]
    by_bearer = make_raw(server, api_key=None, headers={"authorization": f"Bearer {ALPHA}"})
    fetched = by_bearer.get(f"{BATCHES}/{batch_id}")
    assert fetched.status_code == 200, fetched.text
    assert fetched.json()["id"] == batch_id
    # The SDK (Bearer) sees it in the same workspace.
    assert alpha.messages.batches.retrieve(batch_id).id == batch_id


def test_workspace_header_must_match(
    alpha: anthropic.Anthropic, alpha_batch: str, make_raw: Callable[..., httpx.Client], server: ServerProcess
) -> None:
    before = _all_ids(alpha)
    with pytest.raises(anthropic.PermissionDeniedError) as info:
        alpha.messages.batches.create(requests=make_requests(1, prefix="ws"), workspace_id="ws-beta")  # type: ignore[arg-type]
    assert_sdk_error(info.value, 403, "permission_error")
    assert _all_ids(alpha) == before, "a create refused with 403 stored a batch"
    with pytest.raises(anthropic.PermissionDeniedError):
        alpha.messages.batches.retrieve(alpha_batch, workspace_id="ws-beta")
    with pytest.raises(anthropic.PermissionDeniedError):
        alpha.messages.batches.list(workspace_id="ws-other")
    http = make_raw(server, api_key=ALPHA, headers={"anthropic-workspace-id": "ws-beta"})
    for method, path in _endpoints(alpha_batch):
        kwargs = {"json": {"requests": make_requests(1)}} if (method, path) == ("POST", BATCHES) else {}
        assert_error(http.request(method, path, **kwargs), 403, "permission_error")
    # A matching header is fine.
    assert alpha.messages.batches.retrieve(alpha_batch, workspace_id="ws-alpha").id == alpha_batch
    assert alpha_batch in {b.id for b in alpha.messages.batches.list(workspace_id="ws-alpha", limit=1000)}
    made = alpha.messages.batches.create(requests=make_requests(1, prefix="wsok"), workspace_id="ws-alpha")  # type: ignore[arg-type]
    assert made.id in _all_ids(alpha)


def test_workspaces_are_isolated(
    alpha: anthropic.Anthropic,
    beta: anthropic.Anthropic,
    alpha_batch: str,
    make_raw: Callable[..., httpx.Client],
    server: ServerProcess,
) -> None:
    beta_batch = beta.messages.batches.create(requests=make_requests(1, prefix="beta"))  # type: ignore[arg-type]
    wait_for_end(beta, beta_batch.id, total=1)

    assert alpha_batch in _all_ids(alpha) and beta_batch.id not in _all_ids(alpha)
    assert beta_batch.id in _all_ids(beta) and alpha_batch not in _all_ids(beta)

    with pytest.raises(anthropic.NotFoundError) as info:
        beta.messages.batches.retrieve(alpha_batch)
    assert_sdk_error(info.value, 404, "not_found_error")
    with pytest.raises(anthropic.NotFoundError):
        beta.messages.batches.cancel(alpha_batch)
    with pytest.raises(anthropic.NotFoundError):
        beta.messages.batches.delete(alpha_batch)
    with pytest.raises(anthropic.NotFoundError):
        alpha.messages.batches.retrieve(beta_batch.id)
    http = make_raw(server, api_key=BETA)
    assert_error(http.get(f"{BATCHES}/{alpha_batch}/results"), 404, "not_found_error")

    # Nothing the other workspace tried changed the batch.
    still = alpha.messages.batches.retrieve(alpha_batch)
    assert still.processing_status == "ended" and still.request_counts.succeeded == 2
    assert len(list(alpha.messages.batches.results(alpha_batch))) == 2


def test_key_without_workspace(
    server: ServerProcess, make_client: Callable[..., anthropic.Anthropic], alpha: anthropic.Anthropic
) -> None:
    solo = make_client(server, api_key=SOLO)
    batch = solo.messages.batches.create(requests=make_requests(1, prefix="solo"))  # type: ignore[arg-type]
    wait_for_end(solo, batch.id, total=1)
    assert batch.id in _all_ids(solo)
    assert batch.id not in _all_ids(alpha)


def test_keys_from_environment(
    server_factory: Callable[..., ServerProcess], make_client: Callable[..., anthropic.Anthropic]
) -> None:
    proc = server_factory(env={"OVERNIGHT_API_KEYS": "envkey1:wsA,envkey2:wsB"})
    one = make_client(proc, api_key="envkey1")
    two = make_client(proc, api_key="envkey2")
    batch = one.messages.batches.create(requests=make_requests(1, prefix="env"))  # type: ignore[arg-type]
    assert one.messages.batches.retrieve(batch.id).id == batch.id
    with pytest.raises(anthropic.NotFoundError):
        two.messages.batches.retrieve(batch.id)
    with pytest.raises(anthropic.AuthenticationError):
        make_client(proc, api_key="test-key").messages.batches.list()


def test_open_mode_accepts_any_key(
    server_factory: Callable[..., ServerProcess],
    make_client: Callable[..., anthropic.Anthropic],
    make_raw: Callable[..., httpx.Client],
) -> None:
    proc = server_factory()
    first = make_client(proc, api_key="whatever-1")
    second = make_client(proc, api_key="sk-ant-something-else")
    batch = first.messages.batches.create(requests=make_requests(1, prefix="open"))  # type: ignore[arg-type]
    assert second.messages.batches.retrieve(batch.id).id == batch.id
    assert batch.id in _all_ids(second)
    by_header = make_raw(proc, api_key="a-third-key")
    assert by_header.get(f"{BATCHES}/{batch.id}").status_code == 200
