"""What the OpenAI Files and Batches APIs do: the API's decisions over the shared store and engine.

An OpenAI batch is an engine batch in the `openai` format (same scheduler, leases, retries, expiry and
recovery as an Anthropic one) plus a row of what only this API has. Its input file is checked whole at
create: a bad file gives a `failed` batch with one error per bad line, a good one runs at once
(`in_progress`). Once the engine has ended it, the first read writes the output and error files
(`finalizing` → `completed` / `cancelled` / `expired`), exactly once across nodes.
"""

from __future__ import annotations

import logging
from typing import Any

import msgspec

from overnight import ids
from overnight.config import Settings
from overnight.engine.calls import BackendRouter
from overnight.exceptions import NotFoundError, OvernightError, RateLimitError
from overnight.metrics import NO_BACKEND, Metrics
from overnight.openai_api.errors import OpenAIRequestError
from overnight.openai_api.input_file import batch_error, check_input_file
from overnight.openai_api.objects import batch_object, file_deleted, file_object, page
from overnight.protocol.codecs import OPENAI_CODEC
from overnight.service import WorkListener
from overnight.store import QueueFullError, Store, UnknownCursorError
from overnight.store.openai import FileRecord, OpenAIBatchRecord, OpenAIStore
from overnight.store.records import CANCELED, CANCELING, ENDED, OPENAI
from overnight.timestamps import MICROS, now_micros

logger = logging.getLogger(__name__)

COMPLETION_WINDOW = "24h"
FILE_TTL_SECONDS = 30 * 86_400  # OpenAI's default for batch files
SUPPORTED_ENDPOINTS = ("/v1/chat/completions",)
KNOWN_ENDPOINTS = (
    "/v1/responses",
    "/v1/chat/completions",
    "/v1/embeddings",
    "/v1/completions",
    "/v1/moderations",
    "/v1/images/generations",
    "/v1/images/edits",
    "/v1/videos",
)
_MAX_METADATA_PAIRS = 16


class _CreateBatch(msgspec.Struct):
    input_file_id: Any = None
    endpoint: Any = None
    completion_window: Any = None
    metadata: Any = None
    output_expires_after: Any = None


