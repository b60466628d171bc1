"""The one error hierarchy: raised anywhere, rendered into the API's error envelope in one place.

Backends raise the same classes, so a backend failure becomes an `errored` result with the right type.
`retryable` tells the engine whether trying again may help.
"""

from __future__ import annotations


class OvernightError(Exception):
    status_code: int = 500
    error_type: str = "api_error"
    retryable: bool = False

    def __init__(self, message: str, *, retry_after_seconds: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after_seconds = retry_after_seconds


class InvalidRequestError(OvernightError):
    status_code = 400
    error_type = "invalid_request_error"


class AuthenticationError(OvernightError):
    status_code = 401
    error_type = "authentication_error"


class PermissionDeniedError(OvernightError):
    status_code = 403
    error_type = "permission_error"


class NotFoundError(OvernightError):
    status_code = 404
    error_type = "not_found_error"


class RequestTimeoutError(OvernightError):
    """The client stopped sending its request; the connection is closed after the answer."""

    status_code = 408
    error_type = "timeout_error"


class RequestTooLargeError(OvernightError):
    status_code = 413
    error_type = "request_too_large"


class RateLimitError(OvernightError):
    status_code = 429
    error_type = "rate_limit_error"
    retryable = True


class ApiError(OvernightError):
    """An internal or upstream failure; retryable because a later attempt may succeed."""

    status_code = 500
    error_type = "api_error"
    retryable = True


class UpstreamTimeoutError(ApiError):
    """The backend did not answer in time."""


class OverloadedError(OvernightError):
    status_code = 529
    error_type = "overloaded_error"
    retryable = True
