"""Identifiers in the shapes the API uses: a prefix and 24 base62 characters."""

from __future__ import annotations

import secrets
import string

_ALPHABET = string.digits + string.ascii_letters


def _random_base62(length: int = 24) -> str:
    return "".join(secrets.choice(_ALPHABET) for _ in range(length))


def batch_id() -> str:
    return "msgbatch_" + _random_base62()


def message_id() -> str:
    return "msg_" + _random_base62()


def request_id() -> str:
    return "req_" + _random_base62()


def tool_use_id() -> str:
    return "toolu_" + _random_base62()
