"""Identifiers in the shapes the API uses: a prefix and 24 base62 characters."""

from __future__ import annotations

import os
import string

_ALPHABET = (string.digits + string.ascii_letters).encode()
# Random bytes map onto the alphabet in C via `bytes.translate`: the 248 lowest byte values (4 x 62)
# map evenly, the other 8 are deleted, so every character stays uniformly likely.
_TO_BASE62 = bytes(_ALPHABET[value % 62] for value in range(248)) + bytes(8)
_UNEVEN = bytes(range(248, 256))


_ID_LENGTH = 24
# 64 KiB from the OS at a time, ~2,600 ids: `os.urandom` releases the GIL, and taking it back can wait
# a whole switch interval while a store thread holds it, so the fewer calls the better.
_POOL_BYTES = 1 << 16


class _RandomPool:
    """Base62 ids cut from one draw of the OS's CSPRNG: one system call per ~2,600 ids, not one each.

    The draw is mapped to base62 as a whole (uneven bytes deleted), so every character is independent
    and uniform, and consecutive 24-character slices are as good as separate draws. The ids are cut in
    one go and handed out by `list.pop`, which is atomic: no lock per id.
    """

    def __init__(self) -> None:
        self._ids: list[str] = []

    def take(self) -> str:
        while True:
            try:
                return self._ids.pop()
            except IndexError:
                chars = os.urandom(_POOL_BYTES).translate(_TO_BASE62, _UNEVEN).decode()
                # Another thread may refill at the same time: each list holds its own draw's ids.
                self._ids = [
                    chars[start : start + _ID_LENGTH] for start in range(0, len(chars) - _ID_LENGTH + 1, _ID_LENGTH)
                ]

    def forget(self) -> None:
        self._ids = []


_random = _RandomPool()
# A forked child must not hand out the same ids as its parent from a copied pool.
os.register_at_fork(after_in_child=_random.forget)


def random_part() -> str:
    """24 random base62 characters: the part of an id after its prefix, for ids of other shapes."""
    return _random.take()


def batch_id() -> str:
    return "msgbatch_" + random_part()


def message_id() -> str:
    return "msg_" + random_part()


def request_id() -> str:
    return "req_" + random_part()


def tool_use_id() -> str:
    return "toolu_" + random_part()


def event_id() -> str:
    """A webhook event's id, also its `webhook-id` header (the same on every retry)."""
    return "evt_" + random_part()
