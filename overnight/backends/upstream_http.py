"""What the HTTP backends share: one JSON POST, and upstream failures turned into `overnight.exceptions`.

Both the Anthropic and the OpenAI-compatible backend call exactly once; the engine decides whether to
retry, using each error's `retryable` flag and `retry_after_seconds` (taken from the upstream's
`retry-after-ms` / `retry-after` headers whenever it sends them).
"""

from __future__ import annotations

import email.utils
import time
from typing import Any

# httpx2 (httpx's maintained successor, which the official SDK uses too): httpx 0.28's async pool
# spends so much time per call beyond a few dozen in flight that it cannot keep an upstream busy.
import httpx2

from overnight.exceptions import (
    ApiError,
    AuthenticationError,
    InvalidRequestError,
    NotFoundError,
    OverloadedError,
    OvernightError,
    PermissionDeniedError,
    RateLimitError,
    RequestTooLargeError,
    UpstreamTimeoutError,
)

_ERRORS_BY_STATUS: dict[int, type[OvernightError]] = {
    400: InvalidRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    # The real API answers 413 with `request_too_large`; the dedicated class keeps that error type.
    413: RequestTooLargeError,
    # FastAPI-based servers (vLLM, llama-cpp-python) answer schema violations with 422.
    422: InvalidRequestError,
    429: RateLimitError,
    529: OverloadedError,
}

_MAX_ERROR_TEXT = 500


def endpoint(base_url: str, path: str) -> str:
    """`{base_url}/v1/{path}`, tolerating a base URL that already ends in `/v1` (a common spelling)."""
    base = base_url.rstrip("/")
    if base.endswith("/v1"):
        base = base[: -len("/v1")]
    return f"{base}/v1/{path}"


def make_client(*, timeout_seconds: float, max_concurrency: int | None) -> httpx2.AsyncClient:
    """One pooled client per backend; the pool is as wide as the backend's concurrency cap."""
    limits = httpx2.Limits(
        max_connections=max_concurrency,
        max_keepalive_connections=max_concurrency if max_concurrency is not None else 20,
    )
    # Connecting should be quick even when generating takes minutes; the overall budget still applies.
    timeout = httpx2.Timeout(timeout_seconds, connect=min(timeout_seconds, 30.0))
    return httpx2.AsyncClient(timeout=timeout, limits=limits)


async def post_json(
    client: httpx2.AsyncClient, url: str, *, body: dict[str, Any], headers: dict[str, str], upstream: str
) -> dict[str, Any]:
    """POST `body` and return the JSON object of a 2xx answer; raise the mapped error otherwise."""
    try:
        response = await client.post(url, json=body, headers=headers)
    except httpx2.TimeoutException as exc:
        raise UpstreamTimeoutError(f"{upstream} did not answer in time ({type(exc).__name__})") from None
    except httpx2.HTTPError as exc:
        # Connection refused/reset, protocol errors: a later attempt may well succeed.
        raise ApiError(f"{upstream} could not be reached: {type(exc).__name__}: {exc}") from None

    if response.is_success:
        try:
            data = response.json()
        except ValueError:
            raise ApiError(f"{upstream} answered {response.status_code} with a body that is not JSON") from None
        if not isinstance(data, dict):
            raise ApiError(f"{upstream} answered {response.status_code} with JSON that is not an object")
        return data
    raise error_for_response(response, upstream=upstream)


def error_for_response(response: httpx2.Response, *, upstream: str) -> OvernightError:
    """The typed error for a non-2xx upstream answer, carrying the upstream's own message."""
    status = response.status_code
    detail = upstream_error_message(response)
    message = detail or f"{upstream} answered HTTP {status}"
    if status == 413 and not detail:
        message = "request_too_large: the upstream rejected the request body as too large"
    retry_after = retry_after_seconds(response.headers)

    error_class = _ERRORS_BY_STATUS.get(status)
    if error_class is None:
        if status == 408:
            error_class = UpstreamTimeoutError
        elif status >= 500:
            error_class = ApiError
        else:
            # Any other 4xx (405, 409, 415...) says the request itself is wrong for this upstream.
            error_class = InvalidRequestError
    return error_class(message, retry_after_seconds=retry_after)


def upstream_error_message(response: httpx2.Response) -> str | None:
    """The message inside the upstream's error envelope, whichever common shape it has.

    Anthropic: `{"type": "error", "error": {"type": ..., "message": ...}}`; OpenAI and most compatible
    servers: `{"error": {"message": ...}}`; some: `{"error": "text"}`, `{"message": ...}`, or FastAPI's
    `{"detail": ...}`. A body that is none of those is quoted, shortened.
    """
    try:
        data = response.json()
    except ValueError:
        text = response.text.strip()
        return text[:_MAX_ERROR_TEXT] or None
    if isinstance(data, dict):
        error = data.get("error")
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return error["message"]
        if isinstance(error, str):
            return error
        if isinstance(data.get("message"), str):
            return data["message"]
        detail = data.get("detail")
        if isinstance(detail, str):
            return detail
        if detail is not None:
            return str(detail)[:_MAX_ERROR_TEXT]
    return str(data)[:_MAX_ERROR_TEXT]


def retry_after_seconds(headers: httpx2.Headers) -> float | None:
    """Seconds to wait, from `retry-after-ms` (preferred: finer) or `retry-after` (seconds or HTTP date)."""
    milliseconds = headers.get("retry-after-ms")
    if milliseconds is not None:
        try:
            return max(0.0, float(milliseconds) / 1000.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())
