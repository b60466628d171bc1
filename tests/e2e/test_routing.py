"""`--config FILE` end to end: models routed by exact name or pattern to different backends, first match wins.

The front routes `claude-*` to an `anthropic` backend (a recording upstream on 127.0.0.1, with the model
renamed upstream and the key read from an environment variable) and a few names to a `fake` one. Which
backend answered is visible in the text (the recorder says `upstream: ...`, the fake echoes) and in what
the recorder received. A model no route matches is an errored `not_found_error`; `/v1/models` lists the
routes; a bad config stops the server at start with a clear message on stderr.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import anthropic
import pytest

from tests.api.helpers import assert_sdk_error
from tests.e2e.conftest import (
    ProgrammableUpstream,
    StartOvernight,
    errored,
    run_batch,
    succeeded,
    text_of,
    user,
    write_config,
)
from tests.server import ServerProcess

RECORDER_KEY = "recorder-secret"

CONFIG = """
[backends.recorder]
type = "anthropic"
base_url = "{recorder_url}"
api_key_env = "E2E_RECORDER_KEY"
model = "renamed-upstream-model"
max_concurrency = 2
timeout_seconds = 30

[backends.echo]
type = "fake"
latency_seconds = 0.01

[[routes]]
model = "claude-*"
backend = "recorder"

[[routes]]
model = "claude-special"   # never reached: claude-* above matches first
backend = "echo"

[[routes]]
model = "echo-exact"
backend = "echo"

