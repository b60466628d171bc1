"""OpenAI-format batches on real backends: the local llama.cpp model (through the translation) and
llama-cpp-python's own OpenAI-compatible server (the chat-completions body sent natively), driven by the
official `openai` SDK with strict validation."""

from __future__ import annotations

import json

import pytest
from openai.types.chat import ChatCompletion

from tests.backends.conftest import LlamaServer
from tests.e2e.conftest import StartOvernight
from tests.openai.helpers import MODEL, create, line, make_client, read_lines, wait_until
from tests.server import ServerProcess

pytestmark = pytest.mark.local_model

_OUR_ID_LENGTH = len("chatcmpl-") + 24  # ours: chatcmpl- and 24 base62 characters


def _run(proc: ServerProcess) -> dict[str, ChatCompletion]:
    with make_client(proc, timeout=120.0) as client:
        batch = create(
            client,
            [
                line("sea", "Write a sentence about the sea.", max_tokens=8, temperature=0.0),
                {
                    **line("system", "Tell me about the moon.", max_completion_tokens=8, temperature=0.0),
                    "body": {
                        "model": MODEL,
                        "max_completion_tokens": 8,
                        "temperature": 0.0,
                        "messages": [
                            {"role": "system", "content": "You are an astronomer."},
                            {"role": "user", "content": "Tell me about the moon."},
                        ],
                    },
                },
            ],
        )
        done = wait_until(client, batch.id, deadline_s=180)
        assert done.status == "completed", done
        assert done.request_counts is not None and done.request_counts.completed == 2
        output = read_lines(client, done.output_file_id)
        return {key: ChatCompletion.model_validate(item["response"]["body"]) for key, item in output.items()}


def _check(completions: dict[str, ChatCompletion]) -> None:
    assert set(completions) == {"sea", "system"}
    for completion in completions.values():
        choice = completion.choices[0]
        assert choice.message.role == "assistant" and (choice.message.content or "").strip()
        assert choice.finish_reason in ("stop", "length")
        assert completion.usage is not None and 0 < completion.usage.completion_tokens <= 8
        assert completion.usage.total_tokens == completion.usage.prompt_tokens + completion.usage.completion_tokens


def test_openai_batch_on_the_local_model(start_overnight: StartOvernight, local_model_path: object) -> None:
    proc = start_overnight("--model-path", str(local_model_path), backend="local")
    completions = _run(proc)
    _check(completions)
    assert all(len(c.id) == _OUR_ID_LENGTH for c in completions.values())  # rendered by overnight


def test_openai_batch_sent_natively_to_an_openai_compatible_upstream(
    start_overnight: StartOvernight, llama_server: LlamaServer
) -> None:
    proc = start_overnight(
        "--upstream-url", llama_server.base_url, "--upstream-api-key", llama_server.api_key, backend="openai"
    )
    before = len(llama_server.calls())
    completions = _run(proc)
    _check(completions)
    assert len(llama_server.calls()) - before == 2
    # The upstream's own completion (its id, not one of ours), under the client's model name.
    assert all(len(c.id) != _OUR_ID_LENGTH and c.model == MODEL for c in completions.values())
    with make_client(proc, timeout=120.0) as client:
        sync = client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "Say hi."}], max_tokens=4, temperature=0.0
        )
        assert sync.choices[0].message.content and len(sync.id) != _OUR_ID_LENGTH
        assert json.loads(sync.model_dump_json())["object"] == "chat.completion"
