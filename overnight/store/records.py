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


class ActiveBatches(msgspec.Struct, frozen=True):
    """The batches that had not ended when read, and the newest batch seq that existed just before."""

    statuses: list[tuple[int, str]]
    newest_seq: int
    betas: dict[int, list[str]] = msgspec.field(default_factory=dict)
    """The `anthropic-beta` features of those batches that have some."""

    @property
    def seqs(self) -> list[int]:
        return [seq for seq, _ in self.statuses]
