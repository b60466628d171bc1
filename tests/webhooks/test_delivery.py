"""Webhooks end to end: a real overnight server (subprocess, fake backend) with a webhook configured,
the official SDK as the client, and a real receiver on 127.0.0.1. Every event is verified with the
`standardwebhooks` package, as a receiver would."""

from __future__ import annotations

import base64
import itertools
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anthropic
import httpx
import pytest
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from tests.api.helpers import make_requests, wait_for_end
from tests.server import ServerProcess
from tests.webhooks.receiver import Received, Receiver

MakeServer = Callable[..., ServerProcess]
MakeClient = Callable[..., anthropic.Anthropic]


def new_secret() -> str:
    return "whsec_" + base64.b64encode(os.urandom(32)).decode()


def webhook_args(receiver: Receiver, secret: str, *more: str) -> list[str]:
    return ["--webhook-url", receiver.url, "--webhook-secret", secret, "--webhook-retry-base", "0.2", *more]


def verified(secret: str, delivery: Received) -> dict[str, Any]:
    event: dict[str, Any] = Webhook(secret).verify(delivery.body, delivery.headers)
    return event


def batch_as_get_returns_it(server: ServerProcess, batch_id: str) -> dict[str, Any]:
    answer = httpx.get(f"{server.base_url}/v1/messages/batches/{batch_id}", headers={"x-api-key": "k"})
    answer.raise_for_status()
    data: dict[str, Any] = answer.json()
    return data


def assert_no_more(receiver: Receiver, count: int, *, for_seconds: float = 1.5) -> None:
    time.sleep(for_seconds)
    assert receiver.count() == count, [json.loads(r.body)["data"]["id"] for r in receiver.received]


def has_aiohttp_loaded(server: ServerProcess) -> bool:
    """Whether the server process has mapped aiohttp's C extensions, i.e. imported aiohttp."""
    assert server.process is not None
    return "/aiohttp/" in Path(f"/proc/{server.process.pid}/maps").read_text()


def test_the_http_client_is_loaded_only_where_a_webhook_is_configured(
    server_factory: MakeServer, make_client: MakeClient
) -> None:
    # aiohttp holds about 10 MB once imported, counted in every server's footprint if loaded at start.
    plain = server_factory()
    client = make_client(plain)
    batch = client.messages.batches.create(requests=make_requests(3))  # type: ignore[arg-type]
    wait_for_end(client, batch.id, total=3)
    assert not has_aiohttp_loaded(plain)
    with Receiver() as receiver:
        # A configured webhook loads it at start, so that the first attempt's time (which counts against
        # the retry window) is not spent importing it.
        hooked = server_factory(*webhook_args(receiver, new_secret()))
        deadline = time.monotonic() + 10
        while not has_aiohttp_loaded(hooked) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert has_aiohttp_loaded(hooked)
        assert receiver.count() == 0  # before anything was sent


def test_completed_batch_sends_one_signed_event(server_factory: MakeServer, make_client: MakeClient) -> None:
    secret = new_secret()
    with Receiver() as receiver:
        server = server_factory(*webhook_args(receiver, secret))
        client = make_client(server)
        batch = client.messages.batches.create(requests=make_requests(3))  # type: ignore[arg-type]
        wait_for_end(client, batch.id, total=3)
        [delivery] = receiver.wait_for(1)
        event = verified(secret, delivery)
        assert event["type"] == "message_batch.ended"
        assert event["id"] == delivery.headers["webhook-id"] and event["id"].startswith("evt_")
        assert event["data"] == batch_as_get_returns_it(server, batch.id)
        assert event["created_at"] == event["data"]["ended_at"]
        assert event["data"]["request_counts"]["succeeded"] == 3
        assert delivery.headers["Content-Type"] == "application/json"
        # The signature is real: another secret, or a changed body, does not verify.
        with pytest.raises(WebhookVerificationError):
            Webhook(new_secret()).verify(delivery.body, delivery.headers)
        with pytest.raises(WebhookVerificationError):
            Webhook(secret).verify(delivery.body.replace(b'"succeeded":3', b'"succeeded":4'), delivery.headers)
        assert_no_more(receiver, 1)


def test_canceled_batch_sends_its_event(server_factory: MakeServer, make_client: MakeClient) -> None:
    secret = new_secret()
    with Receiver() as receiver:
        server = server_factory(*webhook_args(receiver, secret, "--fake-latency-ms", "400", "--concurrency", "1"))
        client = make_client(server)
        batch = client.messages.batches.create(requests=make_requests(20))  # type: ignore[arg-type]
        client.messages.batches.cancel(batch.id)
        ended = wait_for_end(client, batch.id, total=20)
        assert ended.request_counts.canceled >= 1
        [delivery] = receiver.wait_for(1)
        event = verified(secret, delivery)
        assert event["data"] == batch_as_get_returns_it(server, batch.id)
        assert event["data"]["cancel_initiated_at"] is not None
        assert_no_more(receiver, 1)