class OpenAIService:
    def __init__(
        self,
        store: Store,
        settings: Settings,
        router: BackendRouter,
        listener: WorkListener | None,
        metrics: Metrics,
    ) -> None:
        self.store = OpenAIStore(store)
        self.engine_store = store
        self.settings = settings
        self.router = router
        self.listener = listener
        self.metrics = metrics

    # --- files --------------------------------------------------------------------------------

    async def upload(self, workspace: str, filename: str, purpose: str, content: bytes) -> dict[str, Any]:
        if purpose != "batch":
            raise OpenAIRequestError(
                f"purpose: only 'batch' is supported by this server, got {purpose!r}",
                param="purpose",
                code="invalid_value",
            )
        if not filename.endswith(".jsonl"):
            raise OpenAIRequestError("Invalid file format for Batch API. Must be .jsonl", param="file")
        if len(content) > self.settings.openai_max_file_bytes:
            raise OpenAIRequestError("File is too large.", param="file")
        now = now_micros()
        record = FileRecord(
            0, file_id(), workspace, purpose, filename[:512], len(content), now, now + FILE_TTL_SECONDS * MICROS
        )
        return file_object(await self.store.insert_file(record, content))

    async def retrieve_file(self, workspace: str, file_id: str) -> dict[str, Any]:
        return file_object(await self._file(workspace, file_id))

    async def file_content(self, workspace: str, file_id: str) -> bytes:
        content = await self.store.file_content(workspace, file_id)
        if content is None:
            raise _file_not_found(file_id)  # or its batch's results were archived
        return content

    async def list_files(
        self, workspace: str, *, purpose: str | None, limit: int, after_id: str | None, ascending: bool
    ) -> dict[str, Any]:
        try:
            records, has_more = await self.store.list_files(
                workspace, purpose=purpose, limit=limit, after_id=after_id, ascending=ascending
            )
        except UnknownCursorError:
            raise OpenAIRequestError(f"No file with id {after_id!r} to list after", param="after") from None
        return page([file_object(record) for record in records], has_more)

    async def delete_file(self, workspace: str, file_id: str) -> dict[str, Any]:
        if not await self.store.delete_file(workspace, file_id):
            raise _file_not_found(file_id)
        return file_deleted(file_id)

    async def _file(self, workspace: str, file_id: str) -> FileRecord:
        record = await self.store.get_file(workspace, file_id)
        if record is None:
            raise _file_not_found(file_id)
        return record

    # --- batches ------------------------------------------------------------------------------

    async def create_batch(self, workspace: str, body: bytes | bytearray) -> dict[str, Any]:
        request = _decode_create(body)
        metadata = _checked_metadata(request.metadata)
        if request.completion_window != COMPLETION_WINDOW:
            raise OpenAIRequestError(
                f"completion_window: only '{COMPLETION_WINDOW}' is supported",
                param="completion_window",
                code="invalid_value",
            )
        if request.endpoint not in SUPPORTED_ENDPOINTS:
            raise OpenAIRequestError(
                f"endpoint: {request.endpoint!r} is not supported by this server; supported: "
                + ", ".join(SUPPORTED_ENDPOINTS),
                param="endpoint",
                code="invalid_value",
            )
        if not isinstance(request.input_file_id, str) or not request.input_file_id:
            raise OpenAIRequestError(
                "input_file_id: required", param="input_file_id", code="missing_required_parameter"
            )
        now = now_micros()
        record = OpenAIBatchRecord(
            0,
            openai_batch_id(),
            workspace,
            None,
            request.endpoint,
            request.input_file_id,
            COMPLETION_WINDOW,
            None,
            msgspec.json.encode(metadata) if metadata is not None else None,
            None,
            now,
            None,
            None,
            None,
            None,
        )
        errors: list[dict[str, Any]]
        content = await self.store.file_content(workspace, request.input_file_id)
        file = await self.store.get_file(workspace, request.input_file_id) if content is not None else None
        if content is None or file is None:
            errors = [batch_error("invalid_request", f"Cannot find file {request.input_file_id}.", param="file_id")]
        elif file.purpose != "batch":
            errors = [batch_error("invalid_request", "The input file's purpose must be 'batch'.", param="file_id")]
        else:
            checked = check_input_file(
                content,
                endpoint=request.endpoint,
                max_lines=self.settings.openai_max_file_lines,
                model_is_served=self._serves,
            )
            errors = checked.errors
            if not errors:
                return await self._start(msgspec.structs.replace(record, model=checked.model), checked.items, now)
        failed = msgspec.structs.replace(record, errors=msgspec.json.encode(errors), failed_at=now)
        return batch_object(await self.store.insert_failed_batch(failed))

    def _serves(self, model: str) -> bool:
        try:
            self.router.resolve(model)
        except OvernightError:
            return False
        return True

    async def _start(self, record: OpenAIBatchRecord, items: list[tuple[str, Any]], now: int) -> dict[str, Any]:
        try:
            started = await self.store.insert_batch(
                record,
                items,
                expires_at=now + int(self.settings.batch_ttl_seconds * MICROS),
                max_queued_requests=self.settings.max_queued_requests,
            )
        except QueueFullError as exc:
            raise RateLimitError(
                f"Too many requests waiting in this workspace's queue (limit {exc.limit}); retry later",
                retry_after_seconds=30,
            ) from None
        self.metrics.batches_created += 1
        if self.listener and started.batch_seq is not None:
            try:  # committed: never a 5xx now (the SDK would retry the create), the engine polls anyway
                self.listener.batch_created(started.batch_seq, (), OPENAI)
            except Exception:
                logger.exception("batch %s stored, but the scheduler was not told", record.id)
        return batch_object(started)

    async def retrieve_batch(self, workspace: str, batch_id: str) -> dict[str, Any]:
        return batch_object(await self._batch(workspace, batch_id))

    async def list_batches(self, workspace: str, *, limit: int, after_id: str | None) -> dict[str, Any]:
        try:
            records, has_more = await self.store.list_batches(workspace, limit=limit, after_id=after_id)
        except UnknownCursorError:
            raise OpenAIRequestError(f"No batch with id {after_id!r} to list after", param="after") from None
        return page([batch_object(await self._finalized(record)) for record in records], has_more)

    async def cancel_batch(self, workspace: str, batch_id: str) -> dict[str, Any]:
        record = await self._batch(workspace, batch_id)
        batch = record.batch
        if batch is None or batch.status == ENDED:
            status = batch_object(record)["status"]
            raise OpenAIRequestError(f"Cannot cancel a batch with status '{status}'.", status=409)
        if batch.status == CANCELING:
            return batch_object(record)
        canceled = await self.engine_store.cancel_batch(batch.seq, now_micros())
        if canceled is None:  # it ended (or was canceled) meanwhile: answer from its new state
            return await self.cancel_batch(workspace, batch_id)
        self.metrics.finished(CANCELED, NO_BACKEND, count=canceled.canceled)
        if canceled.status == ENDED:
            self.metrics.batches_ended += 1
        if self.listener:
            self.listener.batch_canceled(batch.seq)
        return batch_object(await self._batch(workspace, batch_id))

    async def _batch(self, workspace: str, batch_id: str) -> OpenAIBatchRecord:
        record = await self.store.get_batch(workspace, batch_id)
        if record is None:
            raise OpenAIRequestError(f"No batch found with id '{batch_id}'.", status=404)
        return await self._finalized(record)

    async def _finalized(self, record: OpenAIBatchRecord) -> OpenAIBatchRecord:
        """The batch with its output and error files written, if the engine has ended it."""
        batch = record.batch
        if batch is None or batch.status != ENDED or record.finalized_at is not None:
            return record
        now = now_micros()

        def make_file(kind: str, size: int) -> FileRecord:
            return FileRecord(
                0,
                file_id(),
                record.workspace,
                "batch_output",
                f"{record.id}_{kind}.jsonl",
                size,
                now,
                now + FILE_TTL_SECONDS * MICROS,
            )

        await self.store.finalize(record, OPENAI_CODEC.derived_line, make_file, now)
        refreshed = await self.store.get_batch(record.workspace, record.id)
        assert refreshed is not None
        return refreshed


