"""Fixtures for the end-to-end tests of the real backends: whole server processes, real peers, the SDK.

Everything here runs as separate processes on 127.0.0.1 and is driven through the official `anthropic`
SDK with strict response validation (`make_client` from `tests/conftest.py`):

- `start_overnight(*args, backend=...)`: start overnight servers for one module; each is stopped with
  SIGTERM at the end of the module and must exit 0, having shut its backends down without an error.
- `local_model_path`: the default GGUF (SmolLM2-135M-Instruct, from the backend tests' fixtures).
- `llama_server`: llama-cpp-python's own OpenAI-compatible server on that GGUF (backend tests' fixture).
- `ProgrammableUpstream` / `programmable_upstream`: a real Anthropic-style HTTP upstream whose answers are
  scripted per prompt (the last user message's text): so many 429/529/500s, then a success. It records
  every call with its arrival and reply times and the calls in flight, so the tests count calls per
  request and measure backoff and concurrency upstream.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anthropic
import pytest
from anthropic.types import MessageParam
from starlette.requests import Request
from starlette.responses import Response

from tests.api.helpers import counts_total, sdk_results, wait_for_end
from tests.backends.conftest import llama_server, local_model_path  # noqa: F401  (fixtures)
from tests.backends.upstreams import Recorded, Reply, ScriptedUpstream
from tests.server import ServerProcess

# -- overnight servers ---------------------------------------------------------------------------

StartOvernight = Callable[..., ServerProcess]


@pytest.fixture(scope="module")
def start_overnight(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StartOvernight]:
    """Start `python -m overnight serve --backend BACKEND ARGS...`; all are stopped (cleanly) at module end."""
    started: list[ServerProcess] = []

    def start(*args: str, backend: str = "fake", env: dict[str, str] | None = None) -> ServerProcess:
        proc = ServerProcess(tmp_path_factory.mktemp(f"overnight-{backend}"), args, backend=backend, env=env)
        started.append(proc)
        return proc.start()

    yield start
    problems: list[str] = []
    for proc in reversed(started):  # fronts before the upstreams they call
        if not proc.running:
            continue
        try:
            proc.stop()  # SIGTERM: exits 0 within the timeout
        except AssertionError as exc:
            problems.append(str(exc))
            continue
        last_run = proc.stderr_path.read_text(errors="replace").rsplit("===== start #", 1)[-1]
        # ...having shut its backends (a loaded model, HTTP clients) down without an error
        if "Application shutdown complete." not in last_run or "Traceback" in last_run:
            problems.append(f"unclean shutdown of {' '.join(proc.command())}:\n{last_run[-4000:]}")
    assert not problems, "\n\n".join(problems)


def write_config(directory: Path, text: str, name: str = "overnight.toml") -> Path:
    path = directory / name
    path.write_text(text)
    return path


# -- batches through the SDK ---------------------------------------------------------------------


def run_batch(
    client: anthropic.Anthropic, requests: Sequence[dict[str, Any]], *, timeout: float = 60.0
) -> tuple[Any, dict[str, Any]]:
    """Create a batch, wait for it to end, and return (batch, results by custom_id), checking the counts."""
    batch = client.messages.batches.create(requests=list(requests))  # type: ignore[arg-type]
    assert batch.processing_status == "in_progress"
    ended = wait_for_end(client, batch.id, total=len(requests), timeout=timeout, interval=0.1)
    results = sdk_results(client, batch.id)
    assert set(results) == {r["custom_id"] for r in requests}
    counts = ended.request_counts
    assert counts_total(counts) == len(requests)
    by_type = {
        kind: sum(1 for line in results.values() if line.result.type == kind)
        for kind in ("succeeded", "errored", "canceled", "expired")
    }
    assert (counts.succeeded, counts.errored, counts.canceled, counts.expired, counts.processing) == (
        by_type["succeeded"],
        by_type["errored"],
        by_type["canceled"],
        by_type["expired"],
        0,
    ), (counts, by_type)
    return ended, results


def succeeded(results: dict[str, Any], custom_id: str) -> Any:
    """The Message of a succeeded result (failing with the error if it is not one)."""
    result = results[custom_id].result
    assert result.type == "succeeded", f"{custom_id}: {result}"
    return result.message


def errored(results: dict[str, Any], custom_id: str) -> tuple[str, str]:
    """(error type, message) of an errored result."""
    result = results[custom_id].result
    assert result.type == "errored", f"{custom_id}: {result}"
    assert result.error.type == "error"
    return result.error.error.type, result.error.error.message


def text_of(message: Any) -> str:
    """The text of a Message's text blocks, joined ('' for an empty content list)."""
    assert all(block.type == "text" for block in message.content), message.content
    return "".join(block.text for block in message.content)


