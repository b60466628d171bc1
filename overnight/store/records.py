"""Plain records the store hands out; nothing SQLAlchemy-shaped leaves `store/`.

They are msgspec Structs: built in C, several times faster than dataclasses, which matters for the
thousands of leased requests and completions a second that the engine handles.
"""

from __future__ import annotations

import msgspec

PENDING = "pending"
RUNNING = "running"
SUCCEEDED = "succeeded"
ERRORED = "errored"
CANCELED = "canceled"
EXPIRED = "expired"

# Wire formats of a batch (its requests' bodies and its result lines).
ANTHROPIC = "anthropic"
OPENAI = "openai"

IN_PROGRESS = "in_progress"
CANCELING = "canceling"
ENDED = "ended"


class BatchRecord(msgspec.Struct, frozen=True, gc=False):
    seq: int
    id: str
    workspace: str
    status: str
    total: int
    processing: int
    succeeded: int
    errored: int
    canceled: int
    expired: int
    created_at: int
    expires_at: int
    ended_at: int | None
    cancel_initiated_at: int | None
    archived_at: int | None
    first_request_id: int | None
    last_request_id: int | None
    betas: str | None
    input_tokens: int = 0
    output_tokens: int = 0
    cache_creation_input_tokens: int = 0
    cache_read_input_tokens: int = 0
    format: str = "anthropic"
    succeeded_bytes: int = 0
    errored_bytes: int = 0

    @property
    def usage(self) -> Usage:
        return Usage(
            self.input_tokens, self.output_tokens, self.cache_creation_input_tokens, self.cache_read_input_tokens
        )


class LeasedRequest(msgspec.Struct, frozen=True, gc=False):
    id: int
    batch_seq: int
    custom_id: str
    params: bytes
    attempt: int


class Completion(msgspec.Struct, frozen=True, gc=False):
    """A terminal outcome for a leased request: `succeeded`/`errored` with its line, or `canceled`."""

    request_id: int
    batch_seq: int
    attempt: int
    state: str
    line: bytes | None
    usage: tuple[int, int, int, int] | None = None
    """Tokens (input, output, cache creation, cache read) of a succeeded request, summed per batch."""
    backend: str = ""
    """The backend that answered (empty: none did), for the metrics of what was written."""
    error_type: str = ""
    """An errored result's error type, for the same."""


class Completed(msgspec.Struct, frozen=True):
    """What one `complete_requests` call changed."""

    written: list[Completion]
    """The completions that took effect (a late or duplicate one does not)."""
    batches_ended: int


class ActiveBatches(msgspec.Struct, frozen=True):
    """The batches that had not ended when read."""

    statuses: list[tuple[int, str]]
    betas: dict[int, list[str]] = msgspec.field(default_factory=dict)
    """The `anthropic-beta` features of those batches that have some."""
    formats: dict[int, str] = msgspec.field(default_factory=dict)
    """The wire format of those batches not in the Anthropic one."""

    @property
    def seqs(self) -> list[int]:
        return [seq for seq, _ in self.statuses]


class Usage(msgspec.Struct, frozen=True):
    """Tokens, summed over results (the Messages API's usage fields)."""

    input_tokens: int = 0
    output_tokens: int = 0
    cache_creation_input_tokens: int = 0
    cache_read_input_tokens: int = 0


class NodeShare(msgspec.Struct, frozen=True):
    """This worker's place among the live workers: `rank` in 0..nodes-1."""

    rank: int
    nodes: int

    def share_of(self, cap: int) -> int:
        """This worker's part of a cap split between all live workers (the parts add up to `cap`)."""
        return cap // self.nodes + (1 if self.rank < cap % self.nodes else 0)


# States of a webhook delivery.
DELIVERY_PENDING = "pending"
DELIVERED = "delivered"
DELIVERY_FAILED = "failed"


class WebhookEvent(msgspec.Struct, frozen=True):
    """An event to queue for a batch that ended: its id (the `webhook-id`) and the exact body to send."""

    event_id: str
    body: bytes


class LeasedDelivery(msgspec.Struct, frozen=True):
    """A webhook delivery this sender holds for one attempt (`attempt` is part of its lease token)."""

    id: int
    event_id: str
    workspace: str
    body: bytes
    attempt: int
    created_at: int
