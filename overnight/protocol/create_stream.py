"""Decoding a create body while it arrives: complete `requests` elements, a few MB at a time, in C.

A piece is cut where an element ends (`}`) and the next begins (`,{"custom_id"` or `,{"params"`); the
cut is only a guess, and is kept only if msgspec decodes the piece, wrapped as a whole create body,
with the very decoder (and so the rules) of `decode_create_body`. JSON parses left to right, so the
wrapped piece parses exactly as the same bytes do in the body: a guess inside a string leaves the
string unterminated, a guess inside a nested value leaves it unclosed, and neither decodes. An accepted
piece is therefore exactly a run of whole elements, decoded as the whole body would decode them.

Whatever does not fit — another shape, a bad element, a duplicate custom_id, too many requests — stops
the streaming: `finish` then rebuilds the exact body from the pieces and lets `decode_create_body`
judge it, so every error reads as it does for a body decoded whole.
"""

from __future__ import annotations

import re

import msgspec

from overnight.protocol.batches import CreateBatchBody, decode_create_body

_HEAD = re.compile(rb'\s*\{\s*"requests"\s*:\s*\[\s*')
_TAIL = re.compile(rb"\s*\]\s*\}\s*\Z")
# An element's end and the next element's start, with the separator between them.
_CUT = re.compile(rb'\}(\s*,\s*)\{\s*"(?:custom_id|params)"')
_OPEN, _CLOSE = b'{"requests":[', b"]}"
PIECE_BYTES = 1 << 23  # decode once this much is pending: small enough to overlap, big enough to be cheap
_CUT_WINDOW_BYTES = 1 << 18
_TAIL_WINDOW_BYTES = 256  # the body's end is looked for this close to its last byte (then: decoded whole)
_HEAD_PROBE_BYTES = 64
_GUESSES = 4  # cuts tried, latest first, before waiting for more data
_OPEN_BRACE = ord("{")
# The shortest element there is: a body of n bytes holds fewer than n / this many requests.
_SHORTEST_ELEMENT_BYTES = len(b'{"custom_id":"a","params":{}}')

_decode = msgspec.json.Decoder(CreateBatchBody).decode

Item = tuple[str, msgspec.Raw]


class CreateBodyStream:
    """Feed the body's chunks in order; take the decoded requests as they come; `finish` at the end."""

    def __init__(self, *, max_requests: int) -> None:
        self.max_requests = max_requests
        self._head = b""
        # Received, not yet decoded; once the head is seen, behind a fresh `{"requests":[` so that a piece
        # is decoded where it lies (closed with `]}`, then kept whole) instead of being copied.
        self._pending = bytearray()
        # Decoded pieces as (wrapped piece, separator after it): the body is the head, then each piece
        # unwrapped and its separator, then pending unwrapped. Items are views into the pieces.
        self._pieces: list[tuple[bytearray, bytes]] = []
        self._seen: set[str] = set()
        self._items: list[Item] = []
        self.streaming = True  # False: everything waits for `finish` (and the full decode)

    @property
    def items(self) -> list[Item]:
        """The requests decoded so far, in the body's order (meaningful while `streaming`)."""
        return self._items

    def feed(self, chunk: bytes | bytearray) -> list[Item]:
        """The requests that `chunk` completes (often none), each checked as `decode_create_body` would."""
        self._pending += chunk
        if not self.streaming:
            return []
        if not self._head:
            head = _HEAD.match(self._pending)
            if head is None:
                # Not yet enough to tell, or another shape (then the full decode judges it at the end).
                if len(self._pending) > _HEAD_PROBE_BYTES or not _could_be_head(self._pending):
                    self.streaming = False
                return []
            self._head = bytes(self._pending[: head.end()])
            self._pending[: head.end()] = _OPEN
        if len(self._pending) < PIECE_BYTES:
            return []
        return self._take_piece()

    def finish(self) -> list[Item]:
        """All the requests, or `InvalidRequestError` exactly as `decode_create_body` words it."""
        if self.streaming and self._head:
            tail = _TAIL.search(self._pending, max(len(_OPEN), len(self._pending) - _TAIL_WINDOW_BYTES))
            if tail is not None:
                decoded = self._decode_piece(tail.start(), b"")  # the last elements; only the tail is left
                if decoded is not None and self.streaming and 0 < len(self._items) <= self.max_requests:
                    return self._items
        return decode_create_body(self._whole_body(), max_requests=self.max_requests)

    def _take_piece(self) -> list[Item]:
        # Elements are rarely longer than this: look near the end first, the whole of pending if need be.
        window = max(len(_OPEN), len(self._pending) - _CUT_WINDOW_BYTES)
        cuts = list(_CUT.finditer(self._pending, window)) or list(_CUT.finditer(self._pending, len(_OPEN)))
        for cut in reversed(cuts[-_GUESSES:]):
            decoded = self._decode_piece(cut.start() + 1, cut.group(1))
            if decoded is not None:
                return decoded
        # No element boundary found where one should be: stop guessing (each guess costs a decode).
        self.streaming = False
        return []

    def _decode_piece(self, end: int, separator: bytes) -> list[Item] | None:
        """Decode pending up to `end` (whole elements, if the cut was right) as one piece; None, and
        pending as it was, if the cut was wrong. A rule broken (duplicate custom_id, too many requests,
        params not an object) stops streaming."""
        piece = self._pending
        rest = piece[end + len(separator) :]
        del piece[end:]
        piece += _CLOSE
        try:
            requests = _decode(piece).requests
        except (msgspec.ValidationError, msgspec.DecodeError, UnicodeDecodeError, RecursionError):
            del piece[end:]
            piece += separator
            piece += rest
            return None
        # The piece is never changed again (the items' views pin it): pending starts afresh.
        self._pending = bytearray(_OPEN)
        self._pending += rest
        self._pieces.append((piece, separator))
        items = [(request.custom_id, request.params) for request in requests]
        seen = self._seen
        for custom_id, params in items:
            # Raw spans exactly the value, so an object starts with `{` (as in `decode_create_body`).
            if custom_id in seen or memoryview(params)[0] != _OPEN_BRACE:
                self.streaming = False
            seen.add(custom_id)
        self._items += items
        if len(self._items) > self.max_requests:
            self.streaming = False
        return items if self.streaming else []

    def _whole_body(self) -> bytes:
        """The body exactly as received."""
        parts: list[bytes | bytearray | memoryview] = [self._head]
        for piece, separator in self._pieces:
            parts += (memoryview(piece)[len(_OPEN) : -len(_CLOSE)], separator)
        parts.append(memoryview(self._pending)[len(_OPEN) :] if self._head else self._pending)
        return b"".join(parts)


def most_requests(body_bytes: int, max_requests: int) -> int:
    """The most requests a create body of `body_bytes` bytes can hold that may be accepted."""
    return max(1, min(max_requests, body_bytes // _SHORTEST_ELEMENT_BYTES))


def _could_be_head(data: bytearray) -> bool:
    """Whether `data` (a few bytes) may still grow into the start of `{"requests": [`."""
    compact = re.sub(rb"\s+", b"", bytes(data))
    return _OPEN.startswith(compact) or compact.startswith(_OPEN)
