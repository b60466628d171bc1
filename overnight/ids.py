"""Identifiers in the shapes the API uses: a prefix and 24 base62 characters."""

from __future__ import annotations

import os
import string
import threading

_ALPHABET = (string.digits + string.ascii_letters).encode()
# Random bytes map onto the alphabet in C via `bytes.translate`: the 248 lowest byte values (4 x 62)
# map evenly, the other 8 are deleted, so every character stays uniformly likely.
_TO_BASE62 = bytes(_ALPHABET[value % 62] for value in range(248)) + bytes(8)
_UNEVEN = bytes(range(248, 256))


_DRAW_BYTES = 32  # leaves at least 24 usable bytes except with negligible probability
_POOL_BYTES = _DRAW_BYTES * 256


class _RandomPool:
    """Bytes from the OS's CSPRNG, fetched 8 KiB at a time: one system call per 256 ids, not one each."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pool = b""
        self._offset = 0

    def take(self, size: int) -> bytes:
        with self._lock:
            if self._offset + size > len(self._pool):
                self._pool, self._offset = os.urandom(_POOL_BYTES), 0
            start, self._offset = self._offset, self._offset + size
            return self._pool[start : self._offset]

    def forget(self) -> None:
        self._pool, self._offset = b"", 0


_random = _RandomPool()
# A forked child must not hand out the same ids as its parent from a copied pool.
os.register_at_fork(after_in_child=_random.forget)


def _random_base62(length: int = 24) -> str:
    while True:
        usable = _random.take(_DRAW_BYTES).translate(_TO_BASE62, _UNEVEN)
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


def event_id() -> str:
    """A webhook event's id, also its `webhook-id` header (the same on every retry)."""
    return "evt_" + _random_base62()
