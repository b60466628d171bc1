"""Decoding a JSON request body, where every way it can fail is the client's 400, never our 500."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import msgspec

from overnight.exceptions import InvalidRequestError

T = TypeVar("T")


def decode_json(decode: Callable[[bytes | bytearray], T], body: bytes | bytearray) -> T:
    """`decode(body)`, its failures (bad JSON, wrong shape, invalid UTF-8, nesting deeper than the
    decoder's stack allows) raised as `InvalidRequestError`."""
    try:
        return decode(body)
    except msgspec.ValidationError as exc:
        raise InvalidRequestError(f"Invalid request body: {exc}") from None
    except msgspec.DecodeError as exc:
        raise InvalidRequestError(f"Request body is not valid JSON: {exc}") from None
    except UnicodeDecodeError as exc:
        raise InvalidRequestError(f"Request body is not valid UTF-8 (byte {exc.start})") from None
    except RecursionError:
        raise InvalidRequestError("Request body is nested too deeply") from None
