"""`overnight batches ...` against a real overnight server (fake backend) on 127.0.0.1.

Commands run in-process through click's CliRunner (stdout and stderr kept apart, as scripts see them),
and once as a real subprocess. Each test gets its own API key, and so its own empty workspace: "nothing
was sent" is checked by listing that workspace through the SDK.
"""

from __future__ import annotations

import http.server
import itertools
import json
import re
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import pytest
from click.testing import CliRunner, Result

from overnight.cli import main
from tests.conftest import start_server
from tests.server import REPO_ROOT, ServerProcess, free_port

EXAMPLE = REPO_ROOT / "examples" / "questions.jsonl"
KEYS = [f"cli-key-{i}" for i in range(40)]
BATCH_ID = re.compile(r"^msgbatch_[0-9A-Za-z]+$")
_next_key = itertools.count()

Invoke = Callable[..., Result]


def _key_args() -> list[str]:
    args: list[str] = []
    for i, key in enumerate(KEYS):
        args += ["--api-key", f"{key}:cli-ws-{i}"]
    return args


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = start_server(tmp_path_factory.mktemp("cli"), _key_args())
    yield proc
    proc.terminate_quietly()


@pytest.fixture(scope="module")
def slow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """Slow enough (0.3 s a request, 2 at once) that a batch is seen in progress and can be canceled."""
    proc = start_server(
        tmp_path_factory.mktemp("cli-slow"), [*_key_args(), "--fake-latency-ms", "300", "--concurrency", "2"]
    )
    yield proc
    proc.terminate_quietly()


@pytest.fixture
def api_key() -> str:
    return KEYS[next(_next_key)]


def _invoke(
    proc: ServerProcess, api_key: str, *args: str, stdin: str | None = None, env: dict[str, str | None] | None = None
) -> Result:
    runner = CliRunner()
    # The user's own environment must not steer the test (a real ANTHROPIC_BASE_URL, say).
    base_env: dict[str, str | None] = {"ANTHROPIC_BASE_URL": None, "ANTHROPIC_API_KEY": None}
    return runner.invoke(
        main,
        ["batches", "--base-url", proc.base_url, "--api-key", api_key, *args],
        input=stdin,
        env={**base_env, **(env or {})},
        catch_exceptions=False,
    )


@pytest.fixture
def cli(server: ServerProcess, api_key: str) -> Invoke:
    return lambda *args, **kwargs: _invoke(server, api_key, *args, **kwargs)


@pytest.fixture
def slow_cli(slow_server: ServerProcess, api_key: str) -> Invoke:
    return lambda *args, **kwargs: _invoke(slow_server, api_key, *args, **kwargs)


@pytest.fixture
def sdk(server: ServerProcess, api_key: str) -> Iterator[anthropic.Anthropic]:
    client = anthropic.Anthropic(base_url=server.base_url, api_key=api_key, max_retries=0)
    yield client
    client.close()


def _request(custom_id: str, text: str = "hello there", **params: Any) -> dict[str, Any]:
    return {
        "custom_id": custom_id,
        "params": {
            "model": "claude-sonnet-4-5",
            "max_tokens": 32,
            "messages": [{"role": "user", "content": text}],
            **params,
        },
    }


def _write_jsonl(path: Path, requests: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(request) + "\n" for request in requests))
    return path


def _submitted_id(result: Result) -> str:
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines and BATCH_ID.match(lines[-1]), result.stdout
    return lines[-1]


# -- submit ------------------------------------------------------------------------------------------


def test_submit_prints_only_the_batch_id_on_stdout(cli: Invoke, sdk: anthropic.Anthropic) -> None:
    result = cli("submit", str(EXAMPLE))
    batch_id = _submitted_id(result)
    assert result.stdout == f"{batch_id}\n"  # nothing else: `id=$(overnight batches submit f)` just works
    assert f"submitted 4 requests as batch {batch_id}" in result.stderr
    batch = sdk.messages.batches.retrieve(batch_id)
    assert batch.request_counts.processing + batch.request_counts.succeeded == 4


