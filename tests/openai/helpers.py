"""Building OpenAI batch input files and waiting for batches, for the OpenAI-format tests."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any

import openai
from openai.types import Batch

from tests.server import ServerProcess

MODEL = "gpt-fake-echo"
TERMINAL = ("completed", "failed", "expired", "cancelled")


def make_client(proc: ServerProcess, api_key: str = "test-key", **kwargs: Any) -> openai.OpenAI:
    """The official SDK, unmodified, on the server's `/v1`, strict validation, no retries."""
    return openai.OpenAI(
        base_url=proc.base_url + "/v1",
        api_key=api_key,
        max_retries=kwargs.pop("max_retries", 0),
        timeout=kwargs.pop("timeout", 30.0),
        _strict_response_validation=True,
        **kwargs,
    )


def line(custom_id: str, text: str, **body: Any) -> dict[str, Any]:
    return {
        "custom_id": custom_id,
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {"model": MODEL, "messages": [{"role": "user", "content": text}], **body},
    }


def jsonl(lines: Sequence[dict[str, Any] | str]) -> bytes:
    return "".join((item if isinstance(item, str) else json.dumps(item)) + "\n" for item in lines).encode()


def upload(client: openai.OpenAI, lines: Sequence[dict[str, Any] | str], name: str = "input.jsonl") -> str:
    return client.files.create(file=(name, jsonl(lines)), purpose="batch").id


def create(client: openai.OpenAI, lines: Sequence[dict[str, Any] | str], **kwargs: Any) -> Batch:
    return client.batches.create(
        input_file_id=upload(client, lines), endpoint="/v1/chat/completions", completion_window="24h", **kwargs
    )


def wait_until(
    client: openai.OpenAI, batch_id: str, statuses: tuple[str, ...] = TERMINAL, deadline_s: float = 60.0
) -> Batch:
    deadline = time.monotonic() + deadline_s
    while True:
        batch = client.batches.retrieve(batch_id)
        if batch.status in statuses:
            return batch
        assert time.monotonic() < deadline, f"batch {batch_id} still {batch.status}"
        time.sleep(0.1)


def read_lines(client: openai.OpenAI, file_id: str | None) -> dict[str, dict[str, Any]]:
    """An output or error file's lines by custom_id (each custom_id at most once)."""
    if file_id is None:
        return {}
    by_id: dict[str, dict[str, Any]] = {}
    content = client.files.content(file_id).content
    assert client.files.retrieve(file_id).bytes == len(content)  # the size it was made with is its size
    for text in content.decode().splitlines():
        item = json.loads(text)
        assert item["custom_id"] not in by_id, f"two lines for {item['custom_id']}"
        assert set(item) == {"id", "custom_id", "response", "error"}, item
        assert item["id"].startswith("batch_req_")
        by_id[item["custom_id"]] = item
    return by_id
