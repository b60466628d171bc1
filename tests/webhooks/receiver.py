"""A real webhook receiver for the tests: an aiohttp server on 127.0.0.1, on a thread of its own (so
that tests may block on the sync SDK meanwhile), recording every POST it gets."""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass, field

from aiohttp import web


@dataclass(frozen=True)
class Received:
    headers: dict[str, str]
    body: bytes
    at: float = field(default_factory=time.monotonic)


class Receiver:
    """Answers `status` (default 204), except `fail_first` POSTs, which get 500, and `hang_first`, which
    get no answer until the receiver stops."""

    def __init__(self, *, fail_first: int = 0, status: int = 204, hang_first: int = 0) -> None:
        self.fail_first = fail_first
        self.hang_first = hang_first
        self.status = status
        self.received: list[Received] = []
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._runner: web.AppRunner | None = None
        self._stopping: asyncio.Event | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/overnight"

    def __enter__(self) -> Receiver:
        started = threading.Event()
        threading.Thread(target=self._serve, args=(started,), name="webhook-receiver", daemon=True).start()
        assert started.wait(10), "the receiver did not start"
        return self

    def __exit__(self, *exc_info: object) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)

    def _serve(self, started: threading.Event) -> None:
        asyncio.set_event_loop(self._loop)
        self._stopping = asyncio.Event()
        app = web.Application()
        app.router.add_post("/hooks/overnight", self._handle)
        self._runner = web.AppRunner(app)
        self._loop.run_until_complete(self._runner.setup())
        site = web.TCPSite(self._runner, "127.0.0.1", 0)  # the OS picks the port while binding: no race
        self._loop.run_until_complete(site.start())
        self.port = self._runner.addresses[0][1]
        started.set()
        self._loop.run_forever()

    async def _stop(self) -> None:
        assert self._stopping is not None
        self._stopping.set()
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        with self._lock:
            self.received.append(Received(dict(request.headers), body))
            failing = len(self.received) <= self.fail_first
            hanging = len(self.received) <= self.hang_first
        if hanging:
            assert self._stopping is not None
            await self._stopping.wait()
        return web.Response(status=500 if failing else self.status)

    def wait_for(self, count: int, timeout: float = 20.0) -> list[Received]:
        """The first `count` POSTs, once they have arrived."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if len(self.received) >= count:
                    return list(self.received[:count])
            time.sleep(0.05)
        raise AssertionError(f"expected {count} webhook POSTs within {timeout}s, got {len(self.received)}")

    def count(self) -> int:
        with self._lock:
            return len(self.received)
