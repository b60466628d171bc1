"""Fixtures for the end-to-end tests: real server subprocesses and official-SDK clients.

- `server`: one open-mode fake server per test module (modules override it with their own flags).
- `slow_server`: a fake server with 500 ms latency and concurrency 2, for in-progress states.
- `server_factory`: start extra servers inside a test (stopped at teardown).
- `client` / `async_client`: `anthropic.Anthropic` / `AsyncAnthropic` on `server`, strict validation,
  no retries; `make_client` / `make_async_client` build more (other keys, other servers).
- `raw` / `make_raw`: plain httpx clients for what the SDK cannot send.

Every response any of these clients receives is checked for a `req_...` `request-id` header; a missing
one fails the test at teardown.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import anthropic
import httpx
import pytest

from tests.postgres import cluster, create_database, drop_database
from tests.server import ServerProcess

TEST_API_KEY = "test-key"
_REQUEST_ID = re.compile(r"^req_[0-9A-Za-z]+$")


def start_server(data_dir: Path, args: Sequence[str] = (), env: dict[str, str] | None = None) -> ServerProcess:
    return ServerProcess(data_dir, args, env=env).start()


@pytest.fixture(scope="session", autouse=True)
def _postgres_cluster() -> Iterator[None]:
    """Stops the PostgreSQL cluster the session started, if it started one."""
    yield
    cluster.stop()


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if cluster.problem:
        terminalreporter.write_line(f"WARNING: PostgreSQL tests were skipped: {cluster.problem}", red=True, bold=True)


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database (skips, loudly, where PostgreSQL cannot run; fails in CI)."""
    url = create_database()
    yield url
    drop_database(url)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """An open-mode (no keys) fake server with no latency, shared by one module."""
    proc = start_server(tmp_path_factory.mktemp("server"))
    yield proc
    proc.terminate_quietly()


@pytest.fixture(scope="module")
def slow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A fake server slow enough that batches stay `in_progress`/`canceling` for a while."""
    proc = start_server(tmp_path_factory.mktemp("slow"), ["--fake-latency-ms", "500", "--concurrency", "2"])
    yield proc
    proc.terminate_quietly()


@pytest.fixture
def server_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., ServerProcess]]:
    started: list[ServerProcess] = []

    def make(*args: str, env: dict[str, str] | None = None, data_dir: Path | None = None) -> ServerProcess:
        proc = ServerProcess(data_dir or tmp_path_factory.mktemp("srv"), args, env=env)
        started.append(proc)
        return proc.start()

    yield make
    for proc in started:
        proc.terminate_quietly()


class _RequestIdAudit:
    """Records every response that lacks a well-formed `request-id` header."""

    def __init__(self) -> None:
        self.missing: list[str] = []

    def check(self, response: Any) -> None:
        value = response.headers.get("request-id")
        if value is None or not _REQUEST_ID.match(value):
            self.missing.append(
                f"{response.request.method} {response.request.url} -> {response.status_code} request-id={value!r}"
            )

    async def acheck(self, response: Any) -> None:
        self.check(response)

    def assert_clean(self) -> None:
        assert not self.missing, "responses without a req_ request-id header:\n" + "\n".join(self.missing)


@pytest.fixture
def request_id_audit() -> Iterator[_RequestIdAudit]:
    audit = _RequestIdAudit()
    yield audit
    audit.assert_clean()


@pytest.fixture
def make_client(request_id_audit: _RequestIdAudit) -> Iterator[Callable[..., anthropic.Anthropic]]:
    made: list[anthropic.Anthropic] = []

    def make(proc: ServerProcess, api_key: str = TEST_API_KEY, **kwargs: Any) -> anthropic.Anthropic:
        http_client = anthropic.DefaultHttpxClient(event_hooks={"response": [request_id_audit.check]})
        client = anthropic.Anthropic(
            base_url=proc.base_url,
            api_key=api_key,
            max_retries=kwargs.pop("max_retries", 0),
            timeout=kwargs.pop("timeout", 30.0),
            _strict_response_validation=True,
            http_client=http_client,
            **kwargs,
        )
        made.append(client)
        return client

    yield make
    for client in made:
        client.close()


@pytest.fixture
async def make_async_client(
    request_id_audit: _RequestIdAudit,
) -> AsyncIterator[Callable[..., anthropic.AsyncAnthropic]]:
    made: list[anthropic.AsyncAnthropic] = []

    def make(proc: ServerProcess, api_key: str = TEST_API_KEY, **kwargs: Any) -> anthropic.AsyncAnthropic:
        http_client = anthropic.DefaultAsyncHttpxClient(event_hooks={"response": [request_id_audit.acheck]})
        client = anthropic.AsyncAnthropic(
            base_url=proc.base_url,
            api_key=api_key,
            max_retries=kwargs.pop("max_retries", 0),
            timeout=kwargs.pop("timeout", 30.0),
            _strict_response_validation=True,
            http_client=http_client,
            **kwargs,
        )
        made.append(client)
        return client

    yield make
    for client in made:
        await client.close()


@pytest.fixture
def client(server: ServerProcess, make_client: Callable[..., anthropic.Anthropic]) -> anthropic.Anthropic:
    return make_client(server)


@pytest.fixture
async def async_client(
    server: ServerProcess, make_async_client: Callable[..., anthropic.AsyncAnthropic]
) -> anthropic.AsyncAnthropic:
    return make_async_client(server)


@pytest.fixture
def make_raw(request_id_audit: _RequestIdAudit) -> Iterator[Callable[..., httpx.Client]]:
    """Plain httpx clients sending what the older SDKs send (x-api-key, anthropic-version 2023-06-01)."""
    made: list[httpx.Client] = []

    def make(
        proc: ServerProcess, api_key: str | None = TEST_API_KEY, headers: dict[str, str] | None = None
    ) -> httpx.Client:
        base_headers = {"anthropic-version": "2023-06-01"}
        if api_key is not None:
            base_headers["x-api-key"] = api_key
        base_headers.update(headers or {})
        http = httpx.Client(
            base_url=proc.base_url,
            headers=base_headers,
            timeout=30.0,
            event_hooks={"response": [request_id_audit.check]},
        )
        made.append(http)
        return http

    yield make
    for http in made:
        http.close()


@pytest.fixture
def raw(server: ServerProcess, make_raw: Callable[..., httpx.Client]) -> httpx.Client:
    return make_raw(server)


def newest_migration() -> str:
    """The head of overnight's Alembic history: what a migrated database's `alembic_version` holds."""
    from alembic.script import ScriptDirectory

    from overnight.store.base import MIGRATIONS

    head = ScriptDirectory(str(MIGRATIONS)).get_current_head()
    assert head is not None
    return head
