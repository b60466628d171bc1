"""Message Batches wire shapes: the create envelope (decoded lazily) and the MessageBatch object."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from itertools import chain
from typing import Annotated, Any

import msgspec

from overnight.exceptions import InvalidRequestError
from overnight.protocol.decoding import decode_json
from overnight.protocol.pages import page_object
from overnight.store.records import ENDED, BatchRecord
from overnight.timestamps import to_rfc3339

# Checked by msgspec while decoding, in C; `\Z`, since `$` would also accept a trailing newline.
CustomId = Annotated[str, msgspec.Meta(pattern=r"^[a-zA-Z0-9_-]{1,64}\Z")]
_OPEN_BRACE = ord("{")


class BatchRequestEnvelope(msgspec.Struct, gc=False):  # untracked: 100,000 of them must not feed the GC
    custom_id: CustomId
    # Kept as the raw bytes the client sent: validated per request by the engine, never re-encoded.
    params: msgspec.Raw


class CreateBatchBody(msgspec.Struct):
    requests: list[BatchRequestEnvelope]


_decode_create = msgspec.json.Decoder(CreateBatchBody).decode


def decode_create_body(body: bytes | bytearray, *, max_requests: int) -> list[tuple[str, msgspec.Raw]]:
    """Check the envelope only: 1..max_requests objects with unique valid custom_ids and object params.

    Returns (custom_id, params) pairs; the params are `msgspec.Raw` views into `body`, not copies,
    which the store writes as they are (they support the buffer protocol).
    """
    decoded = decode_json(_decode_create, body)
    items = [(request.custom_id, request.params) for request in decoded.requests]
    check_requests(items, max_requests=max_requests)
    return items


def check_requests(items: Sequence[tuple[str, msgspec.Raw]], *, max_requests: int, earlier: Sequence[str] = ()) -> None:
    """The envelope's rules for a batch's decoded requests: `InvalidRequestError` for the first one broken.

    `items` may follow requests checked already (`earlier`: their custom_ids, in order, unique, each
    with object params); the error then reads as it would for the whole list.
    """
    count = len(earlier) + len(items)
    if count == 0:
        raise InvalidRequestError("requests: must contain at least one request")
    if count > max_requests:
        raise InvalidRequestError(f"requests: a batch holds at most {max_requests} requests, got {count}")
    custom_ids = [custom_id for custom_id, _ in items]
    if len(set(chain(earlier, custom_ids))) != count:
        raise InvalidRequestError(_duplicate_custom_id(chain(earlier, custom_ids)))
    for index, (_, params) in enumerate(items, len(earlier)):
        # Raw spans exactly the value, so an object starts with `{`. The view is dropped at once: kept,
        # 100,000 tracked memoryviews would cost more in garbage collection than the whole check.
        if memoryview(params)[0] != _OPEN_BRACE:
            raise InvalidRequestError(f"requests.{index}.params: must be an object")


def _duplicate_custom_id(custom_ids: Iterable[str]) -> str:
    seen: dict[str, int] = {}
    for index, custom_id in enumerate(custom_ids):
        if custom_id in seen:
            return f"requests.{index}.custom_id: {custom_id!r} is not unique (also at requests.{seen[custom_id]})"
        seen[custom_id] = index
    raise AssertionError("no duplicate custom_id")


def batch_object(record: BatchRecord, public_base_url: str) -> dict[str, Any]:
    """The MessageBatch object, every key present; `results_url` only once ended and not archived."""
    results_url = None
    if record.status == ENDED and record.archived_at is None:
        results_url = f"{public_base_url}/v1/messages/batches/{record.id}/results"
    return {
        "id": record.id,
        "type": "message_batch",
        "processing_status": record.status,
        "request_counts": {
            "processing": record.processing,
            "succeeded": record.succeeded,
            "errored": record.errored,
            "canceled": record.canceled,
            "expired": record.expired,
        },
        "created_at": to_rfc3339(record.created_at),
        "expires_at": to_rfc3339(record.expires_at),
        "ended_at": to_rfc3339(record.ended_at),
        "cancel_initiated_at": to_rfc3339(record.cancel_initiated_at),
        "archived_at": to_rfc3339(record.archived_at),
        "results_url": results_url,
    }


def batch_page(records: list[BatchRecord], has_more: bool, public_base_url: str) -> dict[str, Any]:
    return page_object([batch_object(record, public_base_url) for record in records], has_more)


def deleted_object(batch_id: str) -> dict[str, Any]:
    return {"id": batch_id, "type": "message_batch_deleted"}