def test_expired_batch_sends_its_event(server_factory: MakeServer, make_client: MakeClient) -> None:
    secret = new_secret()
    args = ["--batch-ttl", "1", "--fake-latency-ms", "1000", "--concurrency", "1", "--sweep-interval", "0.2"]
    with Receiver() as receiver:
        server = server_factory(*webhook_args(receiver, secret, *args))
        client = make_client(server)
        batch = client.messages.batches.create(requests=make_requests(10))  # type: ignore[arg-type]
        ended = wait_for_end(client, batch.id, total=10)
        assert ended.request_counts.expired >= 1
        [delivery] = receiver.wait_for(1)
        event = verified(secret, delivery)
        assert event["data"] == batch_as_get_returns_it(server, batch.id)
        assert event["data"]["request_counts"]["expired"] == ended.request_counts.expired
        assert_no_more(receiver, 1)


def test_failing_receiver_gets_retries_with_the_same_webhook_id(
    server_factory: MakeServer, make_client: MakeClient
) -> None:
    secret = new_secret()
    with Receiver(fail_first=3) as receiver:
        server = server_factory(*webhook_args(receiver, secret))
        client = make_client(server)
        batch = client.messages.batches.create(requests=make_requests(1))  # type: ignore[arg-type]
        wait_for_end(client, batch.id, total=1)
        attempts = receiver.wait_for(4)
        assert {attempt.headers["webhook-id"] for attempt in attempts} == {attempts[0].headers["webhook-id"]}
        assert {attempt.body for attempt in attempts} == {attempts[0].body}
        for attempt in attempts:  # each attempt is signed afresh (its own timestamp), and verifies
            assert verified(secret, attempt)["data"]["id"] == batch.id
        # Backoff from 0.2 s, doubling, jittered to 50-100%: at least 0.1 s, 0.2 s, 0.4 s apart.
        gaps = [later.at - earlier.at for earlier, later in itertools.pairwise(attempts)]
        assert all(gap >= least for gap, least in zip(gaps, (0.1, 0.2, 0.4), strict=True)), gaps
        assert_no_more(receiver, 4)  # the fourth one was answered 204: delivered, done


def test_delivery_is_given_up_after_the_retry_window(server_factory: MakeServer, make_client: MakeClient) -> None:
    secret = new_secret()
    with Receiver(status=503) as receiver:
        server = server_factory(*webhook_args(receiver, secret, "--webhook-retry-window", "2"))
        client = make_client(server)
        batch = client.messages.batches.create(requests=make_requests(1))  # type: ignore[arg-type]
        wait_for_end(client, batch.id, total=1)
        receiver.wait_for(2)
        time.sleep(2.5)  # past the window: the last attempt has been made
        count = receiver.count()
        assert_no_more(receiver, count)
        assert "given up after" in server.stderr_tail()


def test_pending_delivery_is_sent_after_a_restart(server_factory: MakeServer, make_client: MakeClient) -> None:
    secret = new_secret()
    with Receiver(status=503) as down:
        server = server_factory(*webhook_args(down, secret, "--webhook-retry-base", "1"))
        client = make_client(server)
        batch = client.messages.batches.create(requests=make_requests(2))  # type: ignore[arg-type]
        wait_for_end(client, batch.id, total=2)
        [refused] = down.wait_for(1)
        server.stop()
    with Receiver() as up:
        # Same data dir, port and secret; the receiver is back (on a new port, as after a redeploy). The
        # event was fixed when the batch ended: its results_url names the server's address then.
        server.args = webhook_args(up, secret)
        server.start(port=server.port)
        [delivery] = up.wait_for(1)
        assert delivery.headers["webhook-id"] == refused.headers["webhook-id"]
        assert delivery.body == refused.body
        assert verified(secret, delivery)["data"] == batch_as_get_returns_it(server, batch.id)
        assert_no_more(up, 1)


def test_attempt_cut_short_by_shutdown_is_sent_soon_after_restart(
    server_factory: MakeServer, make_client: MakeClient
) -> None:
    """SIGTERM during an attempt hands the delivery back: after a restart it goes out at once, not after
    its lease (timeout 20 s + 30 s) would have lapsed."""
    secret = new_secret()
    with Receiver(hang_first=1) as hanging:
        server = server_factory(*webhook_args(hanging, secret, "--webhook-timeout", "20"))
        client = make_client(server)
        batch = client.messages.batches.create(requests=make_requests(1))  # type: ignore[arg-type]
        wait_for_end(client, batch.id, total=1)
        [cut] = hanging.wait_for(1)
        server.stop()
    with Receiver() as up:
        server.args = webhook_args(up, secret)
        server.start(port=server.port)
        [delivery] = up.wait_for(1, timeout=10)
        assert (delivery.headers["webhook-id"], delivery.body) == (cut.headers["webhook-id"], cut.body)
        assert verified(secret, delivery)["data"]["id"] == batch.id


def test_receiver_that_does_not_answer_in_time_gets_a_retry(
    server_factory: MakeServer, make_client: MakeClient
) -> None:
    secret = new_secret()
    with Receiver(hang_first=1) as receiver:
        server = server_factory(*webhook_args(receiver, secret, "--webhook-timeout", "0.5"))
        client = make_client(server)
        batch = client.messages.batches.create(requests=make_requests(1))  # type: ignore[arg-type]
        wait_for_end(client, batch.id, total=1)
        timed_out, answered = receiver.wait_for(2)
        assert timed_out.headers["webhook-id"] == answered.headers["webhook-id"]
        assert answered.at - timed_out.at >= 0.5
        assert "no answer within 0.5s" in server.stderr_tail()
        assert_no_more(receiver, 2)
