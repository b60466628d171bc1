"""A create whose requests are decoded while its body still arrives, and stored meanwhile too.

Receiving a big body and then inserting its rows one after the other costs the upload's time on top of
the insert. Here the body is decoded piece by piece as it arrives (`CreateBodyStream`), and once the
rest of it should arrive within `_START_WITHIN_SECONDS` at the rate seen so far, the store's streamed
insert stores the decoded requests in the batch's one transaction, on a thread of its own, while later
ones arrive (PostgreSQL copies them into a process of its own; SQLite's work releases the GIL). A
transaction must not wait on a slow client: it waits for the body at most the store's
`streamed_insert_hold_seconds` (short on SQLite, where it holds the one write lock), then rolls back,
and the batch is inserted whole once its body is complete — as a slow client's always is. All or
nothing, and every error (bad body, duplicate custom_id, too many requests, too large, too slow, gone)
reads as it does for a body read whole.

Where the store hands back what an undone insert had taken (`Store.streamed_insert_reads_back`), the
create lets go of each piece of the body once handed over: a big create holds the pieces on their way
to the store, not the whole body, and reuses their memory instead of growing by the body's size.
Elsewhere the body is kept until the commit, for the insert whole after an undo.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Sequence

from overnight import ids
from overnight.config import Settings
from overnight.protocol.create_stream import CreateBodyStream, Item, most_requests
from overnight.store import BatchRecord, Store
from overnight.store.feed import ItemFeed, StreamedInsertUndoneError
from overnight.timestamps import MICROS, now_micros

logger = logging.getLogger(__name__)

_START_WITHIN_SECONDS = 2.0
# Where the store limits the pause between runs (it holds a lock meanwhile), stream only bodies that
# arrive at least this much per pause at the rate seen so far: many pieces per pause.
_BYTES_PER_PAUSE = 16 << 20


class StreamedCreate:
    def __init__(
        self, store: Store, settings: Settings, workspace: str, betas: Sequence[str], declared_length: int | None
    ) -> None:
        self.store = store
        self.settings = settings
        self.workspace = workspace
        self.betas = betas
        self.declared_length = declared_length
        self._batch_id = ids.batch_id()

    async def run(self, chunks: AsyncIterator[bytes]) -> BatchRecord:
        """Read `chunks` to the end and store the batch they make (or raise what `create` raises)."""
        stream = CreateBodyStream(max_requests=self.settings.max_requests)
        feed: ItemFeed | None = None
        insert: asyncio.Future[BatchRecord] | None = None
        sent = received = 0
        began = time.monotonic()
        release = self.store.streamed_insert_reads_back
        try:
            async for chunk in chunks:
                received += len(chunk)
                if not stream.feed(chunk) or not stream.streaming:
                    continue
                if insert is None and self._rest_arrives_soon(received, time.monotonic() - began):
                    feed = ItemFeed(self.store.streamed_insert_hold_seconds, self.store.streamed_insert_pause_seconds)
                    insert = self._insert_streamed(feed)
                if feed is not None:
                    feed.put(stream.items[sent:])
                    if release:
                        stream.release()
                    sent = len(stream.items)
            items = stream.finish()
        except BaseException:
            if feed is not None and insert is not None:
                await _abandon(feed, insert)
            raise
        if feed is not None and insert is not None:
            if stream.replaced:  # a later "requests" key: the requests handed over are not the batch's
                await _abandon(feed, insert)
                return await self._insert_all(items)
            feed.put(items[sent:])
            feed.end()
            try:
                return await insert
            except StreamedInsertUndoneError as exc:
                logger.info("batch %s: streamed insert rolled back (%s); inserting it whole", self._batch_id, exc)
                if stream.released:
                    assert exc.taken is not None, "a store that reads back hands back what it took"
                    items = [*exc.taken, *feed.untaken()]
        return await self._insert_all(items)

    def _rest_arrives_soon(self, received: int, elapsed: float) -> bool:
        if self.declared_length is None:
            return False  # a chunked upload: no telling when it ends
        if not self.store.can_stream_insert():
            return False  # none may start now (all under way, or the store has none): inserted once arrived
        pause = self.store.streamed_insert_pause_seconds
        if pause is not None and received * pause < _BYTES_PER_PAUSE * elapsed:
            return False  # its pieces would come further apart than the store lets its insert wait
        remaining = self.declared_length - received
        return remaining <= 0 or remaining * elapsed <= _START_WITHIN_SECONDS * received

    def _insert_streamed(self, feed: ItemFeed) -> asyncio.Future[BatchRecord]:
        assert self.declared_length is not None
        logger.info("batch %s: storing its requests while its body arrives", self._batch_id)
        created_at = now_micros()
        return asyncio.ensure_future(
            self.store.insert_streamed_batch(
                batch_id=self._batch_id,
                workspace=self.workspace,
                created_at=created_at,
                expires_at=self._expires_at(created_at),
                feed=feed,
                max_requests=most_requests(self.declared_length, self.settings.max_requests),
                betas=self.betas,
                max_queued_requests=self.settings.max_queued_requests,
            )
        )

    async def _insert_all(self, items: Sequence[Item]) -> BatchRecord:
        created_at = now_micros()
        return await self.store.insert_batch(
            batch_id=self._batch_id,
            workspace=self.workspace,
            created_at=created_at,
            expires_at=self._expires_at(created_at),
            items=items,
            betas=self.betas,
            max_queued_requests=self.settings.max_queued_requests,
        )

    def _expires_at(self, created_at: int) -> int:
        return created_at + int(self.settings.batch_ttl_seconds * MICROS)


async def _abandon(feed: ItemFeed, insert: asyncio.Future[BatchRecord]) -> None:
    """Have the streamed insert roll back, and wait until it has."""
    feed.abort()
    await asyncio.wait([insert])
    if not insert.cancelled():
        insert.exception()  # retrieved: the abort, or a failure the caller's outcome replaces
