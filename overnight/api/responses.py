"""JSON responses encoded with msgspec (fast, compact, exact)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec
from starlette.responses import Response

_encode = msgspec.json.Encoder().encode


def json_response(body: Any, *, status_code: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    return Response(_encode(body), status_code=status_code, headers=headers, media_type="application/json")
