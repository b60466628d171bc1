"""Shedding load: beyond a bound on requests in flight, answer 529 at once instead of queueing."""

from __future__ import annotations

from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from overnight.api.errors import error_response
from overnight.exceptions import OverloadedError

# Probes must answer whatever the load, or an orchestrator would restart a server that is only busy.
_EXEMPT_PATHS = frozenset({"/healthz"})


class LoadShedder:
    """At most `limit` HTTP requests handled at once (a streamed response counts until it ends);
    one more is answered `529 overloaded_error` with `retry-after`, which the SDKs retry."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit
        self.in_flight = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in _EXEMPT_PATHS:
            await self.app(scope, receive, send)
            return
        if self.in_flight >= self.limit:
            overloaded = OverloadedError(
                f"The server is handling its maximum of {self.limit} requests; retry shortly",
                retry_after_seconds=1,
            )
            await error_response(Request(scope), overloaded)(scope, receive, send)
            return
        self.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1
