"""PostgreSQL for the benchmarks: a throwaway cluster (scripts/postgres) and a fresh database per run.

`OVERNIGHT_BENCH_POSTGRES_URL` names a server to use instead (its admin database URL); otherwise one
is started in the benchmark's scratch directory and stopped at the end.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path

import psycopg

from bench._process import REPO_ROOT

URL_ENV = "OVERNIGHT_BENCH_POSTGRES_URL"


@contextlib.contextmanager
def postgres_server(work: Path) -> Iterator[str]:
    """The admin URL of a running PostgreSQL server for the length of the block."""
    if os.environ.get(URL_ENV):
        yield os.environ[URL_ENV]
        return
    cluster = work / "postgres"
    work.chmod(0o755)
    script = str(REPO_ROOT / "scripts" / "postgres")
    started = subprocess.run([script, "start", str(cluster)], capture_output=True, text=True, timeout=600)
    if started.returncode != 0:
        raise RuntimeError(f"cannot start PostgreSQL: {started.stderr.strip()[-500:]}")
    try:
        yield started.stdout.strip().splitlines()[-1]
    finally:
        subprocess.run([script, "stop", str(cluster)], capture_output=True, timeout=120)


def fresh_database(admin_url: str) -> str:
    """A new empty database on that server; its URL."""
    name = f"bench_{secrets.token_hex(5)}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return admin_url.rsplit("/", 1)[0] + f"/{name}"
