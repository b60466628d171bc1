"""Webhooks on a cluster: nodes sharing one real PostgreSQL database all queue and send events, and each
event reaches the receiver once (leases are exclusive), whichever node ended its batch."""

from __future__ import annotations

import collections
import time
from collections.abc import Callable
from pathlib import Path

import anthropic
import pytest
from standardwebhooks import Webhook

from tests.api.helpers import make_requests, wait_for_end
from tests.server import ServerProcess
from tests.webhooks.receiver import Receiver
from tests.webhooks.test_delivery import new_secret

pytestmark = pytest.mark.slow


def test_each_event_is_sent_once_by_a_cluster(
    postgres_url: str, tmp_path: Path, make_client: Callable[..., anthropic.Anthropic]
) -> None:
    secret = new_secret()
    nodes: list[ServerProcess] = []
    with Receiver() as receiver:
        try:
            hook = ["--webhook-url", receiver.url, "--webhook-secret", secret, "--sweep-interval", "0.2"]
            for index, role in enumerate(["api", "worker", "worker", "worker"]):
                proc = ServerProcess(tmp_path / f"{role}-{index}", ["--database", postgres_url, "--role", role, *hook])
                nodes.append(proc.start())
            client = make_client(nodes[0], timeout=60.0)
            batches = [
                client.messages.batches.create(requests=make_requests(5, prefix=f"b{n}"))  # type: ignore[arg-type]
                for n in range(12)
            ]
            for batch in batches:
                wait_for_end(client, batch.id, timeout=60)
            received = receiver.wait_for(len(batches), timeout=30)
            time.sleep(1.5)  # any duplicate would have arrived by now
            assert receiver.count() == len(batches)
            events = [Webhook(secret).verify(delivery.body, delivery.headers) for delivery in received]
            assert collections.Counter(event["data"]["id"] for event in events) == {b.id: 1 for b in batches}
            assert len({delivery.headers["webhook-id"] for delivery in received}) == len(batches)
            senders = [proc.stderr_path.read_text().count("delivered (attempt 1)") for proc in nodes]
            assert senders[0] == 0 and sum(senders) == len(batches), senders  # api nodes send nothing
        finally:
            for proc in nodes:
                proc.terminate_quietly()