def test_submit_wait_reports_progress_and_exits_0_when_all_succeed(cli: Invoke, sdk: anthropic.Anthropic) -> None:
    result = cli("submit", str(EXAMPLE), "--wait", "--poll-interval", "0.1")
    batch_id = _submitted_id(result)
    assert result.stdout == f"{batch_id}\n"
    assert result.stderr.endswith(f"{batch_id} ended: 4/4 done (succeeded 4, errored 0, canceled 0, expired 0)\n")
    results = {line.custom_id: line.result for line in sdk.messages.batches.results(batch_id)}
    assert set(results) == {"capital", "arithmetic", "haiku", "colors"}
    assert all(result.type == "succeeded" for result in results.values())


def test_submit_wait_exits_1_when_a_request_errors(cli: Invoke, tmp_path: Path) -> None:
    path = _write_jsonl(tmp_path / "mixed.jsonl", [_request("good"), _request("bad", bogus_option=1)])
    result = cli("submit", str(path), "--wait", "--poll-interval", "0.1")
    assert result.exit_code == 1, result.output
    batch_id = result.stdout.splitlines()[-1]
    assert BATCH_ID.match(batch_id)
    assert "succeeded 1, errored 1" in result.stderr
    assert f"overnight batches results {batch_id}" in result.stderr


def test_submit_reads_stdin(cli: Invoke, sdk: anthropic.Anthropic) -> None:
    result = cli("submit", "-", stdin=EXAMPLE.read_text())
    batch_id = _submitted_id(result)
    assert sdk.messages.batches.retrieve(batch_id).id == batch_id


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (
            '{"custom_id": "a", "params": {"model": "m", "max_tokens": 1, "messages": []}}\n{not json\n',
            "line 2: not valid JSON",
        ),
        ('{"custom_id": "a"}\n', "line 1: missing field 'params'"),
        ('{"params": {"model": "m", "max_tokens": 1, "messages": []}}\n', "line 1: missing field 'custom_id'"),
        ('{"custom_id": "a", "params": {"model": "m", "messages": []}}\n', "line 1: missing field 'params.max_tokens'"),
        (
            '{"custom_id": "has space", "params": {"model": "m", "max_tokens": 1, "messages": []}}\n',
            "line 1: custom_id must be 1 to 64 letters",
        ),
        ("[1, 2]\n", "line 1: expected a JSON object, got list"),
        ("\n\n", "the file holds no requests"),
    ],
)
def test_a_bad_line_is_named_and_nothing_is_sent(
    cli: Invoke, sdk: anthropic.Anthropic, tmp_path: Path, content: str, expected: str
) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(content)
    result = cli("submit", str(path))
    assert result.exit_code == 2, result.output
    assert expected in result.stderr
    assert "nothing was sent" in result.stderr
    assert result.stdout == ""
    assert list(sdk.messages.batches.list()) == []


def test_a_duplicate_custom_id_names_both_lines(cli: Invoke, sdk: anthropic.Anthropic, tmp_path: Path) -> None:
    path = _write_jsonl(tmp_path / "dup.jsonl", [_request("a"), _request("b"), _request("a")])
    result = cli("submit", str(path))
    assert result.exit_code == 2
    assert "line 3: duplicate custom_id 'a' (first used on line 1)" in result.stderr
    assert list(sdk.messages.batches.list()) == []


def test_more_than_100000_requests_is_refused_locally(cli: Invoke, sdk: anthropic.Anthropic, tmp_path: Path) -> None:
    line = '{"custom_id": "r%d", "params": {"model": "m", "max_tokens": 1, "messages": []}}\n'
    path = tmp_path / "big.jsonl"
    path.write_text("".join(line % i for i in range(100_001)))
    result = cli("submit", str(path))
    assert result.exit_code == 2
    assert "line 100001: more than 100,000 requests" in result.stderr
    assert list(sdk.messages.batches.list()) == []


# -- wait, get, list, results ------------------------------------------------------------------------


