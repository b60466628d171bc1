"""The OpenAI wire objects: FileObject, FileDeleted, Batch and list pages, every key present."""

from __future__ import annotations

from typing import Any

import msgspec

from overnight.store.openai import FileRecord, OpenAIBatchRecord
from overnight.store.records import CANCELING, ENDED, IN_PROGRESS, BatchRecord
from overnight.timestamps import MICROS


def seconds(micros: int | None) -> int | None:
    return None if micros is None else micros // MICROS


def file_object(record: FileRecord) -> dict[str, Any]:
    return {
        "id": record.id,
        "object": "file",
        "bytes": record.bytes,
        "created_at": seconds(record.created_at),
        "filename": record.filename,
        "purpose": record.purpose,
        "status": "processed",
        "expires_at": seconds(record.expires_at),
        "status_details": None,
    }


def file_deleted(file_id: str) -> dict[str, Any]:
    return {"id": file_id, "object": "file", "deleted": True}


def batch_status(record: OpenAIBatchRecord) -> str:
    batch = record.batch
    if record.failed_at is not None:
        return "failed"
    if batch is None:
        return "cancelled" if record.cancelled_at is not None else "validating"
    if batch.status == IN_PROGRESS:
        return "in_progress"
    if batch.status == CANCELING:
        return "cancelling"
    assert batch.status == ENDED
    if record.finalized_at is None:
        return "finalizing"
    if batch.cancel_initiated_at is not None:
        return "cancelled"
    if batch.expired:
        return "expired"
    return "completed"


def batch_object(record: OpenAIBatchRecord) -> dict[str, Any]:
    status = batch_status(record)
    batch = record.batch
    counts = {"total": 0, "completed": 0, "failed": 0}
    if batch is not None:
        counts = {
            "total": batch.total,
            "completed": batch.succeeded,
            "failed": batch.errored + batch.canceled + batch.expired,
        }
    finalized = seconds(record.finalized_at if batch is not None else record.cancelled_at)
    expires_at = record.expires_at if record.expires_at is not None else batch.expires_at if batch else None
    errors = msgspec.json.decode(record.errors) if record.errors else None
    return {
        "id": record.id,
        "object": "batch",
        "endpoint": record.endpoint,
        "model": record.model,
        "errors": {"object": "list", "data": errors} if errors is not None else None,
        "input_file_id": record.input_file_id,
        "completion_window": record.completion_window,
        "status": status,
        "output_file_id": record.output_file_id,
        "error_file_id": record.error_file_id,
        "created_at": seconds(record.created_at),
        # The engine's batch is created when validation enqueues the requests.
        "in_progress_at": seconds(batch.created_at) if batch is not None else None,
        "expires_at": seconds(expires_at),
        "finalizing_at": seconds(batch.ended_at) if batch is not None else None,
        "completed_at": finalized if status == "completed" else None,
        "failed_at": seconds(record.failed_at),
        "expired_at": seconds(batch.ended_at) if batch is not None and status == "expired" else None,
        "cancelling_at": seconds(batch.cancel_initiated_at if batch is not None else record.cancelled_at),
        "cancelled_at": finalized if status == "cancelled" else None,
        "request_counts": counts,
        "usage": _usage(batch) if batch is not None else None,
        "metadata": msgspec.json.decode(record.metadata) if record.metadata else None,
    }


def page(data: list[dict[str, Any]], has_more: bool) -> dict[str, Any]:
    return {
        "object": "list",
        "data": data,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
        "has_more": has_more,
    }


def _usage(batch: BatchRecord) -> dict[str, Any]:
    """The tokens the batch's answers used so far, in OpenAI's terms (cached tokens are part of input)."""
    input_tokens = batch.input_tokens + batch.cache_read_input_tokens + batch.cache_creation_input_tokens
    return {
        "input_tokens": input_tokens,
        "input_tokens_details": {"cached_tokens": batch.cache_read_input_tokens},
        "output_tokens": batch.output_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": input_tokens + batch.output_tokens,
    }
