"""The `message_batch.ended` event, and its Standard Webhooks signature headers."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime

import msgspec
from standardwebhooks import Webhook

from overnight import ids
from overnight.protocol.batches import batch_object
from overnight.store.records import ANTHROPIC, BatchRecord, WebhookEvent
from overnight.timestamps import to_rfc3339
from overnight.webhooks.config import WebhookTarget

BATCH_ENDED = "message_batch.ended"


class BatchEndedEvents:
    """Builds a batch's event, for the store to queue in the transaction that ends the batch.

    Only workspaces with a webhook get one: what is configured on the node that ends the batch, at
    that moment, decides. The body is fixed then (the MessageBatch as it ended), so every retry sends
    the same bytes under the same `webhook-id`."""

    def __init__(self, targets: Mapping[str, WebhookTarget], public_base_url: str) -> None:
        self.targets = targets
        self.public_base_url = public_base_url

    def __call__(self, batch: BatchRecord) -> WebhookEvent | None:
        if batch.workspace not in self.targets or batch.format != ANTHROPIC:
            return None  # an OpenAI-format batch's events (`batch.completed`, ...) are not sent yet
        event_id = ids.event_id()
        body = {
            "type": BATCH_ENDED,
            "id": event_id,
            "created_at": to_rfc3339(batch.ended_at),
            "data": batch_object(batch, self.public_base_url),
        }
        return WebhookEvent(event_id, msgspec.json.encode(body))


def signed_headers(secret: str, event_id: str, body: bytes, *, at: datetime | None = None) -> dict[str, str]:
    """`webhook-id`, `webhook-timestamp` (now: receivers reject stale ones) and `webhook-signature`."""
    at = at or datetime.now(UTC)
    signature = Webhook(secret).sign(event_id, at, body.decode())
    return {
        "content-type": "application/json",
        "webhook-id": event_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": signature,
    }
