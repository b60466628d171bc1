"""API keys → workspaces, and the per-workspace rate limit on batch endpoints."""

from __future__ import annotations

import hmac
import time
from collections import deque
from collections.abc import Mapping

from starlette.requests import Request

from overnight.config import DEFAULT_WORKSPACE, Settings
from overnight.exceptions import AuthenticationError, PermissionDeniedError, RateLimitError


def api_key_of(request: Request) -> str | None:
    key = request.headers.get("x-api-key")
    if key:
        return key
    authorization = request.headers.get("authorization", "")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return None


def authenticate(request: Request, settings: Settings) -> str:
    """The caller's workspace; in open mode (no keys configured) everyone shares the default one."""
    if settings.open_mode:
        return DEFAULT_WORKSPACE
    key = api_key_of(request)
    if key is None:
        raise AuthenticationError("x-api-key header is required")
    workspace = _workspace_of(key, settings.api_keys)
    if workspace is None:
        raise AuthenticationError("invalid x-api-key")
    asked = request.headers.get("anthropic-workspace-id")
    if asked is not None and asked != workspace:
        raise PermissionDeniedError(f"This API key does not belong to workspace {asked!r}")
    return workspace


def _workspace_of(key: str, api_keys: Mapping[str, str]) -> str | None:
    """The key's workspace, compared against every configured key in constant time (no dict lookup,
    no early exit), so response timing tells nothing about how much of a guess was right."""
    given = key.encode()
    found = None
    for candidate, workspace in api_keys.items():
        if hmac.compare_digest(candidate.encode(), given):
            found = workspace
    return found


class RateLimiter:
    """At most `per_minute` calls per workspace in any sliding 60-second window."""

    def __init__(self, per_minute: int) -> None:
        self.per_minute = per_minute
        self._calls: dict[str, deque[float]] = {}

    def check(self, workspace: str) -> None:
        if self.per_minute <= 0:
            return
        now = time.monotonic()
        calls = self._calls.setdefault(workspace, deque())
        while calls and calls[0] <= now - 60:
            calls.popleft()
        if len(calls) >= self.per_minute:
            retry_after = 60 - (now - calls[0])
            raise RateLimitError(
                f"Rate limit of {self.per_minute} requests per minute exceeded for this workspace",
                retry_after_seconds=retry_after,
            )
        calls.append(now)
