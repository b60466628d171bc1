"""A real HTTP upstream (uvicorn + starlette on 127.0.0.1) that answers what the test scripts.

This is a failure-injecting upstream, used deliberately: the error mapping of the HTTP backends is
about what happens when a real upstream says 429 with `retry-after`, 529, 500, 413 or answers too
slowly, and no well-behaved peer can be made to do that on demand. Everything between the backend and
this server is real (aiohttp, TCP, HTTP/1.1, JSON). The success path is tested against real peers
elsewhere wherever one exists (llama-cpp-python's server for the OpenAI backend).

Each request is recorded (path, headers, JSON body); each reply is the next queued `Reply`, or a 500
saying nothing was queued.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route


@dataclass
class Reply:
    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    raw: bytes | None = None  # sent as-is instead of `body` as JSON
    delay_seconds: float = 0.0


@dataclass
class Recorded:
    path: str
    headers: dict[str, str]
    body: Any


class ScriptedUpstream:
    def __init__(self) -> None:
        self.replies: list[Reply] = []
        self.requests: list[Recorded] = []
        self._lock = threading.Lock()
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self.base_url = ""
        paths = ["/v1/messages", "/v1/chat/completions"]
        self.app = Starlette(routes=[Route(path, self._handle, methods=["POST"]) for path in paths])

    def queue(self, *replies: Reply) -> None:
        with self._lock:
            self.replies.extend(replies)

    def reset(self) -> None:
        with self._lock:
            self.replies.clear()
            self.requests.clear()

    async def _handle(self, request: Request) -> Response:
        body = json.loads(await request.body() or b"null")
        with self._lock:
            self.requests.append(Recorded(request.url.path, dict(request.headers), body))
            reply = self.replies.pop(0) if self.replies else Reply(500, {"error": "no reply queued"})
        if reply.delay_seconds:
            await asyncio.sleep(reply.delay_seconds)
        content = reply.raw if reply.raw is not None else json.dumps(reply.body).encode()
        media_type = "application/json" if reply.raw is None else "text/plain"
        return Response(content, status_code=reply.status, headers=reply.headers, media_type=media_type)

    def start(self) -> ScriptedUpstream:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self.base_url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        config = uvicorn.Config(
            self.app, log_level="warning", lifespan="off", timeout_graceful_shutdown=1, loop="asyncio"
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]}, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the scripted upstream did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(timeout=10)
