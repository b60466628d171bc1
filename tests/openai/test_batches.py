"""The OpenAI Batches API and chat completions through the official `openai` SDK (strict validation),
against a real server with the fake backend (which answers with the last user message)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import openai
import pytest
from openai.types.chat import ChatCompletion

from tests.openai.helpers import MODEL, create, line, make_client, read_lines, upload, wait_until
from tests.server import ServerProcess

KEY, OTHER_KEY = "test-key", "other-key"
MAX_LINES = 5


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = ServerProcess(
        tmp_path_factory.mktemp("batches"),
        ["--api-key", KEY, "--api-key", f"{OTHER_KEY}:elsewhere", "--openai-max-file-lines", str(MAX_LINES)],
    ).start()
    yield proc
    proc.terminate_quietly()


@pytest.fixture
def client(server: ServerProcess) -> Iterator[openai.OpenAI]:
    with make_client(server, KEY) as sdk:
        yield sdk


def test_batch_completes_with_output_and_error_files(client: openai.OpenAI) -> None:
    good = [line(f"req-{i}", f"answer number {i}") for i in range(4)]
    # Valid in the file, refused when run (the backends take temperature up to 1): a 400 in the error file.
    bad = line("too-hot", "x", temperature=1.5)
    created = create(client, [*good, bad], metadata={"purpose": "test"})
    assert created.status == "validating"
    assert created.expires_at == created.created_at + 86_400

    batch = wait_until(client, created.id)
    assert batch.status == "completed"
    assert batch.request_counts is not None
    assert (batch.request_counts.completed, batch.request_counts.failed) == (4, 1)
    assert batch.metadata == {"purpose": "test"} and batch.model == MODEL
    assert batch.completed_at is not None and batch.finalizing_at is not None
    assert batch.usage is not None and batch.usage.output_tokens == 3 * 4  # three words answered, four times
    assert batch.usage.total_tokens == batch.usage.input_tokens + batch.usage.output_tokens
    assert batch.in_progress_at is not None and batch.created_at <= batch.in_progress_at <= batch.completed_at

    output = read_lines(client, batch.output_file_id)
    assert set(output) == {f"req-{i}" for i in range(4)}
    for i in range(4):
        item = output[f"req-{i}"]
        assert item["error"] is None and item["response"]["status_code"] == 200
        completion = ChatCompletion.model_validate(item["response"]["body"], strict=False)
        assert completion.choices[0].message.content == f"answer number {i}"
        assert completion.choices[0].finish_reason == "stop"
        assert completion.usage is not None and completion.usage.total_tokens > 0

    errors = read_lines(client, batch.error_file_id)
    assert set(errors) == {"too-hot"}
    response = errors["too-hot"]["response"]
    assert errors["too-hot"]["error"] is None and response["status_code"] == 400
    assert "temperature" in response["body"]["error"]["message"]

    output_file = client.files.retrieve(batch.output_file_id or "")
    assert output_file.purpose == "batch_output"


def test_all_succeeded_has_no_error_file(client: openai.OpenAI) -> None:
    batch = wait_until(client, create(client, [line("only", "just one")]).id)
    assert batch.status == "completed" and batch.error_file_id is None
    assert read_lines(client, batch.output_file_id)["only"]["response"]["body"]["choices"][0]["message"] == {
        "role": "assistant",
        "content": "just one",
        "refusal": None,
    }


def _raw_line(**changes: Any) -> dict[str, Any]:
    item = line("x", "hi")
    item.update(changes)
    return item


@pytest.mark.parametrize(
    ("lines", "code", "line_number", "param"),
    [
        ([line("a", "ok"), "{not json"], "invalid_json_line", 2, None),
        ([line("a", "ok"), line("a", "again")], "duplicate_custom_id", 2, "custom_id"),
        ([{**line("a", "ok"), "url": "/v1/embeddings"}], "invalid_url", 1, "url"),
        ([line(f"r{i}", "ok") for i in range(MAX_LINES + 1)], "too_many_tasks", None, None),
        (
            [{k: v for k, v in line("a", "ok").items() if k != "custom_id"}],
            "missing_required_parameter",
            1,
            "custom_id",
        ),
        ([line("a", "ok", stream=True)], "streaming_unsupported", 1, "body.stream"),
        (
            [line("a", "ok"), {**line("b", "ok"), "body": {"model": "other", "messages": []}}],
            "invalid_request",
            2,
            "body.messages",
        ),
        (
            [
                line("a", "ok"),
                {**line("b", "ok"), "body": {"model": "other", "messages": [{"role": "user", "content": "x"}]}},
            ],
            "model_mismatch",
            2,
            "body.model",
        ),
        ([{**line("a", "ok"), "method": "GET"}], "invalid_request", 1, "method"),
    ],
)
def test_invalid_input_file_fails_the_batch(
    client: openai.OpenAI, lines: list[Any], code: str, line_number: int | None, param: str | None
) -> None:
    batch = wait_until(client, create(client, lines).id)
    assert batch.status == "failed"
    assert batch.failed_at is not None and batch.output_file_id is None
    assert batch.request_counts is not None and batch.request_counts.total == 0
    assert batch.errors is not None and batch.errors.data
    first = batch.errors.data[0]
    assert (first.code, first.line, first.param) == (code, line_number, param)
    assert client.batches.retrieve(batch.id).status == "failed"


def test_every_bad_line_is_reported(client: openai.OpenAI) -> None:
    batch = wait_until(client, create(client, ["nope", line("a", "ok"), "{", {**line("b", "ok"), "url": "/v1/x"}]).id)
    assert batch.errors is not None and batch.errors.data is not None
    assert [(e.code, e.line) for e in batch.errors.data] == [
        ("invalid_json_line", 1),
        ("invalid_json_line", 3),
        ("invalid_url", 4),
    ]


def test_unknown_input_file_fails_the_batch(client: openai.OpenAI) -> None:
    batch = client.batches.create(
        input_file_id="file-missing", endpoint="/v1/chat/completions", completion_window="24h"
    )
    assert batch.status == "failed" and batch.errors is not None and batch.errors.data
    assert batch.errors.data[0].param == "file_id"


def test_create_refusals(client: openai.OpenAI) -> None:
    file_id = upload(client, [line("a", "ok")])
    with pytest.raises(openai.BadRequestError) as caught:
        client.batches.create(input_file_id=file_id, endpoint="/v1/embeddings", completion_window="24h")
    assert (caught.value.param, caught.value.code) == ("endpoint", "invalid_value")
    with pytest.raises(openai.BadRequestError) as caught:
        window: Any = "48h"
        client.batches.create(input_file_id=file_id, endpoint="/v1/chat/completions", completion_window=window)
    assert caught.value.param == "completion_window"
    with pytest.raises(openai.BadRequestError) as caught:
        not_strings: Any = {"n": 1}
        client.batches.create(
            input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h", metadata=not_strings
        )
    assert (caught.value.param, caught.value.code) == ("metadata.n", "invalid_type")
    # metadata=None is sent as JSON null, and accepted.
    accepted = client.batches.create(
        input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h", metadata=None
    )
    assert accepted.metadata is None


def test_unknown_batch_is_404_and_ended_batch_cannot_be_cancelled(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError):
        client.batches.retrieve("batch_unknown")
    with pytest.raises(openai.NotFoundError):
        client.batches.cancel("batch_unknown")
    done = wait_until(client, create(client, [line("a", "ok")]).id)
    with pytest.raises(openai.ConflictError) as caught:
        client.batches.cancel(done.id)
    assert caught.value.response.headers["x-should-retry"] == "false"


def test_list_pages_newest_first_and_each_api_lists_its_own(server: ServerProcess, client: openai.OpenAI) -> None:
    ids = [create(client, [line("a", f"batch {i}")]).id for i in range(3)]
    first = client.batches.list(limit=2)
    assert [b.id for b in first.data] == ids[::-1][:2] and first.has_more is True
    assert [b.id for b in client.batches.list(limit=2)][:3] == ids[::-1]  # the SDK follows `after`
    with pytest.raises(openai.BadRequestError):
        client.batches.list(after="batch_unknown")

    with anthropic.Anthropic(
        base_url=server.base_url, api_key=KEY, max_retries=0, _strict_response_validation=True
    ) as claude:
        message_batch = claude.messages.batches.create(
            requests=[
                {
                    "custom_id": "a",
                    "params": {"model": MODEL, "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]},
                }
            ]
        )
        listed = [b.id for b in claude.messages.batches.list(limit=100)]
        assert message_batch.id in listed and not set(ids) & set(listed)
        with pytest.raises(anthropic.NotFoundError):
            claude.messages.batches.retrieve(ids[0])
    assert message_batch.id not in [b.id for b in client.batches.list(limit=100)]
    with pytest.raises(openai.NotFoundError):
        client.batches.retrieve(message_batch.id)


def test_batches_belong_to_their_workspace(server: ServerProcess, client: openai.OpenAI) -> None:
    batch = create(client, [line("a", "ok")])
    with make_client(server, OTHER_KEY) as other:
        with pytest.raises(openai.NotFoundError):
            other.batches.retrieve(batch.id)
        assert batch.id not in [b.id for b in other.batches.list()]
    with make_client(server, "wrong-key") as stranger, pytest.raises(openai.AuthenticationError):
        stranger.batches.list()


def test_chat_completions_answer_synchronously(server: ServerProcess, client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello there"}],
        max_completion_tokens=50,
    )
    assert completion.choices[0].message.content == "hello there"
    assert completion.object == "chat.completion" and completion.model == MODEL
    cut = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "one two three"}], max_tokens=2
    )
    assert (cut.choices[0].message.content, cut.choices[0].finish_reason) == ("one two", "length")
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x"}], n=2)
    assert "n" in caught.value.message
    response = httpx.post(
        f"{server.base_url}/v1/chat/completions",
        content=b"{oops",
        headers={"authorization": f"Bearer {KEY}", "content-type": "application/json"},
    )
    assert response.status_code == 400 and set(response.json()["error"]) == {"message", "type", "param", "code"}


def test_tool_calls_round_trip_in_openai_shape(client: openai.OpenAI) -> None:
    # The fake backend never calls tools; this checks the request translation accepts the whole shape.
    completion = client.chat.completions.create(
        model=MODEL,
        messages=[
            {"role": "user", "content": "weather?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"id": "call_1", "type": "function", "function": {"name": "get", "arguments": json.dumps({"c": 1})}}
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
            {"role": "user", "content": "thanks"},
        ],
        tools=[{"type": "function", "function": {"name": "get", "parameters": {"type": "object"}}}],
    )
    assert completion.choices[0].message.content == "thanks"
