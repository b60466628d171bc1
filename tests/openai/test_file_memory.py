"""A ~200 MB input file (OpenAI's limit) is uploaded, downloaded, validated and enqueued without the server
ever holding it whole: the server's peak RSS (VmHWM, read from /proc) grows far less than the file."""

from __future__ import annotations

import hashlib
import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.openai.helpers import MODEL, make_client, wait_until
from tests.server import ServerProcess

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/PID/status"),
]

LINES = 50_000
LINE_BYTES = 4000  # 50,000 x 4,000: 200 MB
GROWTH_LIMIT_BYTES = 100 << 20  # half the file; chunks are 1 MiB, SQLite's page caches some MiB


def peak_rss(proc: ServerProcess) -> int:
    assert proc.process is not None
    for text in Path(f"/proc/{proc.process.pid}/status").read_text().splitlines():
        if text.startswith("VmHWM:"):
            return int(text.split()[1]) * 1024
    raise AssertionError("no VmHWM")


def big_file() -> bytes:
    lines = []
    for i in range(LINES):
        item = {
            "custom_id": f"r{i}",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {"model": MODEL, "max_tokens": 1, "messages": [{"role": "user", "content": ""}]},
        }
        pad = LINE_BYTES - len(json.dumps(item)) - 1
        item["body"]["messages"][0]["content"] = "x" * pad  # type: ignore[index]
        lines.append(json.dumps(item))
    return ("\n".join(lines) + "\n").encode()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    proc = ServerProcess(tmp_path / "data", ["--concurrency", "1", "--fake-latency-ms", "1000"]).start()
    yield proc
    proc.terminate_quietly()


def test_a_200_mb_file_never_sits_in_server_memory(server: ServerProcess) -> None:
    content = big_file()
    assert len(content) == LINES * LINE_BYTES
    with make_client(server, timeout=300.0) as client:
        # Warm up every path once with a small file, so that the baseline counts imports and pools.
        small = client.files.create(file=("small.jsonl", content[: 3 * LINE_BYTES]), purpose="batch")
        assert client.files.content(small.id).content == content[: 3 * LINE_BYTES]
        warm = client.batches.create(input_file_id=small.id, endpoint="/v1/chat/completions", completion_window="24h")
        wait_until(client, warm.id, ("in_progress", "completed"))
        client.batches.cancel(warm.id)
        baseline = peak_rss(server)

        started = time.monotonic()
        uploaded = client.files.create(file=("big.jsonl", content), purpose="batch")
        assert uploaded.bytes == len(content)
        digest = hashlib.sha256()
        with httpx.stream(
            "GET",
            f"{server.base_url}/v1/files/{uploaded.id}/content",
            headers={"authorization": "Bearer k"},
            timeout=300,
        ) as response:
            assert response.status_code == 200 and response.headers["content-length"] == str(len(content))
            for piece in response.iter_bytes():
                digest.update(piece)
        assert digest.hexdigest() == hashlib.sha256(content).hexdigest()
        after_files = peak_rss(server)

        batch = client.batches.create(
            input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
        running = wait_until(client, batch.id, ("in_progress", "failed"), deadline_s=300)
        assert running.status == "in_progress", running.errors
        assert running.request_counts is not None and running.request_counts.total == LINES
        client.batches.cancel(batch.id)
        after_validation = peak_rss(server)
        elapsed = time.monotonic() - started

    growth = after_validation - baseline
    print(
        f"server VmHWM: baseline {baseline >> 20} MiB, after upload+download {after_files >> 20} MiB, "
        f"after validation+enqueue {after_validation >> 20} MiB (file {len(content) >> 20} MiB, {elapsed:.0f} s)"
    )
    assert growth < GROWTH_LIMIT_BYTES, f"peak RSS grew {growth >> 20} MiB for a {len(content) >> 20} MiB file"