def test_wait_prints_plain_progress_lines_when_stderr_is_not_a_terminal(slow_cli: Invoke, tmp_path: Path) -> None:
    path = _write_jsonl(tmp_path / "six.jsonl", [_request(f"r{i}") for i in range(6)])
    batch_id = _submitted_id(slow_cli("submit", str(path)))
    result = slow_cli("wait", batch_id, "--poll-interval", "0.1", "--report-interval", "0.2")
    assert result.exit_code == 0, result.output
    progress = [line for line in result.stderr.splitlines() if line.startswith(f"{batch_id} in_progress: ")]
    assert progress, result.stderr  # 6 requests at 0.3 s, 2 at a time: about a second in progress
    assert all(re.search(r": \d/6 done \(succeeded \d, errored 0, canceled 0, expired 0\)", line) for line in progress)
    assert f"{batch_id} ended: 6/6 done" in result.stderr
    assert result.stdout == ""


def test_wait_draws_a_progress_bar_on_a_terminal(slow_cli: Invoke, tmp_path: Path) -> None:
    path = _write_jsonl(tmp_path / "four.jsonl", [_request(f"r{i}") for i in range(4)])
    batch_id = _submitted_id(slow_cli("submit", str(path)))
    # Rich treats stderr as a terminal under FORCE_COLOR, as it does a real one.
    result = slow_cli("wait", batch_id, "--poll-interval", "0.1", env={"FORCE_COLOR": "1", "TERM": "xterm"})
    assert result.exit_code == 0, result.output
    plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", result.stderr)
    assert "━" in plain  # the bar itself
    assert "4/4" in plain
    assert "4 ok" in plain and "0 errored" in plain
    assert f"{batch_id} ended: 4/4 done (succeeded 4" in plain


def test_get_shows_counts_and_token_usage(cli: Invoke, sdk: anthropic.Anthropic) -> None:
    batch_id = _submitted_id(cli("submit", str(EXAMPLE), "--wait", "--poll-interval", "0.1"))
    usage = sdk.get(f"/v1/overnight/batches/{batch_id}/usage", cast_to=object)
    assert isinstance(usage, dict) and usage["input_tokens"] > 0

    result = cli("get", batch_id)
    assert result.exit_code == 0, result.output
    fields = dict(re.split(r":\s+", line, maxsplit=1) for line in result.stdout.splitlines())
    assert fields["id"] == batch_id
    assert fields["status"] == "ended"
    assert fields["requests"] == "4 (4 done, 0 processing)"
    assert fields["input tokens"] == f"{usage['input_tokens']:,}"
    assert fields["output tokens"] == f"{usage['output_tokens']:,}"
    assert fields["results"].endswith(f"/v1/messages/batches/{batch_id}/results")

    as_json = json.loads(cli("get", batch_id, "--json").stdout)
    assert as_json["id"] == batch_id
    assert as_json["request_counts"]["succeeded"] == 4
    assert as_json["usage"] == usage


def test_get_says_na_against_a_server_without_usage(
    server: ServerProcess, api_key: str, cli: Invoke, tmp_path: Path
) -> None:
    batch_id = _submitted_id(cli("submit", str(EXAMPLE)))
    with _without_usage_endpoint(server, tmp_path) as base_url:
        runner = CliRunner()
        result = runner.invoke(
            main,
            ["batches", "--base-url", base_url, "--api-key", api_key, "get", batch_id],
            env={"ANTHROPIC_BASE_URL": None, "ANTHROPIC_API_KEY": None},
        )
        assert result.exit_code == 0, result.output
        assert "usage:" in result.stdout and "n/a" in result.stdout
        as_json = json.loads(
            runner.invoke(
                main, ["batches", "--base-url", base_url, "--api-key", api_key, "get", batch_id, "--json"]
            ).stdout
        )
        assert as_json["usage"] is None


