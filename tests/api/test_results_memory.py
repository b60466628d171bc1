"""Long results download in a few chunks' worth of memory, not the batch's: the server's peak RSS (VmHWM,
read from /proc, started afresh before the download) grows by a small part of what it sends, for the
Anthropic results and for the OpenAI output file alike.

The fake backend echoes each request's message, so 60 KB messages make 60 KB result lines. Reads of
5,000 ids a chunk whatever the lines' size, a few chunks at once, held the whole batch here (the growth
was twice what was sent); now a chunk is about 4 MiB. Each download
runs twice and the second is measured, so that the first has grown what stays for good (SQLite's page
caches on the reader connections, the allocator's arenas).

And once no batch is left to run, what the work left resident is given back.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.api.helpers import MODEL
from tests.conftest import start_server
from tests.openai import helpers as openai_helpers
from tests.server import ServerProcess

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/PID/status"),
]

COUNT = 1500
TEXT_BYTES = 60_000  # 1,500 x 60 KB: 90 MB of results
HEADERS = {"x-api-key": "k", "anthropic-version": "2023-06-01", "authorization": "Bearer k"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = start_server(tmp_path_factory.mktemp("results-memory"))
    yield proc
    proc.terminate_quietly()


def _status_kib(proc: ServerProcess, field: str) -> int:
    assert proc.process is not None
    for text in Path(f"/proc/{proc.process.pid}/status").read_text().splitlines():
        if text.startswith(field + ":"):
            return int(text.split()[1])
    raise AssertionError(f"no {field}")


def _peak_growth_while(proc: ServerProcess, download: httpx.Client, url: str) -> tuple[int, bytes]:
    """Download `url` once to warm up, then again with VmHWM started afresh: (peak growth, content)."""
    assert proc.process is not None
    first = _download(download, url)
    Path(f"/proc/{proc.process.pid}/clear_refs").write_text("5")  # VmHWM := VmRSS
    before = _status_kib(proc, "VmRSS")
    second = _download(download, url)
    assert second == first
    return (_status_kib(proc, "VmHWM") - before) * 1024, second


def _download(http: httpx.Client, url: str) -> bytes:
    with http.stream("GET", url) as response:
        assert response.status_code == 200, response.read()[:300]
        return b"".join(response.iter_bytes())


def _text(i: int) -> str:
    return f"{i} " + "x" * TEXT_BYTES


def _run_long_batch(http: httpx.Client, prefix: str) -> str:
    """Create a batch of COUNT long requests (custom_ids `prefix0`, `prefix1`, ...) and wait until it has
    ended, all of it succeeded; its id."""
    requests = [
        {
            "custom_id": f"{prefix}{i}",
            "params": {"model": MODEL, "max_tokens": 5, "messages": [{"role": "user", "content": _text(i)}]},
        }
        for i in range(COUNT)
    ]
    created = http.post("/v1/messages/batches", content=json.dumps({"requests": requests}))
    assert created.status_code == 200, created.text[:300]
    batch_id: str = created.json()["id"]
    deadline = time.monotonic() + 120
    while (batch := http.get(f"/v1/messages/batches/{batch_id}").json())["processing_status"] != "ended":
        assert time.monotonic() < deadline, batch
        time.sleep(0.1)
    assert batch["request_counts"]["succeeded"] == COUNT
    return batch_id


def test_long_anthropic_results_stream_in_bounded_memory(server: ServerProcess) -> None:
    with httpx.Client(base_url=server.base_url, headers=HEADERS, timeout=120) as http:
        batch_id = _run_long_batch(http, "r")
        growth, content = _peak_growth_while(server, http, f"/v1/messages/batches/{batch_id}/results")
    print(f"results: {len(content) >> 20} MiB sent, server VmHWM grew {growth >> 20} MiB")
    lines = content.splitlines()
    assert [json.loads(line)["custom_id"] for line in lines] == [f"r{i}" for i in range(COUNT)]
    assert json.loads(lines[7])["result"]["message"]["content"][0]["text"] == _text(7)
    assert growth < len(content) // 2, f"peak RSS grew {growth >> 20} MiB sending {len(content) >> 20} MiB"


def test_a_long_openai_output_file_streams_in_bounded_memory(server: ServerProcess) -> None:
    content = openai_helpers.jsonl([openai_helpers.line(f"r{i}", _text(i)) for i in range(COUNT)])
    with openai_helpers.make_client(server, timeout=120.0) as client:
        uploaded = client.files.create(file=("long.jsonl", content), purpose="batch")
        batch = client.batches.create(
            input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
        done = openai_helpers.wait_until(client, batch.id, ("completed", "failed"), deadline_s=120)
        assert done.status == "completed" and done.output_file_id is not None, done.errors
    with httpx.Client(base_url=server.base_url, headers=HEADERS, timeout=120) as http:
        growth, output = _peak_growth_while(server, http, f"/v1/files/{done.output_file_id}/content")
    print(f"output file: {len(output) >> 20} MiB sent, server VmHWM grew {growth >> 20} MiB")
    lines = output.splitlines()
    assert sorted(json.loads(line)["custom_id"] for line in lines) == sorted(f"r{i}" for i in range(COUNT))
    assert growth < len(output) // 2, f"peak RSS grew {growth >> 20} MiB sending {len(output) >> 20} MiB"


def test_memory_is_given_back_once_no_batch_is_left_to_run(tmp_path: Path) -> None:
    """Once no batch is left to run, the sweeper gives back what the work left resident (SQLite's caches,
    free heap pages). Before, the server stayed at its peak for good (here 462 MiB after this test's
    batch and download, 75 fresh); now it falls to less than halfway between (measured 125-149 MiB)."""
    proc = start_server(tmp_path / "server")
    try:
        fresh = _status_kib(proc, "VmRSS")
        with httpx.Client(base_url=proc.base_url, headers=HEADERS, timeout=120) as http:
            batch_id = _run_long_batch(http, "g")
            assert len(_download(http, f"/v1/messages/batches/{batch_id}/results").splitlines()) == COUNT
        peak = _status_kib(proc, "VmHWM")
        assert peak - fresh > 100 << 10, "the work should have grown the server"
        readings = [_status_kib(proc, "VmRSS")]
        deadline = time.monotonic() + 15  # the sweeper looks every second
        while readings[-1] > fresh + (peak - fresh) // 2 and time.monotonic() < deadline:
            time.sleep(0.25)
            readings.append(_status_kib(proc, "VmRSS"))
        print(f"resident: {fresh >> 10} MiB fresh, peak {peak >> 10}, then {[kib >> 10 for kib in readings]}")
        assert readings[-1] <= fresh + (peak - fresh) // 2, f"still {readings[-1] >> 10} MiB resident"
    finally:
        proc.terminate_quietly()
