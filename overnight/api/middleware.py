"""A `request-id` on every response, errors and unknown paths included."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from overnight import ids


class RequestIdMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = ids.request_id()
        scope["overnight.request_id"] = request_id
        header = (b"request-id", request_id.encode())
        # The OpenAI SDK reads the request id from `x-request-id`.
        openai_header = (b"x-request-id", request_id.encode())

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                if not any(name.lower() == b"request-id" for name, _ in headers):
                    headers.append(header)
                if not any(name.lower() == b"x-request-id" for name, _ in headers):
                    headers.append(openai_header)
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_id)