def _decode_create(body: bytes | bytearray) -> _CreateBatch:
    try:
        return msgspec.json.decode(body, type=_CreateBatch)
    except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError, RecursionError):
        raise OpenAIRequestError("The request body must be a JSON object.") from None


def _checked_metadata(metadata: Any) -> dict[str, str] | None:
    if metadata is None:
        return None
    if not isinstance(metadata, dict):
        raise OpenAIRequestError("metadata: must be an object", param="metadata", code="invalid_type")
    if len(metadata) > _MAX_METADATA_PAIRS:
        raise OpenAIRequestError(f"metadata: at most {_MAX_METADATA_PAIRS} pairs", param="metadata")
    for key, value in metadata.items():
        if not isinstance(value, str):
            raise OpenAIRequestError(f"metadata.{key}: must be a string", param=f"metadata.{key}", code="invalid_type")
        if len(key) > 64 or len(value) > 512:
            raise OpenAIRequestError(
                f"metadata.{key}: keys are at most 64 characters, values 512", param=f"metadata.{key}"
            )
    return metadata


def _file_not_found(file_id: str) -> OpenAIRequestError:
    error = OpenAIRequestError(f"No such File object: {file_id}", param="id", status=404)
    error.error_type = NotFoundError.error_type
    return error


def file_id() -> str:
    return "file-" + ids.request_id().removeprefix("req_")


def openai_batch_id() -> str:
    return "batch_" + ids.request_id().removeprefix("req_")
