"""What the API (and later the CLI) can do with batches: create, get, list, cancel, delete, results.

The service turns store outcomes into the API's decisions (which state transitions are allowed,
which errors to raise); it never waits for a model.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Sequence
from typing import Any, Protocol

import msgspec

from overnight.config import Settings
from overnight.exceptions import InvalidRequestError, NotFoundError, RateLimitError
from overnight.metrics import NO_BACKEND, Metrics
from overnight.protocol.batches import batch_object, batch_page, deleted_object
from overnight.store import BatchRecord, QueueFullError, Store, UnknownCursorError
from overnight.store.records import CANCELED, CANCELING, ENDED
from overnight.streamed_create import StreamedCreate
from overnight.timestamps import now_micros

logger = logging.getLogger(__name__)


class WorkListener(Protocol):
    """The engine, as the service sees it: told when there is new work or a batch was canceled."""

    def batch_created(self, batch_seq: int, betas: Sequence[str], format: str = ...) -> None: ...

    def batch_canceled(self, batch_seq: int) -> None: ...


class BatchService:
    def __init__(
        self, store: Store, settings: Settings, listener: WorkListener | None = None, metrics: Metrics | None = None
    ) -> None:
        self.store = store
        self.settings = settings
        self.listener = listener
        self.metrics = metrics or Metrics()

    async def create_streamed(
        self,
        workspace: str,
        chunks: AsyncIterator[bytes],
        public_base_url: str,
        *,
        declared_length: int | None,
        betas: Sequence[str] = (),
    ) -> dict[str, Any]:
        """Store a new batch from its create body's chunks as they arrive (`betas`: the `anthropic-beta`
        features its requests are sent with). The requests are decoded while the body arrives, and where
        the store has a streamed insert a big body's are stored meanwhile too (see `StreamedCreate`);
        elsewhere they are inserted once the body is complete."""
        streamed = StreamedCreate(self.store, self.settings, workspace, betas, declared_length)
        record = await _queued(streamed.run(chunks))
        return self._created(record, betas, public_base_url)

    def _created(self, record: BatchRecord, betas: Sequence[str], public_base_url: str) -> dict[str, Any]:
        self.metrics.batches_created += 1
        if self.listener:
            # The batch is committed: a failure to wake the scheduler must not turn this into a 5xx (the
            # SDKs would retry the create and store it twice); the scheduler's poll finds it anyway.
            try:
                self.listener.batch_created(record.seq, betas)
            except Exception:
                logger.exception("batch %s stored, but the scheduler was not told", record.id)
        return batch_object(record, public_base_url)

    async def retrieve(self, workspace: str, batch_id: str, public_base_url: str) -> dict[str, Any]:
        return batch_object(await self._get(workspace, batch_id), public_base_url)

    async def list(
        self,
        workspace: str,
        *,
        limit: int,
        after_id: str | None,
        before_id: str | None,
        public_base_url: str,
    ) -> dict[str, Any]:
        try:
            records, has_more = await self.store.list_batches(
                workspace, limit=limit, after_id=after_id, before_id=before_id
            )
        except UnknownCursorError as exc:
            raise InvalidRequestError(f"Unknown pagination cursor: no batch with id {exc.args[0]!r}") from None
        return batch_page(records, has_more, public_base_url)

    async def cancel(self, workspace: str, batch_id: str, public_base_url: str) -> dict[str, Any]:
        record = await self._get(workspace, batch_id)
        if record.status == ENDED:
            raise InvalidRequestError(f"Batch {batch_id} has already ended and cannot be canceled")
        if record.status == CANCELING:
            return batch_object(record, public_base_url)
        canceled = await self.store.cancel_batch(record.seq, now_micros())
        if canceled is None:
            # It ended or was canceled between our read and the write: answer from its new state.
            return await self.cancel(workspace, batch_id, public_base_url)
        # Its pending requests were canceled just now (none could have been before), and with nothing
        # running it ended too.
        self.metrics.finished(CANCELED, NO_BACKEND, count=canceled.canceled)
        if canceled.status == ENDED:
            self.metrics.batches_ended += 1
        if self.listener:
            self.listener.batch_canceled(record.seq)
        return batch_object(canceled, public_base_url)

    async def queue_counts(self) -> tuple[int, int]:
        """(pending, leased) requests of every unfinished batch in the database, for `/metrics`."""
        return await self.store.queue_counts()

    async def delete(self, workspace: str, batch_id: str) -> dict[str, Any]:
        record = await self._get(workspace, batch_id)
        if record.status != ENDED or not await self.store.delete_batch(record.seq):
            raise InvalidRequestError(
                f"Batch {batch_id} is still {record.status}; it can be deleted once it has ended (cancel it first)"
            )
        return deleted_object(batch_id)

    async def results(self, workspace: str, batch_id: str) -> AsyncIterator[bytes]:
        """Check the batch can be downloaded now, then stream its JSONL lines page by page."""
        record = await self._get(workspace, batch_id)
        if record.archived_at is not None:
            raise NotFoundError(f"The results of batch {batch_id} were archived and are no longer available")
        if record.status != ENDED:
            raise InvalidRequestError(f"Batch {batch_id} has not ended yet; results are available once it has")
        return self.store.stream_results(record)

    async def usage(self, workspace: str, batch_id: str) -> dict[str, Any]:
        """The tokens a batch's results used so far (not part of the Message Batches API)."""
        record = await self._get(workspace, batch_id)
        return {"type": "batch_usage", "batch_id": batch_id, **msgspec.structs.asdict(record.usage)}

    async def workspace_usage(self, workspace: str) -> dict[str, Any]:
        """The tokens used by every batch the workspace has stored."""
        batch_count, usage = await self.store.workspace_usage(workspace)
        return {
            "type": "workspace_usage",
            "workspace": workspace,
            "batches": batch_count,
            **msgspec.structs.asdict(usage),
        }

    async def _get(self, workspace: str, batch_id: str) -> BatchRecord:
        record = await self.store.get_batch(workspace, batch_id)
        if record is None:
            raise NotFoundError(f"No batch with id {batch_id!r}")
        return record


async def _queued(insert: Awaitable[BatchRecord]) -> BatchRecord:
    """The stored batch, or the API's 429 when the workspace's queue is full."""
    try:
        return await insert
    except QueueFullError as exc:
        raise RateLimitError(
            f"Too many requests waiting in this workspace's queue (limit {exc.limit}); "
            "retry when some batches have ended",
            retry_after_seconds=30,
        ) from None
