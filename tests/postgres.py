"""PostgreSQL for the tests: a throwaway cluster (`scripts/postgres`) and a fresh database per use.

`OVERNIGHT_TEST_POSTGRES_URL` names a running server to use (scripts/test starts one and sets it);
without it, the first test that needs PostgreSQL starts one itself, for the session. Where none can be
had (no PostgreSQL and no root to install it), those tests skip and say why — except under `CI=true`,
where they must run.

`OVERNIGHT_TEST_STORE=postgresql` runs every test server on PostgreSQL instead of SQLite (scripts/test
runs the API suites, tests/api and tests/openai, a second time that way).
"""

from __future__ import annotations

import os
import secrets
import subprocess
import tempfile
from pathlib import Path

import psycopg
import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
ADMIN_URL_ENV = "OVERNIGHT_TEST_POSTGRES_URL"
STORE_ENV = "OVERNIGHT_TEST_STORE"


def servers_use_postgres() -> bool:
    return os.environ.get(STORE_ENV) == "postgresql"


class _Cluster:
    """The session's server: the one named in the environment, or one started here on first use."""

    def __init__(self) -> None:
        self.admin_url: str | None = os.environ.get(ADMIN_URL_ENV) or None
        self.problem: str | None = None
        self._started_in: Path | None = None

    def url(self) -> str:
        if self.admin_url is None and self.problem is None:
            self._start()
        if self.admin_url is None:
            message = f"PostgreSQL tests cannot run: {self.problem}"
            if os.environ.get("CI") == "true":
                pytest.fail(message)
            pytest.skip(message)
        return self.admin_url

    def _start(self) -> None:
        directory = Path(tempfile.mkdtemp(prefix="overnight-pg-"))
        directory.chmod(0o755)
        result = subprocess.run(
            [str(REPO_ROOT / "scripts" / "postgres"), "start", str(directory / "cluster")],
            capture_output=True,
            text=True,
            timeout=600,
        )
        if result.returncode != 0:
            self.problem = f"scripts/postgres start failed ({result.returncode}): {result.stderr.strip()[-500:]}"
            return
        self._started_in = directory
        self.admin_url = result.stdout.strip().splitlines()[-1]
        os.environ[ADMIN_URL_ENV] = self.admin_url  # for the server processes the tests start

    def stop(self) -> None:
        if self._started_in is not None:
            subprocess.run(
                [str(REPO_ROOT / "scripts" / "postgres"), "stop", str(self._started_in / "cluster")],
                capture_output=True,
                timeout=60,
            )


cluster = _Cluster()


def create_database() -> str:
    """A new, empty database on the session's server; its URL."""
    admin_url = cluster.url()
    name = f"t_{secrets.token_hex(6)}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return admin_url.rsplit("/", 1)[0] + f"/{name}"


def drop_database(url: str) -> None:
    admin_url = cluster.url()
    name = url.rsplit("/", 1)[1]
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
