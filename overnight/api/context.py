"""What handlers share, built once at start-up and kept on `app.state.context`."""

from __future__ import annotations

from dataclasses import dataclass

from starlette.requests import Request

from overnight.api.auth import RateLimiter, authenticate
from overnight.config import Settings
from overnight.engine.calls import BackendCaller, BackendRouter
from overnight.exceptions import InvalidRequestError
from overnight.metrics import Metrics
from overnight.openai_api.service import OpenAIService
from overnight.service import BatchService


@dataclass(frozen=True)
class Context:
    settings: Settings
    batches: BatchService
    rate_limiter: RateLimiter
    caller: BackendCaller
    router: BackendRouter
    started_at: int
    metrics: Metrics
    openai: OpenAIService


def context_of(request: Request) -> Context:
    return request.app.state.context  # type: ignore[no-any-return]


def workspace_of(request: Request, context: Context) -> str:
    """The workspace the request's key belongs to, once its per-minute rate limit allows the call."""
    workspace = authenticate(request, context.settings)
    context.rate_limiter.check(workspace)
    return workspace


def page_limit(value: str | None) -> int:
    """A list endpoint's `limit` query parameter: an integer in 1..1000, 20 when absent."""
    if value is None:
        return 20
    try:
        limit = int(value)
    except ValueError:
        raise InvalidRequestError(f"limit: must be an integer between 1 and 1000, got {value!r}") from None
    if not 1 <= limit <= 1000:
        raise InvalidRequestError(f"limit: must be between 1 and 1000, got {limit}")
    return limit


def public_base_url(request: Request, settings: Settings) -> str:
    return (settings.public_url or str(request.base_url)).rstrip("/")


MAX_BETA_FEATURE_CHARS = 128


def beta_features(request: Request, limit: int) -> list[str]:
    """The `anthropic-beta` features a call asks for (the header may repeat or list several), without
    the Batches API's own, which every beta-client call carries and which a model call must not get.

    Bounded (at most `limit` features of `MAX_BETA_FEATURE_CHARS` each) because every request of a
    batch merges them into its params again.
    """
    features: dict[str, None] = {}
    for value in request.headers.getlist("anthropic-beta"):
        for part in value.split(","):
            feature = part.strip()
            if not feature or feature.startswith("message-batches-"):
                continue
            if len(feature) > MAX_BETA_FEATURE_CHARS:
                raise InvalidRequestError(
                    f"anthropic-beta: a feature name is at most {MAX_BETA_FEATURE_CHARS} characters"
                )
            features[feature] = None
            if len(features) > limit:
                raise InvalidRequestError(f"anthropic-beta: at most {limit} features per request")
    return list(features)