[[routes]]
model = "gemma-?"
backend = "echo"
"""


@pytest.fixture(scope="module")
def front(
    start_overnight: StartOvernight,
    programmable_upstream: ProgrammableUpstream,
    tmp_path_factory: pytest.TempPathFactory,
) -> ServerProcess:
    config = write_config(
        tmp_path_factory.mktemp("routing"), CONFIG.format(recorder_url=programmable_upstream.base_url)
    )
    # --backend is ignored with --config (fake here: nothing would load if it were not)
    return start_overnight("--config", str(config), backend="fake", env={"E2E_RECORDER_KEY": RECORDER_KEY})


@pytest.fixture
def client(front: ServerProcess, make_client: Callable[..., anthropic.Anthropic]) -> anthropic.Anthropic:
    return make_client(front)


def test_models_go_to_the_backend_their_first_matching_route_names(
    client: anthropic.Anthropic, programmable_upstream: ProgrammableUpstream
) -> None:
    routed = {
        # custom_id: (model, prompt, expected text)
        "pattern": ("claude-opus-4-7", "to the recorder", "upstream: to the recorder"),
        "first-match": ("claude-special", "also the recorder", "upstream: also the recorder"),
        "exact": ("echo-exact", "echoed back", "echoed back"),
        "single-char": ("gemma-3", "echoed too", "echoed too"),
    }
    unrouted = {"unrouted": "gpt-4o", "not-quite-exact": "echo-exact-2", "pattern-too-long": "gemma-33"}
    requests = [
        {"custom_id": cid, "params": {"model": model, "max_tokens": 16, "messages": user(prompt)}}
        for cid, (model, prompt, _) in routed.items()
    ] + [
        {"custom_id": cid, "params": {"model": model, "max_tokens": 16, "messages": user("nobody answers")}}
        for cid, model in unrouted.items()
    ]
    batch, results = run_batch(client, requests)
    assert (batch.request_counts.succeeded, batch.request_counts.errored) == (4, 3)

    for custom_id, (model, _, text) in routed.items():
        message = succeeded(results, custom_id)
        assert text_of(message) == text, custom_id
        assert message.model == model, custom_id  # the client's name, even where it was renamed upstream
        assert message.usage.service_tier == "batch"

    for custom_id, model in unrouted.items():
        error_type, message = errored(results, custom_id)
        assert error_type == "not_found_error", custom_id
        assert model in message, message

    # The recorder saw exactly the two claude-* requests, renamed, with the key from the environment.
    for prompt in ("to the recorder", "also the recorder"):
        [call] = programmable_upstream.calls_for(prompt)
        assert call.body["model"] == "renamed-upstream-model"
        assert call.headers.get("x-api-key") == RECORDER_KEY
        assert call.headers.get("anthropic-version") == "2023-06-01"
    assert not programmable_upstream.calls_for("echoed back")
    assert not programmable_upstream.calls_for("nobody answers")


def test_messages_create_follows_the_routes(client: anthropic.Anthropic) -> None:
    assert text_of(client.messages.create(model="claude-x", max_tokens=8, messages=user("hi"))) == "upstream: hi"
    assert text_of(client.messages.create(model="gemma-3", max_tokens=8, messages=user("hi"))) == "hi"
    assert client.messages.count_tokens(model="echo-exact", messages=user("three words here")).input_tokens == 3
    with pytest.raises(anthropic.NotFoundError) as caught:
        client.messages.create(model="gpt-4o", max_tokens=8, messages=user("hi"))
    assert "gpt-4o" in assert_sdk_error(caught.value, 404, "not_found_error")


def test_models_list_and_retrieve(client: anthropic.Anthropic) -> None:
    # Exact routes under their own name; pattern routes under their backend's name; each once, in route order.
    expected = ["anthropic:recorder", "claude-special", "echo-exact", "fake:echo"]
    page = client.models.list()
    assert [model.id for model in page.data] == expected
    assert page.has_more is False
    assert (page.first_id, page.last_id) == (expected[0], expected[-1])
    for model in page.data:
        assert model.type == "model" and model.display_name == model.id

    first_two = client.models.list(limit=2)
    assert [model.id for model in first_two.data] == expected[:2]
    assert first_two.has_more is True
    assert [model.id for model in client.models.list(limit=2)] == expected  # auto-pagination walks the rest

    for model_id in ("echo-exact", "claude-whatever-matches", "gemma-9", "fake:echo"):
        info = client.models.retrieve(model_id)
        assert info.id == model_id and info.type == "model"
    for model_id in ("gpt-4o", "gemma-10"):
        with pytest.raises(anthropic.NotFoundError) as caught:
            client.models.retrieve(model_id)
        assert model_id in assert_sdk_error(caught.value, 404, "not_found_error")


BAD_CONFIGS = {
    "invalid-toml": ('[backends.a\ntype = "fake"\n', "invalid TOML"),
    "undefined-backend": (
        '[backends.a]\ntype = "fake"\n[[routes]]\nmodel = "*"\nbackend = "nope"\n',
        "routes.0.backend: no backend named 'nope' (defined: a)",
    ),
    "unknown-type": (
        '[backends.a]\ntype = "vertex"\n[[routes]]\nmodel = "*"\nbackend = "a"\n',
        "backends.a: type must be one of local, anthropic, openai, fake",
    ),
    "unset-key-env": (
        '[backends.a]\ntype = "anthropic"\napi_key_env = "E2E_SURELY_UNSET_KEY"\n'
        '[[routes]]\nmodel = "*"\nbackend = "a"\n',
        "backends.a.api_key_env: environment variable E2E_SURELY_UNSET_KEY is not set",
    ),
    "missing-model-file": (
        '[backends.a]\ntype = "local"\nmodel_path = "absent.gguf"\n[[routes]]\nmodel = "*"\nbackend = "a"\n',
        "local model file not found: {dir}/absent.gguf",
    ),
}


@pytest.mark.parametrize("case", list(BAD_CONFIGS))
def test_a_bad_config_stops_the_server_at_start(case: str, tmp_path: Path) -> None:
    text, expected = BAD_CONFIGS[case]
    config = write_config(tmp_path, text)
    proc = ServerProcess(tmp_path / "data", ["--config", str(config)], backend="fake")
    with pytest.raises(AssertionError, match="exited with code") as caught:
        proc.start()
    assert proc.process is not None and proc.process.returncode not in (0, None)
    stderr = proc.stderr_tail()
    assert expected.format(dir=tmp_path.resolve()) in stderr, stderr
    assert "exited with code" in str(caught.value)
    # A clear message: one `Error: ...` line naming the problem, no Python traceback.
    [error_line] = [line for line in stderr.splitlines() if line.startswith("Error: ")] or [stderr]
    assert expected.format(dir=tmp_path.resolve()) in error_line, stderr
    assert "Traceback" not in stderr, stderr
