"""Forward each request to an upstream Anthropic Messages API (`POST {base_url}/v1/messages`).

The params go out as the client sent them (`forwardable()`, `stream: false`), and the upstream's
Message comes back unchanged except for two documented touches:

- `usage.service_tier` becomes `"batch"`: the client receives the Message as a batch result, and the
  real Batches API reports that tier there.
- When this backend renames the model upstream (`upstream_model`), the Message's `model` echoes the
  name the client asked for, so results are attributable to the request's own model. Without a rename
  the upstream's value is kept (the real API may resolve an alias to a dated name; so may we).
"""

from __future__ import annotations

from overnight.backends.upstream_http import UpstreamClient, endpoint
from overnight.exceptions import ApiError
from overnight.protocol.messages import MessageCreateParams
from overnight.protocol.results import Message

ANTHROPIC_VERSION = "2023-06-01"
# What the upstream's count_tokens takes: the prompt, not the sampling options.
_COUNT_TOKENS_KEYS = {
    "model",
    "messages",
    "system",
    "tools",
    "tool_choice",
    "thinking",
    "mcp_servers",
    "context_management",
    "output_config",
    "output_format",
    "cache_control",
}


class AnthropicBackend:
    def __init__(
        self,
        *,
        base_url: str = "https://api.anthropic.com",
        api_key: str | None = None,
        upstream_model: str | None = None,
        timeout_seconds: float = 600.0,
        max_concurrency: int | None = None,
        max_concurrency_scope: str = "node",
        name: str = "anthropic",
    ) -> None:
        self.name = name
        self.max_concurrency = max_concurrency
        self.max_concurrency_scope = max_concurrency_scope
        self.upstream_model = upstream_model
        self._url = endpoint(base_url, "messages")
        self._count_url = endpoint(base_url, "messages/count_tokens")
        self._api_key = api_key
        self._client = UpstreamClient(name=name, timeout_seconds=timeout_seconds, max_concurrency=max_concurrency)

    async def start(self) -> None:
        return None

    def _headers(self, params: MessageCreateParams) -> dict[str, str]:
        headers = {"anthropic-version": ANTHROPIC_VERSION}
        if self._api_key:
            headers["x-api-key"] = self._api_key
        if params.betas:
            headers["anthropic-beta"] = ",".join(params.betas)
        return headers

    async def count_tokens(self, params: MessageCreateParams) -> int:
        body = {key: value for key, value in params.forwardable().items() if key in _COUNT_TOKENS_KEYS}
        if self.upstream_model is not None:
            body["model"] = self.upstream_model
        result = await self._client.post_json(self._count_url, body=body, headers=self._headers(params))
        tokens = result.get("input_tokens")
        if not isinstance(tokens, int):
            raise ApiError(f"{self.name} answered count_tokens without an integer input_tokens")
        return tokens

    async def create_message(self, params: MessageCreateParams) -> Message:
        body = params.forwardable()
        body["stream"] = False
        if self.upstream_model is not None:
            body["model"] = self.upstream_model
        headers = self._headers(params)
        result = await self._client.post_json(self._url, body=body, headers=headers)
        if result.get("type") != "message":
            raise ApiError(f"{self.name} answered with a {result.get('type')!r} object, not a message")
        if self.upstream_model is not None:
            result["model"] = params.model
        usage = result.get("usage")
        if isinstance(usage, dict):
            usage["service_tier"] = "batch"
        return result

    async def aclose(self) -> None:
        await self._client.aclose()
