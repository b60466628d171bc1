"""The HTTP connection layer: uvicorn's httptools protocol with caps on request heads and connections.

httptools buffers a request line and headers without limit or deadline, so a client could pin memory
with a header that never ends. Here the head is fed to the parser only up to `max_head_bytes` (then
431), must be complete within `head_timeout_seconds` (then 408), and connections past
`max_connections` are answered 503 and closed. Answers are in the API's error envelope.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any, ClassVar

import msgspec
from uvicorn.protocols.http.flow_control import HIGH_WATER_LIMIT
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from overnight import ids

logger = logging.getLogger(__name__)

_LINGER_SECONDS = 1.0


@dataclass(frozen=True)
class ConnectionLimits:
    max_head_bytes: int
    head_timeout_seconds: float
    max_connections: int


def guarded_protocol(limits: ConnectionLimits) -> type[asyncio.Protocol]:
    """The protocol class to give uvicorn (`Config(http=...)`), bound to these limits."""
    return type("GuardedHttpToolsProtocol", (_GuardedHttpToolsProtocol,), {"limits": limits})


class _GuardedHttpToolsProtocol(HttpToolsProtocol):
    limits: ClassVar[ConnectionLimits]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._in_head = True
        self._head_bytes = 0
        self._head_timer: asyncio.TimerHandle | None = None
        self._rejected = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.limits.max_connections:
            logger.warning(
                "connection refused: %d open, limit %d", len(self.connections) - 1, self.limits.max_connections
            )
            self._reject(503, "overloaded_error", "Too many open connections; retry shortly", retry_after=True)
            return
        # A connection that sends nothing is closed too, not only one that starts a head and stalls.
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._rejected:
            return  # read and dropped, so that closing does not reset the connection under our answer
        if not self._in_head:
            super().data_received(data)
            return
        if self._head_timer is None:
            self._arm_head_timer()
        room = self.limits.max_head_bytes - self._head_bytes
        if len(data) <= room:
            self._head_bytes += len(data)
            super().data_received(data)
            return
        # Feed only what fits: if the head ends inside it, the rest is body (or a pipelined request).
        self._head_bytes += room
        super().data_received(data[:room])
        if self.transport.is_closing() or self._rejected:
            return
        if self._in_head:
            self._reject(
                431, "request_too_large", f"Request line and headers exceed {self.limits.max_head_bytes} bytes"
            )
            return
        self.data_received(data[room:])

    def send_400_response(self, msg: str) -> None:
        # uvicorn's answer to a request httptools cannot parse, in our envelope instead of plain text.
        self._reject(400, "invalid_request_error", msg)

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._cancel_head_timer()
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        # uvicorn appends each piece to a bytearray and hands the app a bytes copy of it: two copies of
        # every body byte, a create's largest cost after decoding. A piece that arrives while none is
        # waiting is kept as it is instead (`bytes(piece)` is then the piece itself, not a copy).
        cycle = self.cycle
        if cycle.body or cycle.response_complete or (self.parser.should_upgrade() and self._should_upgrade()):
            super().on_body(body)
            return
        cycle.body = body  # type: ignore[assignment]  # read by `receive` as `bytes(cycle.body)`
        if len(body) > HIGH_WATER_LIMIT:
            self.flow.pause_reading()
        cycle.message_event.set()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._in_head = True
        self._head_bytes = 0

    def _arm_head_timer(self) -> None:
        self._cancel_head_timer()
        self._head_timer = self.loop.call_later(self.limits.head_timeout_seconds, self._head_timed_out)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.transport.is_closing() or not self._in_head:
            return
        if self._head_bytes == 0:
            self.transport.close()  # nothing was asked, so nothing to answer
            return
        self._reject(
            408,
            "timeout_error",
            f"Request line and headers did not arrive within {self.limits.head_timeout_seconds:g} s",
        )

    def _reject(self, status: int, error_type: str, message: str, *, retry_after: bool = False) -> None:
        """Answer in the error envelope and close, without involving the app (no request was parsed)."""
        self._cancel_head_timer()
        request_id = ids.request_id()
        body = msgspec.json.encode(
            {"type": "error", "error": {"type": error_type, "message": message}, "request_id": request_id}
        )
        head = [
            STATUS_LINE[status],
            b"content-type: application/json\r\n",
            b"content-length: %d\r\n" % len(body),
            b"request-id: " + request_id.encode() + b"\r\n",
            b"connection: close\r\n",
        ]
        if retry_after:
            head.append(b"retry-after: 1\r\n")
        self.transport.write(b"".join([*head, b"\r\n", body]))
        self._rejected = True
        # Half-close and keep draining a moment: closing with unread input would reset the connection,
        # and the client, still sending, might never see the answer.
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.loop.call_later(_LINGER_SECONDS, self.transport.close)
