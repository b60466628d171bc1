"""A capacity-limited Anthropic Messages upstream: C slots, L ms per call, a queue in front.

    python -m bench._upstream --port 8123 --slots 32 --latency-ms 50

`POST /v1/messages` reads the JSON request, waits for one of C slots (an asyncio.Semaphore: excess
calls queue), holds it L ms, and answers a valid Message (`end_turn`, a short text, usage). So at
most C/L calls per second get through, whoever the client is: the benchmark compares how close each
client gets to that. `GET /stats` reports calls served, the most slots ever busy at once, and
slot-seconds busy; `GET /healthz` answers once ready.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import time

import msgspec
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

_encode = msgspec.json.Encoder().encode


class Upstream:
    def __init__(self, slots: int, latency_seconds: float) -> None:
        self.slots = slots
        self.latency_seconds = latency_seconds
        self.semaphore = asyncio.Semaphore(slots)
        self.calls = 0
        self.active = 0
        self.max_active = 0
        self.busy_seconds = 0.0
        self._ids = itertools.count()

    async def messages(self, request: Request) -> Response:
        params = msgspec.json.decode(await request.body())
        async with self.semaphore:
            self.active += 1
            self.max_active = max(self.max_active, self.active)
            start = time.perf_counter()
            await asyncio.sleep(self.latency_seconds)
            self.busy_seconds += time.perf_counter() - start
            self.active -= 1
        self.calls += 1
        message = {
            "id": f"msg_bench{next(self._ids):020d}",
            "type": "message",
            "role": "assistant",
            "model": params.get("model", "unknown"),
            "content": [{"type": "text", "text": "Hello from the capacity-limited upstream.", "citations": None}],
            "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": {
                "input_tokens": 12,
                "output_tokens": 8,
                "cache_creation_input_tokens": None,
                "cache_read_input_tokens": None,
                "service_tier": "standard",
            },
        }
        return Response(_encode(message), media_type="application/json")

    async def stats(self, request: Request) -> Response:
        return Response(
            _encode({"calls": self.calls, "max_active": self.max_active, "busy_slot_seconds": self.busy_seconds}),
            media_type="application/json",
        )

    async def health(self, request: Request) -> Response:
        return Response(b'{"status":"ok"}', media_type="application/json")


def app(slots: int, latency_seconds: float) -> Starlette:
    upstream = Upstream(slots, latency_seconds)
    return Starlette(
        routes=[
            Route("/v1/messages", upstream.messages, methods=["POST"]),
            Route("/stats", upstream.stats, methods=["GET"]),
            Route("/healthz", upstream.health, methods=["GET"]),
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--slots", type=int, default=32)
    parser.add_argument("--latency-ms", type=float, default=50.0)
    args = parser.parse_args()
    uvicorn.run(
        app(args.slots, args.latency_ms / 1000),
        host="127.0.0.1",
        port=args.port,
        loop="uvloop",
        http="httptools",
        log_level="warning",
        access_log=False,
        backlog=4096,
        # Long keep-alive, as real APIs have: uvicorn's 5 s default races with pooled clients reusing a
        # connection just as the server closes it (a ReadError on a POST, which nobody retries).
        timeout_keep_alive=120,
    )


if __name__ == "__main__":
    main()
