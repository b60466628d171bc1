"""Plain records the store hands out; nothing SQLAlchemy-shaped leaves `store/`."""

from __future__ import annotations

from dataclasses import dataclass

PENDING = "pending"
RUNNING = "running"
SUCCEEDED = "succeeded"
ERRORED = "errored"
CANCELED = "canceled"
EXPIRED = "expired"

IN_PROGRESS = "in_progress"
CANCELING = "canceling"
ENDED = "ended"


@dataclass(frozen=True, slots=True)
class BatchRecord:
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


@dataclass(frozen=True, slots=True)
class LeasedRequest:
    id: int
    batch_seq: int
    custom_id: str
    params: bytes
    attempt: int


@dataclass(frozen=True, slots=True)
class Completion:
    """A terminal outcome for a leased request: `succeeded`/`errored` with its line, or `canceled`."""

    request_id: int
    batch_seq: int
    attempt: int
    state: str
    line: bytes | None
