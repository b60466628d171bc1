"""The error type an errored batch result reports: always one the SDKs' result union knows."""

from __future__ import annotations

import pytest

from overnight.engine.scheduler import result_error_type
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


@pytest.mark.parametrize(
    ("error", "reported"),
    [
        (InvalidRequestError("x"), "invalid_request_error"),
        (AuthenticationError("x"), "authentication_error"),
        (PermissionDeniedError("x"), "permission_error"),
        (NotFoundError("x"), "not_found_error"),
        (OverloadedError("x"), "overloaded_error"),
        (ApiError("x"), "api_error"),
        (UpstreamTimeoutError("x"), "api_error"),
        # still rate limited after every attempt: a result cannot say "retry later"
        (RateLimitError("x", retry_after_seconds=3), "overloaded_error"),
        # an upstream's 413: not a type the SDKs accept inside a result
        (RequestTooLargeError("x"), "invalid_request_error"),
    ],
)
def test_result_error_types(error: OvernightError, reported: str) -> None:
    assert result_error_type(error) == reported