def user(text: str) -> list[MessageParam]:
    return [{"role": "user", "content": text}]


# -- a programmable Anthropic upstream -----------------------------------------------------------


@dataclass
class Call:
    at: float  # time.monotonic() when the request arrived
    prompt: str
    body: Any
    headers: dict[str, str]
    in_flight: int  # calls being handled when this one arrived, itself included
    ended: float | None = None  # time.monotonic() when its reply was sent


def success(delay_seconds: float = 0.0) -> Reply:
    """The upstream's default success (see `ProgrammableUpstream`), sent after `delay_seconds`."""
    return Reply(200, None, delay_seconds=delay_seconds)


def anthropic_error(status: int, error_type: str, message: str, headers: dict[str, str] | None = None) -> Reply:
    """An upstream error reply in the Anthropic envelope."""
    return Reply(status, {"type": "error", "error": {"type": error_type, "message": message}}, headers or {})


def _last_user_text(body: Any) -> str:
    try:
        content = [m for m in body["messages"] if m["role"] == "user"][-1]["content"]
    except (KeyError, IndexError, TypeError):
        return ""
    if isinstance(content, str):
        return content
    return " ".join(block.get("text", "") for block in content if isinstance(block, dict))


class ProgrammableUpstream(ScriptedUpstream):
    """`POST /v1/messages` answering per prompt: that prompt's scripted replies in order, then a success.

    The success is `{"text": "upstream: PROMPT"}` as a complete Message, with the model name it was sent,
    `end_turn`, and usage counting words (input) and 2 (output); a scripted `success(delay)` sends it late.
    Every call is recorded with its arrival and reply times and how many calls were in flight.
    """

    def __init__(self) -> None:
        super().__init__()
        self.scripts: dict[str, list[Reply]] = {}
        self.calls: list[Call] = []
        self._in_flight = 0

    def script(self, prompt: str, *replies: Reply) -> str:
        with self._lock:
            self.scripts[prompt] = list(replies)
        return prompt

    def calls_for(self, prompt: str) -> list[Call]:
        with self._lock:
            return [call for call in self.calls if call.prompt == prompt]

    def reset(self) -> None:
        super().reset()
        with self._lock:
            self.scripts.clear()
            self.calls.clear()

    async def _handle(self, request: Request) -> Response:
        arrived = time.monotonic()
        with self._lock:
            self._in_flight += 1
            call = Call(arrived, "", None, dict(request.headers), self._in_flight)
        try:
            call.body = json.loads(await request.body() or b"null")
            call.prompt = _last_user_text(call.body)
            with self._lock:
                self.requests.append(Recorded(request.url.path, call.headers, call.body))
                self.calls.append(call)
                script = self.scripts.get(call.prompt)
                reply = script.pop(0) if script else success()
            if reply.delay_seconds:
                await asyncio.sleep(reply.delay_seconds)
            body = success_message(call.body, call.prompt) if reply.body is None and reply.raw is None else reply.body
            content = reply.raw if reply.raw is not None else json.dumps(body).encode()
            return Response(content, status_code=reply.status, headers=reply.headers, media_type="application/json")
        finally:
            with self._lock:
                self._in_flight -= 1
                call.ended = time.monotonic()


def success_message(body: Any, prompt: str) -> dict[str, Any]:
    return {
        "id": f"msg_upstream{threading.get_ident()}{time.monotonic_ns()}",
        "type": "message",
        "role": "assistant",
        "model": body.get("model", "?") if isinstance(body, dict) else "?",
        "content": [{"type": "text", "text": f"upstream: {prompt}", "citations": None}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {
            "input_tokens": max(1, len(prompt.split())),
            "output_tokens": 2,
            "cache_creation_input_tokens": None,
            "cache_read_input_tokens": None,
            "service_tier": "standard",
        },
    }


@pytest.fixture(scope="module")
def programmable_upstream() -> Iterator[ProgrammableUpstream]:
    upstream = ProgrammableUpstream()
    upstream.start()
    yield upstream
    upstream.stop()
