"""The OpenAI Files API through the official `openai` SDK (strict validation) against a real server."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from tests.openai.helpers import jsonl, line, make_client
from tests.server import ServerProcess

KEY, OTHER_KEY = "test-key", "other-key"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = ServerProcess(
        tmp_path_factory.mktemp("files"),
        ["--api-key", KEY, "--api-key", f"{OTHER_KEY}:elsewhere", "--openai-max-file-bytes", "4096"],
    ).start()
    yield proc
    proc.terminate_quietly()


@pytest.fixture
def client(server: ServerProcess) -> Iterator[openai.OpenAI]:
    with make_client(server, KEY) as sdk:
        yield sdk


def test_upload_retrieve_content_delete(client: openai.OpenAI) -> None:
    content = jsonl([line("a", "one"), line("b", "two")])
    uploaded = client.files.create(file=("requests.jsonl", content), purpose="batch")
    assert uploaded.id.startswith("file-")
    assert (uploaded.bytes, uploaded.filename, uploaded.purpose, uploaded.status) == (
        len(content),
        "requests.jsonl",
        "batch",
        "processed",
    )
    assert uploaded.expires_at == uploaded.created_at + 30 * 86_400
    assert client.files.retrieve(uploaded.id) == uploaded
    assert client.files.content(uploaded.id).content == content

    deleted = client.files.delete(uploaded.id)
    assert (deleted.id, deleted.deleted) == (uploaded.id, True)
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(uploaded.id)
    with pytest.raises(openai.NotFoundError):
        client.files.content(uploaded.id)
    with pytest.raises(openai.NotFoundError):
        client.files.delete(uploaded.id)


def test_expires_after_sets_the_files_lifetime(client: openai.OpenAI) -> None:
    uploaded = client.files.create(
        file=("short.jsonl", jsonl([line("a", "x")])),
        purpose="batch",
        expires_after={"anchor": "created_at", "seconds": 3600},
    )
    assert uploaded.expires_at == uploaded.created_at + 3600
    with pytest.raises(openai.BadRequestError) as caught:
        client.files.create(
            file=("short.jsonl", b"{}\n"), purpose="batch", expires_after={"anchor": "created_at", "seconds": 60}
        )
    assert caught.value.param == "expires_after.seconds"


def test_list_pages_newest_first_and_honours_after(client: openai.OpenAI) -> None:
    ids = [client.files.create(file=(f"f{i}.jsonl", jsonl([line("a", str(i))])), purpose="batch").id for i in range(5)]
    first = client.files.list(limit=2)
    assert [f.id for f in first.data] == ids[::-1][:2]
    assert first.has_more is True
    listed = [f.id for f in client.files.list(limit=2)]  # the SDK follows `after` page by page
    assert listed[:5] == ids[::-1]
    ascending = [f.id for f in client.files.list(order="asc", purpose="batch")]
    assert ascending[-5:] == ids
    assert client.files.list(purpose="fine-tune").data == []
    with pytest.raises(openai.BadRequestError) as caught:
        client.files.list(after="file-unknown")
    assert caught.value.param == "after"


def test_refusals_are_400s_in_openai_envelope(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.files.create(file=("notes.txt", b"{}\n"), purpose="batch")
    assert "Must be .jsonl" in caught.value.message
    with pytest.raises(openai.BadRequestError) as caught:
        client.files.create(file=("x.jsonl", b"{}\n"), purpose="assistants")
    assert caught.value.param == "purpose"
    with pytest.raises(openai.BadRequestError) as caught:
        client.files.create(file=("big.jsonl", b"x" * 5000), purpose="batch")
    assert caught.value.body["message"] == "File is too large."  # type: ignore[index]
    assert caught.value.request_id is not None and caught.value.request_id.startswith("req_")


def test_files_belong_to_their_workspace_and_need_a_key(server: ServerProcess, client: openai.OpenAI) -> None:
    mine = client.files.create(file=("mine.jsonl", jsonl([line("a", "x")])), purpose="batch").id
    with make_client(server, OTHER_KEY) as other:
        with pytest.raises(openai.NotFoundError):
            other.files.retrieve(mine)
        assert mine not in [f.id for f in other.files.list()]
    with make_client(server, "wrong-key") as stranger, pytest.raises(openai.AuthenticationError):
        stranger.files.list()


def test_not_multipart_is_a_400(server: ServerProcess) -> None:
    response = httpx.post(
        f"{server.base_url}/v1/files", json={"purpose": "batch"}, headers={"authorization": f"Bearer {KEY}"}
    )
    assert response.status_code == 400
    assert set(response.json()["error"]) == {"message", "type", "param", "code"}
    assert response.headers["x-request-id"].startswith("req_")


def _multipart() -> tuple[bytes, bytes, str]:
    """A multipart upload's opening (boundary, part headers), closing and content type."""
    boundary = "b0undary"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nbatch\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.jsonl"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    return head, f"\r\n--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def test_a_declared_oversized_upload_is_a_413_at_once(server: ServerProcess) -> None:
    head, tail, content_type = _multipart()
    started = time.monotonic()
    response = httpx.post(
        f"{server.base_url}/v1/files",
        content=head + b"x" * (8 << 20) + tail,
        headers={"authorization": f"Bearer {KEY}", "content-type": content_type},
        timeout=30,
    )
    assert response.status_code == 413 and time.monotonic() - started < 3
    assert response.json()["error"]["message"] == "File is too large."


def test_a_streamed_oversized_upload_is_refused_without_reading_it_all(server: ServerProcess) -> None:
    head, tail, content_type = _multipart()

    def body() -> Iterator[bytes]:  # no content-length: the server learns the size as it reads
        yield head
        for _ in range(64):
            yield b"x" * 65536
        yield tail

    response = httpx.post(
        f"{server.base_url}/v1/files",
        content=body(),
        headers={"authorization": f"Bearer {KEY}", "content-type": content_type},
        timeout=30,
    )
    assert response.status_code == 400 and response.json()["error"]["message"] == "File is too large."
    assert set(response.json()["error"]) == {"message", "type", "param", "code"}


def test_a_malformed_multipart_body_is_a_400(server: ServerProcess) -> None:
    response = httpx.post(
        f"{server.base_url}/v1/files",
        content=b"--x\r\nno headers end",
        headers={"authorization": f"Bearer {KEY}", "content-type": "multipart/form-data; boundary=x"},
    )
    assert response.status_code == 400, response.text
    assert set(response.json()["error"]) == {"message", "type", "param", "code"}


def test_files_survive_a_restart(tmp_path: Path) -> None:
    proc = ServerProcess(tmp_path / "data", []).start()
    try:
        with make_client(proc) as sdk:
            file_id = sdk.files.create(file=("keep.jsonl", b'{"k": 1}\n'), purpose="batch").id
        proc.restart()
        with make_client(proc) as sdk:
            assert sdk.files.content(file_id).content == b'{"k": 1}\n'
    finally:
        proc.terminate_quietly()
