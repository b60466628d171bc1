"""Identifiers in the shapes the API uses: a prefix and 24 base62 characters."""

from __future__ import annotations

import secrets
import string

_ALPHABET = (string.digits + string.ascii_letters).encode()
# Random bytes map onto the alphabet in C via `bytes.translate`: the 248 lowest byte values (4 x 62)
# map evenly, the other 8 are deleted, so every character stays uniformly likely.
_TO_BASE62 = bytes(_ALPHABET[value % 62] for value in range(248)) + bytes(8)
_UNEVEN = bytes(range(248, 256))


def _random_base62(length: int = 24) -> str:
    while True:
        # 32 random bytes leave at least 24 usable ones except with negligible probability.
        usable = secrets.token_bytes(length + 8).translate(_TO_BASE62, _UNEVEN)
        if len(usable) >= length:
            return usable[:length].decode()


def batch_id() -> str:
    return "msgbatch_" + _random_base62()


def message_id() -> str:
    return "msg_" + _random_base62()


def request_id() -> str:
    return "req_" + _random_base62()


def tool_use_id() -> str:
    return "toolu_" + _random_base62()
