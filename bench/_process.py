"""Child processes a benchmark runs against: the overnight server, upstreams, and their memory.

Every process listens on 127.0.0.1 only, logs to a file (shown when it fails to start) and is
stopped with SIGTERM, then SIGKILL after a bounded wait: a benchmark never leaves a server behind.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import httpx

REPO_ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
STARTUP_TIMEOUT_S = 120.0
SHUTDOWN_TIMEOUT_S = 30.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def child_environment() -> dict[str, str]:
    """This environment minus overnight's and Anthropic's variables, with the repo importable."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OVERNIGHT_", "ANTHROPIC_"))}
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    return env


@dataclass(frozen=True)
class Memory:
    rss_bytes: int
    """VmRSS: resident now."""
    peak_bytes: int
    """VmHWM: the most ever resident (since start, or since `reset_peak`)."""


def read_memory(pid: int) -> Memory:
    fields: dict[str, int] = {}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            name, _, value = line.partition(":")
            if name in ("VmRSS", "VmHWM"):
                fields[name] = int(value.split()[0]) * 1024
    return Memory(fields["VmRSS"], fields["VmHWM"])


def reset_peak(pid: int) -> None:
    """Start VmHWM afresh from the current RSS (Linux: write 5 to clear_refs)."""
    with open(f"/proc/{pid}/clear_refs", "w") as clear_refs:
        clear_refs.write("5")


class ChildServer:
    """An HTTP server in a child process, ready once `GET {url}{health_path}` answers 200."""

    health_path = "/healthz"

    def __init__(self, command: Sequence[str], *, port: int, log_path: Path) -> None:
        self.command = list(command)
        self.port = port
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.process is not None, "not started"
        return self.process.pid

    def memory(self) -> Memory:
        return read_memory(self.pid)

    def start(self, *, timeout: float = STARTUP_TIMEOUT_S) -> ChildServer:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            log.write(f"===== {' '.join(self.command)}\n".encode())
            log.flush()
            self.process = subprocess.Popen(
                self.command,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=REPO_ROOT,
                env=child_environment(),
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.command[:4]} exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                if httpx.get(self.url + self.health_path, timeout=1.0).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"{self.command[:4]} not ready within {timeout:.0f}s:\n{self.log_tail()}")

    def stop(self, *, timeout: float = SHUTDOWN_TIMEOUT_S) -> int | None:
        """SIGTERM, then SIGKILL if it has not exited in `timeout` seconds; the exit code."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        return self.process.returncode

    def log_tail(self, limit: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-limit:]
        except FileNotFoundError:
            return "<no log>"

    def __enter__(self) -> ChildServer:
        return self.start() if self.process is None else self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def overnight_server(
    data_dir: Path,
    *options: str,
    backend: str | None = "fake",
    config: Path | None = None,
) -> ChildServer:
    """`python -m overnight serve` on a free port with this data dir, quiet logging and `options`."""
    port = free_port()
    command = [
        PYTHON,
        "-m",
        "overnight",
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--data-dir",
        str(data_dir),
        "--log-level",
        "warning",
    ]
    if backend is not None:
        command += ["--backend", backend]
    if config is not None:
        command += ["--config", str(config)]
    return ChildServer([*command, *options], port=port, log_path=data_dir / "server.log")


class RssSampler:
    """`with RssSampler(pid) as rss:` polls VmRSS every few ms in a thread; `rss.peak` is the highest seen."""

    def __init__(self, pid: int, *, interval_seconds: float = 0.005) -> None:
        self.pid = pid
        self.interval_seconds = interval_seconds
        self.start_bytes = 0
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, name="rss-sampler", daemon=True)

    def _poll(self) -> None:
        while not self._stop.wait(self.interval_seconds):
            self.peak = max(self.peak, read_memory(self.pid).rss_bytes)

    @property
    def growth(self) -> int:
        return self.peak - self.start_bytes

    def __enter__(self) -> RssSampler:
        self.start_bytes = self.peak = read_memory(self.pid).rss_bytes
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, read_memory(self.pid).rss_bytes)


def write_router_config(path: Path, backend_name: str, backend: dict[str, str | int | float]) -> Path:
    """A routing config (the format `overnight/backends/config.py` documents) sending every model to one backend."""
    lines = [f"[backends.{backend_name}]"]
    for name, value in backend.items():
        lines.append(f"{name} = {_toml_value(value)}")
    lines += ["", "[[routes]]", 'model = "*"', f'backend = "{backend_name}"', ""]
    path.write_text("\n".join(lines))
    return path


def _toml_value(value: str | int | float) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return repr(value)
