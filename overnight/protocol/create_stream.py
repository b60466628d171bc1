"""Decoding a create body while it arrives: complete `requests` elements, about a MiB at a time, in C.

A piece is cut where an element ends (`}`) and the next begins (`,{"custom_id"` or `,{"params"`); the
cut is only a guess, and is kept only if msgspec decodes the piece, wrapped as `[[piece]]`, into one
list of the very element type of `decode_create_body` (so by the same rules), nested as deep as in the
body. JSON parses left to right, so the wrapped piece parses exactly as the same bytes do in the body:
a guess inside a string leaves the string unterminated, a guess inside a nested value leaves it
unclosed, and a guess past the array's end (`...],"requests":[...`) leaves more than one list or a
value that is no list; none of them is kept. An accepted piece is therefore exactly a run of whole
elements, decoded as the whole body would decode them.

Whatever does not fit — another shape, a bad element, a duplicate custom_id, too many requests — stops
the streaming, and `finish` lets the whole body's decoder judge the body, so every error reads as it
does for a body decoded whole. A caller that has passed the requests handed out so far on (stored them)
may `release` them: the stream then keeps only what it has not handed out, and judges the rest of the
body as the continuation of what it released (positions and indexes counted from the body's start).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import msgspec

from overnight.protocol.batches import BatchRequestEnvelope, CreateBatchBody, check_requests, decode_create_body
from overnight.protocol.decoding import decode_json

_HEAD = re.compile(rb'\s*\{\s*"requests"\s*:\s*\[\s*')
_TAIL = re.compile(rb"\s*\]\s*\}\s*\Z")
# An element's end and the next element's start, with the separator between them.
_CUT = re.compile(rb'\}(\s*,\s*)\{\s*"(?:custom_id|params)"')
_OPEN, _CLOSE = b"[[", b"]]"
# Decode once this much is pending: small enough to overlap the upload and to be stored from memory that
# is still in the CPU's caches (and reused, once released), big enough to make each decode cheap.
PIECE_BYTES = 1 << 20
_CUT_WINDOW_BYTES = 1 << 18
_TAIL_WINDOW_BYTES = 256  # the body's end is looked for this close to its last byte (then: decoded whole)
_HEAD_PROBE_BYTES = 64
_GUESSES = 4  # cuts tried, latest first, before waiting for more data
_OPEN_BRACE = ord("{")
# The shortest element there is: a body of n bytes holds fewer than n / this many requests.
_SHORTEST_ELEMENT_BYTES = len(b'{"custom_id":"a","params":{}}')

_decode_runs = msgspec.json.Decoder(list[list[BatchRequestEnvelope]]).decode
_decode_body = msgspec.json.Decoder(CreateBatchBody).decode
# Stands for the requests released, in front of the rest of the body: after it, as after them, the rest
# begins inside the array, after a comma.
_STAND_IN = b'{"requests":[{"custom_id":"_","params":{}},'
_STAND_IN_TWICE = _STAND_IN + b'{"custom_id":"_","params":{}},'
_AT_REQUEST = re.compile(r" - at `\$\.requests\[(\d+)\](.*)`\Z", re.DOTALL)
_AT_BYTE = re.compile(r"\(byte (\d+)\)\Z")

Item = tuple[str, msgspec.Raw]


class CreateBodyStream:
    """Feed the body's chunks in order; take the decoded requests as they come; `finish` at the end."""

    def __init__(self, *, max_requests: int) -> None:
        self.max_requests = max_requests
        self._head = b""
        # Received, not yet decoded; once the head is seen, behind a fresh `[[` so that a piece is decoded
        # where it lies (closed with `]]`, then kept whole) instead of being copied.
        self._pending = bytearray()
        # Inside an element longer than a piece: no cut starts before this offset in pending, where the
        # next look for one starts, once pending holds `_cut_at` bytes.
        self._uncut = 0
        self._cut_at = 0
        # Decoded pieces not released, as (wrapped piece, separator after it, requests in it): the body is
        # the head, the released pieces, then each of these unwrapped with its separator, then pending
        # unwrapped. Items are views into the pieces.
        self._pieces: list[tuple[bytearray, bytes, int]] = []
        self._handed = 0  # how many of `_pieces` `feed` handed out (all but a last one that broke a rule)
        self._seen: set[str] = set()
        self._items: list[Item] = []  # the requests decoded and not released, in the body's order
        self._decoded = 0  # requests decoded, released ones included
        self._released_ids: list[str] = []  # the custom_ids of the requests released, in order
        self._released_bytes = 0  # the body's bytes up to the last released piece's separator, inclusive
        self.streaming = True  # False: everything waits for `finish` (and the full decode)
        self.replaced = False  # see `finish`

    @property
    def items(self) -> list[Item]:
        """The requests decoded so far and not released, in the body's order (meaningful while
        `streaming`)."""
        return self._items

    @property
    def released(self) -> int:
        """How many requests `release` let go of."""
        return len(self._released_ids)

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
            self._released_bytes = len(self._head)
            self._pending[: head.end()] = _OPEN
        if len(self._pending) < max(PIECE_BYTES, self._cut_at):
            return []
        return self._take_piece()

    def release(self) -> None:
        """Forget the requests `feed` handed out so far: the caller has passed them on, and the stream
        keeps no view into their bytes. `finish` then returns only the requests after them."""
        released = self._pieces[: self._handed]
        count = sum(requests for _, _, requests in released)
        self._released_ids += [custom_id for custom_id, _ in self._items[:count]]
        self._released_bytes += sum(map(_body_length, released))
        self._items = self._items[count:]
        self._pieces = self._pieces[self._handed :]
        self._handed = 0

    def finish(self) -> list[Item]:
        """The requests not released (all of them, if none was), or `InvalidRequestError` exactly as
        `decode_create_body` words it for the whole body.

        Where a later `requests` key replaces the array whose requests were handed out (JSON's last key
        wins), `replaced` turns True and the requests returned are that key's, all of them: none handed
        out belongs to the batch."""
        if self.streaming and self._head:
            tail = _TAIL.search(self._pending, max(len(_OPEN), len(self._pending) - _TAIL_WINDOW_BYTES))
            if tail is not None:
                decoded = self._decode_piece(tail.start(), b"")  # the last elements; only the tail is left
                if decoded is not None and self.streaming and 0 < self._decoded <= self.max_requests:
                    return self._items
        if not self._released_ids and not self._handed:
            return decode_create_body(self._whole_body(), max_requests=self.max_requests)
        # Decode only what follows the requests handed out: they are checked already, and may be gone.
        held = sum(requests for _, _, requests in self._pieces[: self._handed])
        earlier = [*self._released_ids, *(custom_id for custom_id, _ in self._items[:held])]
        offset = self._released_bytes + sum(_body_length(piece) for piece in self._pieces[: self._handed])
        items, continued = _decode_after(b"".join(self._parts(self._handed)), earlier, offset, self.max_requests)
        if not continued:
            self.replaced = True
            return items
        return [*self._items[:held], *items]

    def _take_piece(self) -> list[Item]:
        # Elements are rarely longer than this: look near the end first, the whole of pending if need be.
        start = max(len(_OPEN), self._uncut)
        window = max(start, len(self._pending) - _CUT_WINDOW_BYTES)
        cuts = list(_CUT.finditer(self._pending, window)) or list(_CUT.finditer(self._pending, start))
        if not cuts:
            # Inside an element longer than a piece (a big image, say): look again a piece later, at
            # the new bytes only. A cut not yet complete starts at the last `}` (none comes between a
            # cut's `}` and its end).
            last_brace = self._pending.rfind(b"}", start)
            self._uncut = last_brace if last_brace >= 0 else len(self._pending)
            self._cut_at = len(self._pending) + PIECE_BYTES
            return []
        self._uncut = self._cut_at = 0
        for cut in reversed(cuts[-_GUESSES:]):
            decoded = self._decode_piece(cut.start() + 1, cut.group(1))
            if decoded is not None:
                if decoded:
                    self._handed = len(self._pieces)
                return decoded
        # Cuts that are no element boundary (inside strings): stop guessing (each guess costs a decode).
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
            runs = _decode_runs(piece)
        except (msgspec.ValidationError, msgspec.DecodeError, UnicodeDecodeError, RecursionError):
            runs = []
        if len(runs) != 1:  # not one run of elements: the cut was wrong, or the array ends inside
            del piece[end:]
            piece += separator
            piece += rest
            return None
        # The piece is never changed again (the items' views pin it): pending starts afresh.
        self._pending = bytearray(_OPEN)
        self._pending += rest
        items = [(request.custom_id, request.params) for request in runs[0]]
        self._pieces.append((piece, separator, len(items)))
        seen = self._seen
        for custom_id, params in items:
            # Raw spans exactly the value, so an object starts with `{` (as in `decode_create_body`).
            if custom_id in seen or memoryview(params)[0] != _OPEN_BRACE:
                self.streaming = False
            seen.add(custom_id)
        self._items += items
        self._decoded += len(items)
        if self._decoded > self.max_requests:
            self.streaming = False
        return items if self.streaming else []

    def _parts(self, first_piece: int) -> list[bytes | bytearray | memoryview]:
        """The body's bytes from the not released piece `first_piece` on, as received, in parts."""
        parts: list[bytes | bytearray | memoryview] = []
        for piece, separator, _ in self._pieces[first_piece:]:
            parts += (memoryview(piece)[len(_OPEN) : -len(_CLOSE)], separator)
        parts.append(memoryview(self._pending)[len(_OPEN) :] if self._head else self._pending)
        return parts

    def _whole_body(self) -> bytes:
        """The body exactly as received (nothing released)."""
        return b"".join([self._head, *self._parts(0)])


