"""A create whose requests are decoded, and inserted, while its body still arrives.

Receiving a 250 MB body, decoding it and inserting it one after the other takes about twice the
insert alone. Here the body is decoded piece by piece as it arrives (`CreateBodyStream`), and once the
rest of it should arrive within `_START_WITHIN_SECONDS` at the rate seen so far, the store's writer
starts inserting the pieces in the batch's one transaction. SQLite has one write lock: a client that
then slows down must not hold it, so the transaction waits for the body at most `_HOLD_SECONDS`, then
rolls back, and the batch is inserted at once when its body is complete — as a slow client's always is.
All or nothing, and every error (bad body, duplicate custom_id, too many requests, too large, too slow)
reads as it does for a body read whole.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Sequence

from overnight import ids
from overnight.config import Settings
from overnight.protocol.create_stream import CreateBodyStream, Item
from overnight.store import BatchRecord, Store
from overnight.store.feed import FeedTooSlowError, ItemFeed
from overnight.timestamps import MICROS

logger = logging.getLogger(__name__)

_START_WITHIN_SECONDS = 1.0
_HOLD_SECONDS = 5.0


class StreamedCreate:
    def __init__(
        self,
        store: Store,
        settings: Settings,
        workspace: str,
        created_at: int,
        betas: Sequence[str],
        declared_length: int | None,
    ) -> None:
        self.store = store
        self.settings = settings
        self.workspace = workspace
        self.created_at = created_at
        self.betas = betas
        self.declared_length = declared_length
        self._batch_id = ids.batch_id()

    async def run(self, chunks: AsyncIterator[bytes]) -> BatchRecord:
        stream = CreateBodyStream(max_requests=self.settings.max_requests)
        feed: ItemFeed | None = None
        insert: asyncio.Future[BatchRecord] | None = None
        sent = received = 0
        began = time.monotonic()
        try:
            async for chunk in chunks:
                received += len(chunk)
                if not stream.feed(chunk) or not stream.streaming:
                    continue
                if insert is None and self._rest_arrives_soon(received, time.monotonic() - began):
                    feed = ItemFeed(_HOLD_SECONDS)
                    insert = self._insert_streamed(feed)
                if feed is not None:
                    feed.put(stream.items[sent:])
                    sent = len(stream.items)
            items = stream.finish()
        except BaseException:
            if feed is not None and insert is not None:
                feed.abort()  # the writer rolls back
                await asyncio.wait([insert])
                if not insert.cancelled():
                    insert.exception()  # retrieved: it is the abort, or a failure the create's error replaces
            raise
        if feed is not None and insert is not None:
            feed.put(items[sent:])
            feed.end()
            try:
                return await insert
            except FeedTooSlowError:
                # Rolled back: the body is complete now, so insert it at once.
                logger.info(
                    "batch %s: its body came too slowly to insert while it arrived (waited %.0f s); inserting it whole",
                    self._batch_id,
                    _HOLD_SECONDS,
                )
        return await self._insert_all(items)

    def _rest_arrives_soon(self, received: int, elapsed: float) -> bool:
        if self.declared_length is None:
            return False  # chunked upload: no telling when it ends
        remaining = self.declared_length - received
        return remaining <= 0 or remaining * elapsed <= _START_WITHIN_SECONDS * received

    def _insert_streamed(self, feed: ItemFeed) -> asyncio.Future[BatchRecord]:
        logger.info("batch %s: inserting its requests while its body arrives", self._batch_id)
        return asyncio.ensure_future(
            self.store.insert_streamed_batch(
                batch_id=self._batch_id,
                workspace=self.workspace,
                created_at=self.created_at,
                expires_at=self._expires_at(),
                feed=feed,
                betas=self.betas,
                max_queued_requests=self.settings.max_queued_requests,
            )
        )

    async def _insert_all(self, items: Sequence[Item]) -> BatchRecord:
        return await self.store.insert_batch(
            batch_id=self._batch_id,
            workspace=self.workspace,
            created_at=self.created_at,
            expires_at=self._expires_at(),
            items=items,
            betas=self.betas,
            max_queued_requests=self.settings.max_queued_requests,
        )

    def _expires_at(self) -> int:
        return self.created_at + int(self.settings.batch_ttl_seconds * MICROS)
