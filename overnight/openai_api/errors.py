"""OpenAI's error envelope: `{"error": {"message", "type", "param", "code"}}`, on this API's paths."""

from __future__ import annotations

from typing import Any

from overnight.exceptions import InvalidRequestError, OvernightError
from overnight.protocol.codecs import openai_error_type

OPENAI_PATH_PREFIXES = ("/v1/files", "/v1/batches", "/v1/chat/completions")


class OpenAIRequestError(InvalidRequestError):
    """A 400 (or other status) with OpenAI's `param` and `code`."""

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None, status: int = 400) -> None:
        super().__init__(message)
        self.param = param
        self.code = code
        self.status_code = status


def is_openai_path(path: str) -> bool:
    return path.startswith(OPENAI_PATH_PREFIXES)


def openai_error_body(error: OvernightError) -> dict[str, Any]:
    return {
        "error": {
            "message": error.message,
            "type": openai_error_type(error.error_type),
            "param": getattr(error, "param", None),
            "code": getattr(error, "code", None),
        }
    }