def _body_length(piece: tuple[bytearray, bytes, int]) -> int:
    """How many of the body's bytes a decoded piece and its separator are."""
    wrapped, separator, _ = piece
    return len(wrapped) - len(_OPEN) - len(_CLOSE) + len(separator)


def _decode_after(rest: bytes, earlier: Sequence[str], offset: int, max_requests: int) -> tuple[list[Item], bool]:
    """Decode `rest`, a body's bytes after its first requests (`earlier`: their custom_ids, checked
    already; `offset`: the bytes before `rest`, the comma after them included), as the whole body would
    be decoded, or raise its error. Returns the requests after the earlier ones and True; or, where a
    later `requests` key replaces the array, that key's requests and False.

    `rest` is decoded behind one stand-in request, which leaves it inside the array after a comma, as
    after the earlier requests; and, to tell the array going on from a later key's, behind two: the
    array's requests and errors move by one, a later key's do not."""

    def decode(data: bytes | bytearray) -> CreateBatchBody:
        try:
            return _decode_body(data)
        except msgspec.ValidationError as exc:
            message = str(exc)
            try:
                _decode_body(_STAND_IN_TWICE + rest)
            except msgspec.ValidationError as moved:
                if str(moved) != message:  # in the array going on: index it as in the whole body
                    message = _AT_REQUEST.sub(
                        lambda at: f" - at `$.requests[{int(at[1]) - 1 + len(earlier)}]{at[2]}`", message
                    )
            raise msgspec.ValidationError(message) from None
        except msgspec.DecodeError as exc:
            message = _AT_BYTE.sub(lambda at: f"(byte {int(at[1]) - len(_STAND_IN) + offset})", str(exc))
            raise msgspec.DecodeError(message) from None

    requests = decode_json(decode, _STAND_IN + rest).requests
    continued = len(_decode_body(_STAND_IN_TWICE + rest).requests) == len(requests) + 1
    items = [(request.custom_id, request.params) for request in (requests[1:] if continued else requests)]
    check_requests(items, max_requests=max_requests, earlier=earlier if continued else ())
    return items, continued


def most_requests(body_bytes: int, max_requests: int) -> int:
    """The most requests a create body of `body_bytes` bytes can hold that may be accepted."""
    return max(1, min(max_requests, body_bytes // _SHORTEST_ELEMENT_BYTES))


def _could_be_head(data: bytearray) -> bool:
    """Whether `data` (a few bytes) may still grow into the start of `{"requests": [`."""
    compact = re.sub(rb"\s+", b"", bytes(data))
    return _OPEN.startswith(compact) or compact.startswith(_OPEN)
