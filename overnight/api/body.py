"""Reading a request body as it arrives: capped in size, timed out when the client stops sending.

Memory follows what was received, never what `content-length` promises: a client that declares 60 MB
and sends nothing costs nothing but its connection, and that only until the read timeout.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from starlette.requests import ClientDisconnect, Request

from overnight.config import Settings
from overnight.exceptions import RequestTimeoutError, RequestTooLargeError

# After refusing a body we keep reading (and dropping) this much more, so the client, which is
# still sending, gets our 413 instead of a broken connection; a client that pauses this long is done.
_DRAIN_LIMIT_BYTES = 1 << 30
_DRAIN_PAUSE_SECONDS = 1.0


async def read_body(request: Request, settings: Settings) -> bytearray:
    """The body under the server's size cap and read timeout."""
    return await read_capped_body(request, settings.max_body_bytes, settings.body_read_timeout_seconds)


async def read_capped_body(request: Request, limit: int, timeout_seconds: float) -> bytearray:
    """The whole body, or `RequestTooLargeError` past `limit` bytes, or `RequestTimeoutError` when no
    byte arrives for `timeout_seconds`."""
    body = bytearray()
    async for chunk in capped_chunks(request, limit, timeout_seconds):
        body += chunk
    return body


def body_chunks(request: Request, settings: Settings) -> AsyncIterator[bytes]:
    """The body's chunks as they arrive, under the server's size cap and read timeout."""
    return capped_chunks(request, settings.max_body_bytes, settings.body_read_timeout_seconds)


async def capped_chunks(request: Request, limit: int, timeout_seconds: float) -> AsyncIterator[bytes]:
    """The body's chunks as they arrive, under the same cap and read timeout as `read_capped_body`."""
    declared = declared_length(request)
    if declared is not None and declared > limit:
        await _drain(request, timeout_seconds)
        raise _too_large(limit)
    received = 0
    async for chunk in _chunks(request, timeout_seconds):
        received += len(chunk)
        if received > limit:
            await _drain(request, timeout_seconds)
            raise _too_large(limit)
        yield chunk


def declared_length(request: Request) -> int | None:
    """The body's `content-length`, when the client declared one."""
    declared = request.headers.get("content-length")
    return int(declared) if declared is not None and declared.isdigit() else None


def raw_chunks(request: Request, timeout_seconds: float) -> AsyncIterator[bytes]:
    """The body's chunks as they arrive, each awaited for at most `timeout_seconds` (else
    `RequestTimeoutError`), for a handler that consumes a body without holding it."""
    return _chunks(request, timeout_seconds)


async def drain(request: Request, timeout_seconds: float) -> None:
    """Read and drop what the client still sends (bounded), so that it gets our error response instead of
    a connection reset mid-upload."""
    await _drain(request, timeout_seconds)


async def _chunks(request: Request, timeout_seconds: float) -> AsyncIterator[bytes]:
    """The body's chunks, each awaited for at most `timeout_seconds`."""
    receive = request.receive
    while True:
        try:
            async with asyncio.timeout(timeout_seconds):
                message = await receive()
        except TimeoutError:
            raise RequestTimeoutError(
                f"The request body did not arrive in time (no data for {timeout_seconds:g} s)"
            ) from None
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
        chunk = message.get("body", b"")
        if chunk:
            yield chunk
        if not message.get("more_body", False):
            return


def _too_large(limit: int) -> RequestTooLargeError:
    return RequestTooLargeError(f"Request body exceeds the maximum size of {limit} bytes")


async def _drain(request: Request, timeout_seconds: float) -> None:
    drained = 0
    try:
        async for chunk in _chunks(request, min(timeout_seconds, _DRAIN_PAUSE_SECONDS)):
            drained += len(chunk)
            if drained > _DRAIN_LIMIT_BYTES:
                return
    except (RequestTimeoutError, ClientDisconnect):
        return
