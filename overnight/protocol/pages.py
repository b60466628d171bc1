"""The list page every list endpoint answers with (batches, models)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


def page_object(data: Sequence[Mapping[str, Any]], has_more: bool) -> dict[str, Any]:
    """`{data, has_more, first_id, last_id}`; the ids are those of the first and last objects, null when empty."""
    return {
        "data": list(data),
        "has_more": has_more,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
    }
