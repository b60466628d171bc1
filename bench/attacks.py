"""Server memory under two slow-client attacks, for the "Security and limits" figures in the README.

    .venv/bin/python -m bench.attacks [--source DIR]

Each attack runs against a fresh server:

- slow body: 4 connections declare `content-length: 63999999` (under the default body cap), send the
  head and then nothing;
- endless header: 16 connections each send a header value of 10 MB that never ends.

Prints the server's RSS at rest and its peak (VmHWM) during each attack, and what each client got back.
`--source` runs another checkout's code (e.g. an older commit, unpacked with `git archive`) for a
before/after comparison.
"""

from __future__ import annotations

import argparse
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import httpx

from bench._process import PYTHON, REPO_ROOT, child_environment, free_port, read_memory, reset_peak

MIB = 1024 * 1024
HOLD_SECONDS = 45.0  # longer than the default body read timeout (30 s)


def _first_line(sock: socket.socket) -> str:
    try:
        data = sock.recv(200)
    except OSError as exc:
        return f"error: {exc!r}"
    return data.split(b"\r\n", 1)[0].decode("latin-1") or "closed without answer"


def _slow_body(port: int, answers: list[str]) -> None:
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(b"POST /v1/messages/batches HTTP/1.1\r\nhost: x\r\ncontent-length: 63999999\r\n\r\n")
    sock.settimeout(HOLD_SECONDS)
    answers.append(_first_line(sock))
    sock.close()


def _endless_header(port: int, answers: list[str]) -> None:
    sock = socket.create_connection(("127.0.0.1", port))
    sock.settimeout(HOLD_SECONDS)
    chunk = b"a" * 65536
    try:
        sock.sendall(b"GET /v1/models HTTP/1.1\r\nhost: x\r\nx-junk: ")
        for _ in range(10 * MIB // len(chunk)):
            sock.sendall(chunk)
    except OSError:
        pass  # the server stopped reading or closed: it refused the header
    answers.append(_first_line(sock))
    sock.close()


def _attack(pid: int, port: int, name: str, target: object, connections: int) -> None:
    rest = read_memory(pid).rss_bytes
    reset_peak(pid)
    answers: list[str] = []
    threads = [threading.Thread(target=target, args=(port, answers)) for _ in range(connections)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    peak = read_memory(pid).peak_bytes
    print(
        f"{name}: {connections} connections, RSS at rest {rest / MIB:.0f} MiB, peak {peak / MIB:.0f} MiB "
        f"(+{(peak - rest) / MIB:.0f} MiB), over in {time.monotonic() - started:.1f} s; "
        f"answers: {sorted(set(answers))}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", type=Path, default=REPO_ROOT, help="checkout whose server to run")
    args = parser.parse_args()
    # A fresh server per attack, so that memory one attack left behind cannot hide the next one's.
    _serve_and_attack(args.source.resolve(), "slow body", _slow_body, 4)
    _serve_and_attack(args.source.resolve(), "endless header", _endless_header, 16)


def _serve_and_attack(source: Path, name: str, target: object, connections: int) -> None:
    port = free_port()
    with tempfile.TemporaryDirectory() as data_dir:
        command = [PYTHON, "-m", "overnight", "serve", "--backend", "fake", "--port", str(port), "--data-dir", data_dir]
        server = subprocess.Popen(
            command,
            cwd=source,
            env={**child_environment(), "PYTHONPATH": str(source)},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            _wait_healthy(port)
            _attack(server.pid, port, name, target, connections)
        finally:
            server.terminate()
            server.wait(timeout=30)


def _wait_healthy(port: int) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError("server did not start")


if __name__ == "__main__":
    main()