def test_list_shows_the_workspace_batches_newest_first(cli: Invoke) -> None:
    first = _submitted_id(cli("submit", str(EXAMPLE)))
    second = _submitted_id(cli("submit", str(EXAMPLE)))
    table = cli("list")
    assert table.exit_code == 0
    ids = [line.split()[0] for line in table.stdout.splitlines()[1:]]
    assert ids == [second, first]
    as_json = [json.loads(line) for line in cli("list", "--json").stdout.splitlines()]
    assert [batch["id"] for batch in as_json] == [second, first]
    assert all(batch["type"] == "message_batch" for batch in as_json)
    assert [json.loads(line)["id"] for line in cli("list", "--json", "--limit", "1").stdout.splitlines()] == [second]


def test_list_of_an_empty_workspace(cli: Invoke) -> None:
    result = cli("list")
    assert result.exit_code == 0
    assert result.stdout == ""
    assert "no batches" in result.stderr


def test_results_to_stdout_and_to_a_file_are_the_servers_jsonl(
    cli: Invoke, server: ServerProcess, api_key: str, tmp_path: Path
) -> None:
    batch_id = _submitted_id(cli("submit", str(EXAMPLE), "--wait", "--poll-interval", "0.1"))
    result = cli("results", batch_id)
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert {line["custom_id"] for line in lines} == {"capital", "arithmetic", "haiku", "colors"}
    by_id = {line["custom_id"]: line["result"] for line in lines}
    # The fake backend echoes the question: the text shows the right line went to the right id.
    assert by_id["capital"]["message"]["content"][0]["text"] == "What is the capital of France? Answer in one sentence."

    output = tmp_path / "out.jsonl"
    written = cli("results", batch_id, "-o", str(output))
    assert written.exit_code == 0
    assert written.stdout == ""
    assert f"wrote 4 results to {output}" in written.stderr
    served = httpx.get(f"{server.base_url}/v1/messages/batches/{batch_id}/results", headers={"x-api-key": api_key})
    assert output.read_bytes() == served.content == result.stdout_bytes


def test_results_of_an_unfinished_batch_is_a_clear_error(slow_cli: Invoke, tmp_path: Path) -> None:
    path = _write_jsonl(tmp_path / "ten.jsonl", [_request(f"r{i}") for i in range(10)])
    batch_id = _submitted_id(slow_cli("submit", str(path)))
    result = slow_cli("results", batch_id, "-o", str(tmp_path / "never.jsonl"))
    assert result.exit_code == 3
    assert f"{batch_id} has not ended yet (in_progress)" in result.stderr
    assert not (tmp_path / "never.jsonl").exists()
    slow_cli("cancel", batch_id)


# -- cancel, delete, errors --------------------------------------------------------------------------


def test_cancel_then_wait_exits_1_and_delete_removes_the_batch(slow_cli: Invoke, tmp_path: Path) -> None:
    path = _write_jsonl(tmp_path / "twenty.jsonl", [_request(f"r{i}") for i in range(20)])
    batch_id = _submitted_id(slow_cli("submit", str(path)))

    canceled = slow_cli("cancel", batch_id)
    assert canceled.exit_code == 0, canceled.output
    # canceling while requests are in flight; the server may also end it at once (in-flight calls cut short)
    assert canceled.stdout in (f"{batch_id} canceling\n", f"{batch_id} ended\n")

    waited = slow_cli("wait", batch_id, "--poll-interval", "0.1")
    assert waited.exit_code == 1
    counts = json.loads(slow_cli("get", batch_id, "--json").stdout)["request_counts"]
    assert counts["canceled"] > 0
    assert counts["canceled"] + counts["succeeded"] == 20

    deleted = slow_cli("delete", batch_id)
    assert deleted.exit_code == 0
    assert deleted.stdout == f"{batch_id} deleted\n"
    gone = slow_cli("get", batch_id)
    assert gone.exit_code == 3
    assert "the server answered 404: not_found_error" in gone.stderr


