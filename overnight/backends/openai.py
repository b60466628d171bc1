"""Any OpenAI-compatible chat-completions server (`POST {base_url}/v1/chat/completions`) as a backend.

vLLM, llama.cpp's server, llama-cpp-python's server, Ollama, LM Studio, OpenAI itself: the request
is translated faithfully (`openai_translation`), sent once, and the completion translated back.
Refusals happen before any network traffic; upstream failures map as for the Anthropic backend.
"""

from __future__ import annotations

from overnight.backends.openai_translation import from_chat_completion, to_chat_completion
from overnight.backends.upstream_http import UpstreamClient, endpoint
from overnight.exceptions import ApiError
from overnight.protocol.messages import MessageCreateParams
from overnight.protocol.openai.chat import NATIVE_COMPLETION, native_body
from overnight.protocol.results import Message


class OpenAIBackend:
    def __init__(
        self,
        *,
        base_url: str,
        api_key: str | None = None,
        upstream_model: str | None = None,
        timeout_seconds: float = 600.0,
        max_concurrency: int | None = None,
        max_concurrency_scope: str = "node",
        name: str = "openai",
    ) -> None:
        self.name = name
        self.max_concurrency = max_concurrency
        self.max_concurrency_scope = max_concurrency_scope
        self.upstream_model = upstream_model
        self._url = endpoint(base_url, "chat/completions")
        self._headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = UpstreamClient(name=name, timeout_seconds=timeout_seconds, max_concurrency=max_concurrency)

    async def create_message(self, params: MessageCreateParams) -> Message:
        native = native_body(params)
        if native is not None:
            # A chat-completions request (OpenAI-format batch or `/v1/chat/completions`): sent as the
            # client wrote it, and its completion kept for the answer, not translated there and back.
            body = {**native, "model": self.upstream_model} if self.upstream_model else dict(native)
            if "max_completion_tokens" in body and "max_tokens" not in body:
                # Servers that predate the newer name (llama-cpp-python's) ignore it and run to their own
                # limit; vLLM and llama.cpp take both, so the cap is sent under both names.
                body["max_tokens"] = body["max_completion_tokens"]
            data = await self._client.post_json(self._url, body=body, headers=self._headers)
            message = from_chat_completion(data, params)
            message[NATIVE_COMPLETION] = data
            return message
        body = to_chat_completion(params, model=self.upstream_model)
        data = await self._client.post_json(self._url, body=body, headers=self._headers)
        return from_chat_completion(data, params)

    async def start(self) -> None:
        return None

    async def count_tokens(self, params: MessageCreateParams) -> int:
        """Chat-completions servers have no counting endpoint: ask for one token and read the usage."""
        body = to_chat_completion(params.model_copy(update={"max_tokens": 1}), model=self.upstream_model)
        data = await self._client.post_json(self._url, body=body, headers=self._headers)
        usage = data.get("usage")
        tokens = usage.get("prompt_tokens") if isinstance(usage, dict) else None
        if not isinstance(tokens, int):
            raise ApiError(f"{self.name} reported no prompt_tokens usage, so tokens cannot be counted")
        return tokens

    async def aclose(self) -> None:
        await self._client.aclose()
