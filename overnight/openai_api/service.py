"""What the OpenAI Files and Batches APIs do: the API's decisions over the shared store and engine.

An OpenAI batch is an engine batch in the `openai` format (same scheduler, leases, retries, expiry and
recovery as an Anthropic one) plus a row of what only this API has. Create stores a `validating` row
and answers at once; a validator on a node that runs the engine checks the input file line by line and
enqueues it (`in_progress`) or fails it with one error per bad line (`failed`), see `validation.py`.
Once the engine has ended it, the first read writes the output and error files (`finalizing` →
`completed` / `cancelled` / `expired`), exactly once across nodes.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import msgspec

from overnight import ids
from overnight.config import Settings
from overnight.engine.calls import BackendRouter
from overnight.exceptions import NotFoundError, OvernightError
from overnight.metrics import NO_BACKEND, Metrics
from overnight.openai_api.errors import OpenAIRequestError
from overnight.openai_api.input_file import batch_error
from overnight.openai_api.objects import batch_object, batch_status, file_deleted, file_object, page
from overnight.openai_api.upload import Upload
from overnight.openai_api.validation import Validator, file_not_found
from overnight.protocol.codecs import OPENAI_CODEC
from overnight.service import WorkListener
from overnight.store import BatchRecord, Store, UnknownCursorError
from overnight.store.openai import FileRecord, OpenAIBatchRecord, OpenAIStore
from overnight.store.records import CANCELED, ENDED, OPENAI
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
        # Only where the engine runs: a validated batch's requests are taken up by this node's scheduler.
        self.validator = (
            Validator(self.store, settings, model_is_served=self._serves, on_started=self._started)
            if listener is not None
            else None
        )

    async def start(self) -> None:
        if self.validator is not None:
            await self.validator.start()

    async def stop(self) -> None:
        if self.validator is not None:
            await self.validator.stop()

    # --- files --------------------------------------------------------------------------------

    async def upload(self, workspace: str, upload: Upload) -> dict[str, Any]:
        if upload.too_large:  # first: the parts after the file were never read
            raise OpenAIRequestError("File is too large.", param="file")
        if upload.purpose is None:
            raise OpenAIRequestError("purpose: required", param="purpose", code="missing_required_parameter")
        if upload.filename is None:
            raise OpenAIRequestError("file: a file part is required", param="file", code="missing_required_parameter")
        if upload.purpose != "batch":
            raise OpenAIRequestError(
                f"purpose: only 'batch' is supported by this server, got {upload.purpose!r}",
                param="purpose",
                code="invalid_value",
            )
        if not upload.filename.endswith(".jsonl"):
            raise OpenAIRequestError("Invalid file format for Batch API. Must be .jsonl", param="file")
        ttl_seconds = _expires_after(upload.fields)
        now = now_micros()
        record = FileRecord(
            0, file_id(), workspace, upload.purpose, upload.filename[:512], upload.size, now, now + ttl_seconds * MICROS
        )
        return file_object(await self.store.insert_file(record, upload.content))

    async def retrieve_file(self, workspace: str, file_id: str) -> dict[str, Any]:
        return file_object(await self._file(workspace, file_id))

    async def file_content(self, workspace: str, file_id: str) -> tuple[int, AsyncIterator[bytes]]:
        """The file's size and its bytes, streamed."""
        found = await self.store.file_content(workspace, file_id)
        if found is None:
            raise _file_not_found(file_id)  # or its batch's results were archived
        record, chunks = found
        return record.bytes, chunks

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
        """A `validating` batch, answered at once (the file is checked in the background), or a `failed`
        one when the input file does not exist or is not a batch file."""
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
            id=openai_batch_id(),
            workspace=workspace,
            endpoint=request.endpoint,
            input_file_id=request.input_file_id,
            completion_window=COMPLETION_WINDOW,
            metadata=msgspec.json.encode(metadata) if metadata is not None else None,
            created_at=now,
            expires_at=now + int(self.settings.batch_ttl_seconds * MICROS),
        )
        file = await self.store.get_file(workspace, request.input_file_id)
        errors = None
        if file is None:
            errors = [file_not_found(request.input_file_id)]
        elif file.purpose != "batch":
            errors = [batch_error("invalid_request", "The input file's purpose must be 'batch'.", param="file_id")]
        if errors is not None:
            record = msgspec.structs.replace(record, errors=msgspec.json.encode(errors), failed_at=now)
        created = await self.store.insert_batch(record)
        if self.validator is not None and errors is None:
            self.validator.wake()
        return batch_object(created)

    def _serves(self, model: str) -> bool:
        try:
            self.router.resolve(model)
        except OvernightError:
            return False
        return True

    def _started(self, batch: BatchRecord) -> None:
        """A validator enqueued a batch's requests: this node's scheduler may lease them now."""
        self.metrics.batches_created += 1
        if self.listener is not None:
            self.listener.batch_created(batch.seq, (), OPENAI)

    async def retrieve_batch(self, workspace: str, batch_id: str) -> dict[str, Any]:
        return batch_object(await self._batch(workspace, batch_id))

    async def list_batches(self, workspace: str, *, limit: int, after_id: str | None) -> dict[str, Any]:
        try:
            records, has_more = await self.store.list_batches(workspace, limit=limit, after_id=after_id)
        except UnknownCursorError:
            raise OpenAIRequestError(f"No batch with id {after_id!r} to list after", param="after") from None
        return page([batch_object(await self._finalized(record)) for record in records], has_more)

    async def cancel_batch(self, workspace: str, batch_id: str) -> dict[str, Any]:
        while True:
            record = await self._batch(workspace, batch_id)
            status = batch_status(record)
            if status in ("cancelling", "cancelled"):
                return batch_object(record)
            if status == "validating":
                if await self.store.cancel_validating(record.seq, now_micros()):
                    return await self.retrieve_batch(workspace, batch_id)
                continue  # validated (or failed) meanwhile: answer from its new state
            batch = record.batch
            if batch is None or batch.status == ENDED:
                raise OpenAIRequestError(f"Cannot cancel a batch with status '{status}'.", status=409)
            canceled = await self.engine_store.cancel_batch(batch.seq, now_micros())
            if canceled is None:  # it ended (or was canceled) meanwhile: answer from its new state
                continue
            self.metrics.finished(CANCELED, NO_BACKEND, count=canceled.canceled)
            if canceled.status == ENDED:
                self.metrics.batches_ended += 1
            if self.listener:
                self.listener.batch_canceled(batch.seq)
            return await self.retrieve_batch(workspace, batch_id)

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


def _expires_after(fields: dict[str, str]) -> int:
    """The file's lifetime in seconds: `expires_after[seconds]` (anchored at `created_at`), or 30 days."""
    anchor, seconds = fields.get("expires_after[anchor]"), fields.get("expires_after[seconds]")
    if anchor is None and seconds is None:
        return FILE_TTL_SECONDS
    if anchor != "created_at":
        raise OpenAIRequestError(
            "expires_after[anchor]: must be 'created_at'", param="expires_after.anchor", code="invalid_value"
        )
    if seconds is None or not seconds.isdigit() or not 3600 <= int(seconds) <= 2_592_000:
        raise OpenAIRequestError(
            "expires_after[seconds]: must be an integer between 3600 and 2592000",
            param="expires_after.seconds",
            code="invalid_value",
        )
    return int(seconds)


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
    return "file-" + ids.random_part()


def openai_batch_id() -> str:
    return "batch_" + ids.random_part()