def test_cancel_and_delete_as_json(slow_cli: Invoke, tmp_path: Path) -> None:
    path = _write_jsonl(tmp_path / "ten.jsonl", [_request(f"r{i}") for i in range(10)])
    batch_id = _submitted_id(slow_cli("submit", str(path)))
    canceled = json.loads(slow_cli("cancel", batch_id, "--json").stdout)
    assert (canceled["id"], canceled["type"]) == (batch_id, "message_batch")
    assert canceled["processing_status"] in ("canceling", "ended")
    assert canceled["cancel_initiated_at"] is not None
    slow_cli("wait", batch_id, "--poll-interval", "0.1")
    deleted = json.loads(slow_cli("delete", batch_id, "--json").stdout)
    assert deleted == {"id": batch_id, "type": "message_batch_deleted"}


def test_deleting_a_batch_in_progress_is_the_servers_error(slow_cli: Invoke, tmp_path: Path) -> None:
    path = _write_jsonl(tmp_path / "ten.jsonl", [_request(f"r{i}") for i in range(10)])
    batch_id = _submitted_id(slow_cli("submit", str(path)))
    result = slow_cli("delete", batch_id)
    assert result.exit_code == 3
    assert "the server answered 400: invalid_request_error" in result.stderr
    slow_cli("cancel", batch_id)


def test_an_unknown_key_is_the_servers_401(server: ServerProcess) -> None:
    result = _invoke(server, "not-a-key", "list")
    assert result.exit_code == 3
    assert "the server answered 401: authentication_error" in result.stderr


def test_an_unreachable_server_exits_4() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    result = CliRunner().invoke(
        main, ["batches", "--base-url", url, "--api-key", "k", "get", "msgbatch_x"], env={"ANTHROPIC_BASE_URL": None}
    )
    assert result.exit_code == 4
    assert f"cannot reach {url}" in result.stderr


def test_base_url_and_key_come_from_the_environment(server: ServerProcess, api_key: str) -> None:
    result = CliRunner().invoke(
        main,
        ["batches", "submit", str(EXAMPLE)],
        env={"ANTHROPIC_BASE_URL": server.base_url, "ANTHROPIC_API_KEY": api_key},
    )
    assert result.exit_code == 0, result.output
    assert BATCH_ID.match(result.stdout.strip())


def test_as_a_real_process_the_id_is_the_last_stdout_line(server: ServerProcess, api_key: str) -> None:
    env = {
        "PATH": "/usr/bin:/bin",
        "ANTHROPIC_BASE_URL": server.base_url,
        "ANTHROPIC_API_KEY": api_key,
        "PYTHONPATH": str(REPO_ROOT),
    }
    done = subprocess.run(
        [sys.executable, "-m", "overnight", "batches", "submit", str(EXAMPLE), "--wait", "--poll-interval", "0.1"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert BATCH_ID.match(done.stdout.splitlines()[-1])
    assert "ended: 4/4 done (succeeded 4" in done.stderr


# -- a stand-in for a server without overnight's own endpoints ---------------------------------------


class _without_usage_endpoint:
    """A real HTTP proxy on 127.0.0.1 in front of `server` that answers 404 (the API's envelope) under
    /v1/overnight/, as the hosted API does for paths it does not have. The real API cannot be reached
    from here; this is the one part of it the test needs."""

    def __init__(self, server: ServerProcess, tmp_path: Path) -> None:
        self.server = server

    def __enter__(self) -> str:
        upstream = self.server.base_url

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path.startswith("/v1/overnight/"):
                    body = json.dumps(
                        {"type": "error", "error": {"type": "not_found_error", "message": "Not found"}}
                    ).encode()
                    self._send(404, body)
                    return
                headers = {k: v for k, v in self.headers.items() if k.lower() not in {"host", "accept-encoding"}}
                answer = httpx.get(upstream + self.path, headers=headers)
                self._send(answer.status_code, answer.content)

            def _send(self, status: int, body: bytes) -> None:
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.send_header("request-id", "req_proxy")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                return None

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def __exit__(self, *exc_info: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


def test_serve_does_not_import_the_client() -> None:
    # The SDK takes seconds to import; `overnight serve` (and every test server) must not pay for it.
    code = "import sys, overnight.cli; assert 'anthropic' not in sys.modules and 'rich' not in sys.modules"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO_ROOT, timeout=60)
    assert done.returncode == 0, done.stderr
