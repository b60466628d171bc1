"""`anthropic-beta` features reach an Anthropic upstream: a batch's own (from its create call) with each
of its requests, and a Messages call's own, as the upstream (`ProgrammableUpstream`) records them.

The Batches API's own feature (`message-batches-2024-09-24`, sent by every beta-client call) is not a
feature of the model call and is not forwarded.
"""

from __future__ import annotations

from collections.abc import Callable

import anthropic
import pytest

from tests.api.helpers import sdk_results, wait_for_end
from tests.e2e.conftest import ProgrammableUpstream, StartOvernight, run_batch, succeeded, user
from tests.server import ServerProcess


@pytest.fixture(scope="module")
def front(start_overnight: StartOvernight, programmable_upstream: ProgrammableUpstream) -> ServerProcess:
    return start_overnight("--upstream-url", programmable_upstream.base_url, backend="anthropic")


@pytest.fixture
def client(front: ServerProcess, make_client: Callable[..., anthropic.Anthropic]) -> anthropic.Anthropic:
    return make_client(front)


def test_a_batch_sends_its_betas_with_every_request(
    client: anthropic.Anthropic, programmable_upstream: ProgrammableUpstream
) -> None:
    requests = [
        {"custom_id": "plain", "params": {"model": "claude-x", "max_tokens": 8, "messages": user("beta plain")}},
        {
            "custom_id": "own",
            "params": {
                "model": "claude-x",
                "max_tokens": 8,
                "messages": user("beta own"),
                "anthropic-beta": ["files-api-2025-04-14"],
            },
        },
    ]
    batch = client.beta.messages.batches.create(
        requests=requests,  # type: ignore[arg-type]
        betas=["context-1m-2025-08-07", "interleaved-thinking-2025-05-14"],
    )
    run_beta_batch(client, batch.id)
    [plain] = programmable_upstream.calls_for("beta plain")
    [own] = programmable_upstream.calls_for("beta own")
    assert plain.headers["anthropic-beta"] == "context-1m-2025-08-07,interleaved-thinking-2025-05-14"
    assert own.headers["anthropic-beta"] == (
        "context-1m-2025-08-07,interleaved-thinking-2025-05-14,files-api-2025-04-14"
    )
    assert "anthropic-beta" not in own.body


def test_a_batch_without_betas_sends_none(
    client: anthropic.Anthropic, programmable_upstream: ProgrammableUpstream
) -> None:
    requests = [{"custom_id": "a", "params": {"model": "claude-x", "max_tokens": 8, "messages": user("no betas")}}]
    run_batch(client, requests)  # the GA client
    batch = client.beta.messages.batches.create(requests=requests)  # type: ignore[arg-type]
    run_beta_batch(client, batch.id)
    calls = programmable_upstream.calls_for("no betas")
    assert len(calls) == 2
    assert all("anthropic-beta" not in call.headers for call in calls)


def test_messages_create_forwards_its_betas(
    client: anthropic.Anthropic, programmable_upstream: ProgrammableUpstream
) -> None:
    message = client.beta.messages.create(
        model="claude-x", max_tokens=8, messages=user("direct beta"), betas=["context-1m-2025-08-07"]
    )
    assert message.content[0].text == "upstream: direct beta"  # type: ignore[union-attr]
    [call] = programmable_upstream.calls_for("direct beta")
    assert call.headers["anthropic-beta"] == "context-1m-2025-08-07"


def run_beta_batch(client: anthropic.Anthropic, batch_id: str) -> None:
    """Wait for a batch made with the beta client and check every request succeeded."""
    wait_for_end(client, batch_id, timeout=30, interval=0.1)
    results = sdk_results(client, batch_id, beta=True)
    for custom_id in results:
        succeeded(results, custom_id)
