"""Reading a request body under a size cap, without holding more than one copy of it."""

from __future__ import annotations

from starlette.requests import Request

from overnight.exceptions import RequestTooLargeError

# After refusing a body we keep reading (and dropping) this much more, so the client, which is
# still sending, gets our 413 instead of a broken connection.
_DRAIN_LIMIT_BYTES = 1 << 30


async def read_capped_body(request: Request, limit: int) -> bytearray:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit():
        size = int(declared)
        if size > limit:
            await _drain(request)
            raise _too_large(limit)
        body = bytearray(size)
        view = memoryview(body)
        filled = 0
        async for chunk in request.stream():
            end = filled + len(chunk)
            if end > size:
                raise RequestTooLargeError("Request body is longer than its content-length")
            view[filled:end] = chunk
            filled = end
        view.release()
        del body[filled:]
        return body
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            await _drain(request)
            raise _too_large(limit)
    return body


def _too_large(limit: int) -> RequestTooLargeError:
    return RequestTooLargeError(f"Request body exceeds the maximum size of {limit} bytes")


async def _drain(request: Request) -> None:
    drained = 0
    async for chunk in request.stream():
        drained += len(chunk)
        if drained > _DRAIN_LIMIT_BYTES:
            return
