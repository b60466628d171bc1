"""The one interface every model backend implements.

A backend translates and calls; it knows nothing of batches, SQL, retries or routing. The engine owns
retries, backoff and concurrency caps. Failures are raised as `overnight.exceptions` classes:

- `InvalidRequestError` — the request can never succeed here (bad params, a feature this backend
  cannot express: the message names it). Permanent.
- `NotFoundError` — the model is unknown upstream. Permanent.
- `RateLimitError` (429), `OverloadedError` (529), `ApiError` / `UpstreamTimeoutError` (5xx,
  timeouts, connection errors) — retryable; set `retry_after_seconds` when the upstream says.
- `AuthenticationError` / `PermissionDeniedError` — permanent.
"""

from __future__ import annotations

from typing import Protocol

from overnight.protocol.messages import MessageCreateParams
from overnight.protocol.results import Message


class Backend(Protocol):
    name: str
    """Short name used in logs and metrics, e.g. `fake`, `local`, `anthropic:vllm`."""

    max_concurrency: int | None
    """How many calls this backend takes at once (None: only the engine's own limit applies)."""

    max_concurrency_scope: str
    """`node`: `max_concurrency` is each node's own cap; `cluster`: the live workers split it between
    them (an upstream's rate limit belongs to one API key, however many nodes call it)."""

    async def start(self) -> None:
        """Load models or check connections before the first request (may do nothing)."""
        ...

    async def create_message(self, params: MessageCreateParams) -> Message:
        """Run one non-streaming Messages request and return the complete Message.

        Called concurrently from many tasks on the event loop: a blocking backend must move its work
        off the loop itself. Raise `overnight.exceptions` errors, never vendor exceptions.
        """
        ...

    async def count_tokens(self, params: MessageCreateParams) -> int:
        """The input tokens `params` would use on this backend (`/v1/messages/count_tokens`)."""
        ...

    async def aclose(self) -> None:
        """Release connections, threads and models."""
        ...
