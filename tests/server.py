"""Run the real overnight server as a subprocess, the way a user would start it.

`ServerProcess` starts `python -m overnight serve --port 0 ...` with a data directory (the server binds
a free port itself and names it in its start-up log line, so no other process can take the port between
a probe and the bind), waits until `/healthz` answers, and stops it with SIGTERM (asserting a clean exit) or kills
it with SIGKILL (for crash-recovery tests). Its stdout/stderr go to log files inside the data directory.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import httpx

from tests.postgres import create_database, servers_use_postgres

REPO_ROOT = Path(__file__).resolve().parent.parent
STARTUP_TIMEOUT_S = 20.0
_SERVING_ON = re.compile(rb"serving on http://127\.0\.0\.1:(\d+)")
SHUTDOWN_TIMEOUT_S = 15.0


def free_port() -> int:
    """A port nothing listens on now (for a peer that must be absent; a server we start picks its own)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _tail(path: Path, limit: int = 6000) -> str:
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return "<no log file>"
    return text[-limit:]


class ServerProcess:
    """One overnight server process bound to one data directory (which survives restarts)."""

    def __init__(
        self,
        data_dir: Path,
        args: Sequence[str] = (),
        *,
        env: Mapping[str, str] | None = None,
        backend: str | None = "fake",
    ) -> None:
        self.data_dir = Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.args = list(args)
        self.extra_env = dict(env or {})
        self.backend = backend
        self.port: int | None = None
        self._asked_port = 0
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.database_args: list[str] = []
        self.stdout_path = self.data_dir / "server.stdout.log"
        self.stderr_path = self.data_dir / "server.stderr.log"

    # -- lifecycle -------------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        assert self.port is not None, "server not started"
        return f"http://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def command(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "overnight",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(self._asked_port),
            "--data-dir",
            str(self.data_dir),
            *(["--backend", self.backend] if self.backend is not None else []),  # None: the server's default
            *self.database_args,
            *self.args,
        ]

    def _environment(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OVERNIGHT_", "ANTHROPIC_"))}
        env["PYTHONUNBUFFERED"] = "1"
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
        env.update(self.extra_env)
        return env

    def start(self, *, port: int | None = None, startup_timeout: float | None = None) -> ServerProcess:
        """Start and wait until healthy, for `startup_timeout` seconds (default `STARTUP_TIMEOUT_S`)."""
        assert not self.running, "server already running"
        if servers_use_postgres() and not self.database_args and "--database" not in self.args:
            # One database per server, kept across its restarts, as its data dir is.
            self.database_args = ["--database", create_database()]
        self._asked_port = port or 0
        self.port = None
        self.starts += 1
        log_start = self.stderr_path.stat().st_size if self.stderr_path.exists() else 0
        with self.stdout_path.open("ab") as out, self.stderr_path.open("ab") as err:
            banner = f"\n===== start #{self.starts}: {' '.join(self.command())}\n".encode()
            out.write(banner)
            err.write(banner)
            out.flush()
            err.flush()
            self.process = subprocess.Popen(
                self.command(),
                stdout=out,
                stderr=err,
                stdin=subprocess.DEVNULL,
                cwd=REPO_ROOT,
                env=self._environment(),
            )
        self._wait_healthy(STARTUP_TIMEOUT_S if startup_timeout is None else startup_timeout, log_start)
        return self

    def _wait_healthy(self, timeout: float, log_start: int) -> None:
        assert self.process is not None
        deadline = time.monotonic() + timeout
        last_error = "no attempt"
        while time.monotonic() < deadline:
            code = self.process.poll()
            if code is not None:
                raise AssertionError(
                    f"overnight server exited with code {code} during startup.\n"
                    f"command: {' '.join(self.command())}\nstderr:\n{_tail(self.stderr_path)}"
                )
            if self.port is None:
                self.port = self._bound_port(log_start)
                if self.port is None:
                    last_error = "no 'serving on' line in its log yet"
                    time.sleep(0.05)
                    continue
            try:
                response = httpx.get(f"{self.base_url}/healthz", timeout=1.0)
                if response.status_code == 200 and response.json() == {"status": "ok"}:
                    return
                last_error = f"HTTP {response.status_code}: {response.text[:200]}"
            except (httpx.HTTPError, ValueError) as exc:
                last_error = repr(exc)
            time.sleep(0.05)
        self.kill()
        raise AssertionError(
            f"overnight server did not become healthy within {timeout}s ({last_error}).\n"
            f"command: {' '.join(self.command())}\nstderr:\n{_tail(self.stderr_path)}"
        )

    def _bound_port(self, log_start: int) -> int | None:
        """The port this start's log line names (`... serving on http://127.0.0.1:PORT ...`)."""
        with self.stderr_path.open("rb") as log:
            log.seek(log_start)
            found = _SERVING_ON.search(log.read())
        return int(found.group(1)) if found else None

    def stop(self, *, timeout: float = SHUTDOWN_TIMEOUT_S, expect_code: int | None = 0) -> int:
        """SIGTERM, wait, and assert the process exited with `expect_code` (0; None: return it unchecked)."""
        assert self.process is not None, "server never started"
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=5)
            raise AssertionError(
                f"overnight server did not exit within {timeout}s of SIGTERM.\nstderr:\n{_tail(self.stderr_path)}"
            ) from None
        if expect_code is not None:
            assert code == expect_code, (
                f"overnight server exited with code {code} after SIGTERM (expected {expect_code}).\n"
                f"stderr:\n{_tail(self.stderr_path)}"
            )
        return code

    def kill(self) -> None:
        """SIGKILL: no chance to clean up, like a crash or an OOM kill."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)

    def restart(self, *, same_port: bool = False) -> ServerProcess:
        """Start again on the same data directory (after `stop()` or `kill()`)."""
        if self.running:
            self.stop()
        return self.start(port=self.port if same_port else None)

    def terminate_quietly(self) -> None:
        """Teardown: SIGTERM then SIGKILL if needed, without asserting (dedicated tests assert exit codes)."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=SHUTDOWN_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=5)

    def stderr_tail(self) -> str:
        return _tail(self.stderr_path)

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.terminate_quietly()
