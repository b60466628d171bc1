"""`GET /metrics` and the middleware that counts every HTTP request by route template and status."""

from __future__ import annotations

import logging

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from overnight.api.context import context_of
from overnight.metrics import CONTENT_TYPE, Metrics
from overnight.store import StoreUnavailableError

logger = logging.getLogger(__name__)

# Anything else a client sends as a method is counted as `other`, so labels stay few whatever arrives.
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
UNMATCHED = ""
"""The `route` label of a request no route matched (404): never the raw path, which clients choose."""


async def metrics_endpoint(request: Request) -> Response:
    """Unauthenticated, like /healthz: it shows counts, never keys, prompts or results."""
    context = context_of(request)
    try:
        context.metrics.queue = await context.batches.queue_counts()
    except StoreUnavailableError as exc:
        # Still answer, so that the other metrics (and the outage) stay visible; the queue is left out.
        logger.warning("metrics: the database is unavailable, queue sizes left out (%s)", exc)
        context.metrics.queue = None
    return Response(context.metrics.render(), media_type=CONTENT_TYPE)


class MetricsMiddleware:
    """Counts each response by method, the matched route's template (`/v1/messages/batches/{batch_id}`)
    and status."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 0

        async def send_counted(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_counted)
        except Exception:
            status = status or 500  # it goes on to Starlette's outermost handler, which answers 500
            raise
        finally:
            if status:  # else the client went away before any answer
                method = scope["method"] if scope["method"] in _METHODS else "other"
                self.metrics.http_request(method, getattr(scope.get("route"), "path", UNMATCHED), status)
