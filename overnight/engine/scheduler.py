"""The scheduler: lease fairly, run under the concurrency limit, write results in groups.

Tasks, all on the event loop:
- the feeder keeps a small buffer of leased requests, leasing an equal share from every in-progress
  batch per round (so a 10-request batch is not starved behind a 100k one) and interleaving them;
  the buffer hands out requests sharing a prompt prefix back to back (see `prefix.py`);
- `concurrency` workers take from the buffer, validate params, call the routed backend;
- the writer flushes finished outcomes in one transaction per group (every few ms or N results);
- the renewer extends the leases of everything this process holds;
- the sweeper (see `sweeper.py`) expires, archives and recovers lapsed leases.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
import time
from collections import defaultdict
from collections.abc import Sequence
from itertools import chain, zip_longest
from operator import attrgetter
from typing import Any

from overnight.backends.base import Backend
from overnight.engine.calls import BackendCaller, RequestWithdrawn
from overnight.engine.prefix import PrefixQueue, prefix_key
from overnight.engine.sweeper import Sweeper
from overnight.exceptions import ApiError, OvernightError, RateLimitError
from overnight.metrics import NO_BACKEND, Metrics
from overnight.protocol.codecs import ANTHROPIC_CODEC, BatchCodec, codec_for
from overnight.protocol.results import RESULT_ERROR_TYPES
from overnight.store import Completion, LeasedRequest, Store
from overnight.store.records import ANTHROPIC, CANCELED, CANCELING, ERRORED, IN_PROGRESS, SUCCEEDED, ActiveBatches
from overnight.timestamps import MICROS, now_micros

logger = logging.getLogger(__name__)

_FLUSH_SIZE = 1000
_FLUSH_BYTES = 8 << 20  # ... or fewer results, once their lines take this much
_FLUSH_INTERVAL_SECONDS = 0.05  # results become visible (and batches end) this soon at the latest
# Workers wait while this many results, or about this many bytes of their lines, are not yet written
# (the database is slow or away): with long lines a count alone would let them hold gigabytes.
_MAX_UNWRITTEN = 20_000
_MAX_UNWRITTEN_BYTES = 64 << 20
_MAX_BATCHES_PER_ROUND = 64
# The buffer holds at most this many requests, and about this many bytes of their params.
_MAX_BUFFER = 32768
_MAX_BUFFER_BYTES = 64 << 20
_MAX_UNYIELDED = 32
_IDLE_POLL_SECONDS = 0.5


class Scheduler:
    def __init__(
        self,
        store: Store,
        caller: BackendCaller,
        *,
        concurrency: int,
        lease_seconds: float,
        sweep_interval_seconds: float,
        results_retention_seconds: float,
        max_lease_attempts: int = 5,
        shutdown_grace_seconds: float = 5.0,
        metrics: Metrics | None = None,
    ) -> None:
        self.store = store
        self.caller = caller
        self.metrics = metrics or caller.metrics
        self.concurrency = concurrency
        self.lease_seconds = lease_seconds
        self.max_lease_attempts = max_lease_attempts
        self.shutdown_grace_seconds = shutdown_grace_seconds
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self.sweeper = Sweeper(
            store,
            self,
            interval_seconds=sweep_interval_seconds,
            retention_micros=int(results_retention_seconds * MICROS),
            metrics=self.metrics,
        )

        self._buffer: PrefixQueue[LeasedRequest | None] = PrefixQueue(_buffer_key, _buffer_owner)
        self._held: dict[int, LeasedRequest] = {}  # leased by us and not yet written back
        self._unwritten: list[Completion] = []
        self._unwritten_bytes = 0  # of their lines
        self._batch_status: dict[int, str] = {}  # status of every batch that has not ended
        self._batch_betas: dict[int, list[str]] = {}  # `anthropic-beta` features of those that have some
        self._batch_codecs: dict[int, BatchCodec] = {}  # codecs of those not in the Anthropic format
        # Which batches the service told us of, and when (a count of such events), so that a store read
        # that began before we were told cannot drop them.
        self.generation = 0
        self._told_at: dict[int, int] = {}
        self._wake = asyncio.Event()
        self._flush_now = asyncio.Event()
        self._has_unwritten = asyncio.Event()
        self._writer_stop = False
        self._next_batch = 0
        self._unyielded = 0  # requests the workers took one after another without yielding to the loop
        self._refill_below = self.concurrency  # lease more once fewer than this are buffered
        self._pending_seen = True  # the last lease round found work: workers ask for more as they go
        self._rate_per_second = 0.0
        self._ramp = 0  # a buffer target doubled while the workers outrun the leases (see _buffer_target)
        self._starved = False  # a worker found the buffer empty since the last lease round
        self._params_bytes_each = 0  # mean params size of the last requests leased
        self._last_flush_at = time.perf_counter()
        self._tasks: list[asyncio.Task[None]] = []
        self._workers: list[asyncio.Task[None]] = []
        self._writer: asyncio.Task[None] | None = None

    # --- life cycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        active = await self.store.active_batches()
        if self.store.single_process:
            # Only this process uses this database, so every running request was orphaned by a crash.
            # (With other nodes about, only lapsed leases are anyone's: the sweeper hands those back.)
            recovered = await self.store.recover_expired_leases(active.seqs, now_micros(), every_lease=True)
            if recovered:
                logger.info("recovered %d requests left running by a previous process", recovered)
            active = await self.store.active_batches()  # recovery may have ended canceling batches
        self.observe_active_batches(active, read_since=self.generation)
        await self._heartbeat()
        loop = asyncio.get_running_loop()

        def changed_elsewhere() -> None:  # called on the store's listening thread
            loop.call_soon_threadsafe(self.sweeper.poke)

        self.store.subscribe(changed_elsewhere)
        self._writer = asyncio.create_task(self._write_loop(), name="overnight-writer")
        self._tasks = [
            asyncio.create_task(self._feed_loop(), name="overnight-feeder"),
            asyncio.create_task(self._renew_loop(), name="overnight-renewer"),
            asyncio.create_task(self.sweeper.run(), name="overnight-sweeper"),
        ]
        self._workers = [
            asyncio.create_task(self._work_loop(), name=f"overnight-worker-{n}") for n in range(self.concurrency)
        ]

    async def stop(self) -> None:
        """Stop leasing, let running calls finish for a bounded time, hand everything else back."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        unstarted: list[int] = []
        while not self._buffer.empty():
            item = self._buffer.get_nowait()
            if item is not None:
                unstarted.append(item.id)
        for _ in self._workers:
            self._buffer.put_nowait(None)
        _, still_running = await asyncio.wait(self._workers, timeout=self.shutdown_grace_seconds)
        for task in still_running:
            task.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        self._writer_stop = True
        self._has_unwritten.set()
        self._flush_now.set()
        if self._writer is not None:
            await self._writer
        not_started = set(unstarted)
        interrupted = [request_id for request_id in self._held if request_id not in not_started]
        await self.store.release_requests(unstarted, owner=self.owner, started=False, now=now_micros())
        await self.store.release_requests(interrupted, owner=self.owner, started=True, now=now_micros())
        if interrupted:
            logger.info("handed back %d interrupted requests; they will run again", len(interrupted))
        try:
            await self.store.leave(self.owner)
        except Exception as exc:  # its heartbeat lapses by itself; only the shared caps wait for that
            logger.warning("could not sign this worker off (%s)", exc)

    # --- what the service and the sweeper tell us -----------------------------------------------

    def wake(self) -> None:
        """There may be new work (new batch, recovered leases): lease again now."""
        self._wake.set()

    def batch_created(self, batch_seq: int, betas: Sequence[str], format: str = ANTHROPIC) -> None:
        self.generation += 1
        if format != ANTHROPIC:
            self._batch_codecs[batch_seq] = codec_for(format)
        self._told_at[batch_seq] = self.generation
        self._batch_status[batch_seq] = IN_PROGRESS
        if betas:
            self._batch_betas[batch_seq] = list(betas)
        self.wake()

    def batch_canceled(self, batch_seq: int) -> None:
        self._batch_status[batch_seq] = CANCELING

    def observe_active_batches(self, active: ActiveBatches, *, read_since: int) -> None:
        """Take the store's view of unfinished batches; one missing from it has ended (e.g. expired).

        `read_since` is `generation` just before the read began. The view may be older than what we
        know: a batch we were told of after that is kept (it may have committed after the read), and
        so is a cancel we heard of, since a batch never leaves canceling.
        """
        previous = self._batch_status
        current = {seq: CANCELING if previous.get(seq) == CANCELING else status for seq, status in active.statuses}
        for seq, status in previous.items():
            if self._told_at.get(seq, 0) > read_since:
                current[seq] = status
        self._told_at = {seq: told for seq, told in self._told_at.items() if told > read_since}
        self._batch_status = current
        self._batch_betas.update(active.betas)  # a batch's betas never change
        for seq in [seq for seq in self._batch_betas if seq not in current]:
            del self._batch_betas[seq]
        self._batch_codecs.update((seq, codec_for(format)) for seq, format in active.formats.items())
        for seq in [seq for seq in self._batch_codecs if seq not in current]:
            del self._batch_codecs[seq]

    # --- feeding ------------------------------------------------------------------------------

    def _buffer_target(self) -> int:
        # Enough buffered work for ~0.5 s at the current rate: a lease waits behind the flush in progress
        # (up to as many results), and the workers must not run dry meanwhile. The rate is measured at
        # flushes, so at a batch's start it lags far behind: while the workers find the buffer empty and
        # leases come back full, `_ramp` doubles the target each round instead. Never less than two per
        # worker, never more than _MAX_BUFFER requests or _MAX_BUFFER_BYTES of params.
        wanted = max(int(self._rate_per_second / 2), self._ramp)
        by_bytes = _MAX_BUFFER_BYTES // max(1, self._params_bytes_each)
        return max(2 * self.concurrency, min(_MAX_BUFFER, by_bytes, wanted))

    async def _feed_loop(self) -> None:
        while True:
            self._wake.clear()
            target = self._buffer_target()
            self._refill_below = target * 3 // 4 + 1
            if self._buffer.qsize() < self._refill_below:
                want = target - self._buffer.qsize()
                starved, self._starved = self._starved, False
                try:
                    leased = await self._lease_round(want)
                except Exception:
                    logger.exception("leasing failed; trying again shortly")
                    await asyncio.sleep(1)
                    continue
                # Nothing to lease: until told of new work (or the poll interval passes), workers
                # emptying the buffer do not ask again, which at a batch's tail they would per request.
                self._pending_seen = leased > 0
                if starved and leased >= want:
                    self._ramp = min(_MAX_BUFFER, 2 * target)
                elif leased < want:
                    self._ramp = 0  # the queue ran short: from here the rate alone sizes the buffer
                if leased:
                    continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), _IDLE_POLL_SECONDS)
            self._pending_seen = True

    async def _lease_round(self, want: int) -> int:
        """Lease about `want` more requests, an equal share from each in-progress batch; how many came."""
        # From what the service and the sweeper told us, not a fresh read: a read on a reader thread can
        # take many switch intervals to get the GIL back while the workers keep the loop busy.
        in_progress = sorted(seq for seq, status in self._batch_status.items() if status == IN_PROGRESS)
        if not in_progress:
            return 0
        # Rotate the starting batch so that, with more batches than one round asks, all get turns.
        count = min(len(in_progress), _MAX_BATCHES_PER_ROUND)
        start = self._next_batch % len(in_progress)
        self._next_batch = start + count
        chosen = (in_progress[start:] + in_progress[:start])[:count]
        share = -(-want // count)
        leased = await self.store.lease_requests(
            [(seq, share) for seq in chosen],
            owner=self.owner,
            lease_until=now_micros() + int(self.lease_seconds * MICROS),
        )
        if not leased:
            return 0
        self._params_bytes_each = sum(map(len, map(_PARAMS, leased))) // len(leased)
        self._held.update(zip(map(_ID, leased), leased, strict=True))
        if len(chosen) > 1:
            # Interleave batches so workers alternate between them instead of draining one first.
            by_batch: dict[int, list[LeasedRequest]] = defaultdict(list)
            for item in leased:
                by_batch[item.batch_seq].append(item)
            leased = [item for item in chain.from_iterable(zip_longest(*by_batch.values())) if item is not None]
        self._buffer.put_many(leased)
        return len(leased)

    # --- working ------------------------------------------------------------------------------

    async def _work_loop(self) -> None:
        while True:
            # A backend that answers without suspending (the fake one) would let one worker run the
            # whole buffer in one go, starving the feeder and the writer: yield now and then.
            self._unyielded += 1
            if self._unyielded >= _MAX_UNYIELDED:
                self._unyielded = 0
                await asyncio.sleep(0)
            # Straight from the buffer when it has something, without a coroutine for `get`.
            if self._buffer.qsize():
                item = self._buffer.get_nowait()
            else:
                self._starved = self._pending_seen
                item = await self._buffer.get()
            if item is None:
                return
            if self._pending_seen and self._buffer.qsize() < self._refill_below:
                self._wake.set()
            while len(self._unwritten) >= _MAX_UNWRITTEN or self._unwritten_bytes >= _MAX_UNWRITTEN_BYTES:
                await asyncio.sleep(_FLUSH_INTERVAL_SECONDS)
            self.metrics.requests_running += 1
            try:
                completion = await self._run(item)
            finally:
                self.metrics.requests_running -= 1
            if completion is None:
                self._held.pop(item.id, None)
            else:
                # Each event is set once as the count crosses its mark, not on every request after it.
                if not self._unwritten:
                    self._has_unwritten.set()
                self._unwritten.append(completion)
                if completion.line is not None:
                    before = self._unwritten_bytes
                    self._unwritten_bytes += len(completion.line)
                    if before < _FLUSH_BYTES <= self._unwritten_bytes:
                        self._flush_now.set()
                if len(self._unwritten) == _FLUSH_SIZE:
                    self._flush_now.set()

    def _wanted(self, item: LeasedRequest) -> bool:
        return self._batch_status.get(item.batch_seq) == IN_PROGRESS

    def _unwanted_outcome(self, item: LeasedRequest) -> Completion | None:
        """A request whose batch stopped before it was sent: canceled, or nothing if the batch ended
        (expiry has already stored its outcome)."""
        if self._batch_status.get(item.batch_seq) == CANCELING:
            return Completion(item.id, item.batch_seq, item.attempt, CANCELED, None)
        return None

    async def _run(self, item: LeasedRequest) -> Completion | None:
        if not self._wanted(item):
            return self._unwanted_outcome(item)
        codec = self._batch_codecs.get(item.batch_seq, ANTHROPIC_CODEC)
        if item.attempt > self.max_lease_attempts:
            return self._errored(
                item,
                ApiError(
                    f"Request abandoned after {self.max_lease_attempts} attempts: "
                    "the worker running it stopped each time"
                ),
                codec=codec,
            )
        backend: Backend | None = None
        try:
            params = codec.decode(item.params)
            if item.batch_seq in self._batch_betas:
                params = params.with_betas(self._batch_betas[item.batch_seq])
            backend = self.caller.router.resolve(params.model)  # kept for the result's metrics label
            message = await self.caller.call(params, backend=backend, still_wanted=lambda: self._wanted(item))
        except RequestWithdrawn:
            return self._unwanted_outcome(item)
        except OvernightError as error:
            return self._errored(item, error, backend, codec)
        except Exception:
            logger.exception("request %s of batch %s failed unexpectedly", item.custom_id, item.batch_seq)
            return self._errored(item, ApiError("Internal error while running this request"), backend, codec)
        assert backend is not None
        return Completion(
            item.id,
            item.batch_seq,
            item.attempt,
            SUCCEEDED,
            codec.succeeded_line(item.custom_id, message, params),
            _usage_of(message),
            backend.name,
        )

    @staticmethod
    def _errored(
        item: LeasedRequest, error: OvernightError, backend: Backend | None = None, codec: BatchCodec = ANTHROPIC_CODEC
    ) -> Completion:
        error_type = result_error_type(error)
        line = codec.errored_line(item.custom_id, error, error_type)
        backend_name = backend.name if backend is not None else NO_BACKEND
        return Completion(item.id, item.batch_seq, item.attempt, ERRORED, line, None, backend_name, error_type)

    # --- writing ------------------------------------------------------------------------------

    async def _write_loop(self) -> None:
        while True:
            # Asleep while there is nothing to write (an idle timer would steal the GIL from a local
            # model's thread); then a group forms for up to the flush interval, or until it is full.
            await self._has_unwritten.wait()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._flush_now.wait(), _FLUSH_INTERVAL_SECONDS)
            self._flush_now.clear()
            await self._flush()
            if not self._unwritten:
                self._has_unwritten.clear()
                if self._writer_stop:
                    return

    async def _flush(self) -> None:
        if not self._unwritten:
            return
        group, self._unwritten = self._unwritten, []
        group_bytes, self._unwritten_bytes = self._unwritten_bytes, 0
        try:
            completed = await self.store.complete_requests(group, owner=self.owner, now=now_micros())
        except Exception:
            logger.exception("writing %d results failed; retrying", len(group))
            self._unwritten[:0] = group
            self._unwritten_bytes += group_bytes
            await asyncio.sleep(0.5)
            return
        for completion in group:
            self._held.pop(completion.request_id, None)
        # Counted as written: a result that lost its lease meanwhile (expired, recovered) is not one.
        self.metrics.written(completed.written)
        self.metrics.batches_ended += completed.batches_ended
        now = time.perf_counter()
        elapsed = max(now - self._last_flush_at, _FLUSH_INTERVAL_SECONDS)
        self._last_flush_at = now
        # Up quickly, down slowly: at a batch's start the buffer target (half a second of work at this
        # rate) would otherwise take many flushes to grow, and the workers would wait for each lease.
        sample = len(group) / elapsed
        weight = 0.5 if sample > self._rate_per_second else 0.2
        self._rate_per_second += weight * (sample - self._rate_per_second)

    # --- leases -------------------------------------------------------------------------------

    async def _renew_loop(self) -> None:
        while True:
            await asyncio.sleep(self.lease_seconds / 3)
            try:
                await self.store.renew_leases(
                    list(self._held),
                    owner=self.owner,
                    lease_until=now_micros() + int(self.lease_seconds * MICROS),
                )
                await self._heartbeat()
            except Exception:
                logger.exception("renewing leases failed")

    async def _heartbeat(self) -> None:
        """Say this worker is alive, and take its part of the caps shared by the cluster's workers."""
        now = now_micros()
        share = await self.store.heartbeat(self.owner, now, live_after=now - int(self.lease_seconds * MICROS))
        self.caller.apply_node_share(share)


_ID = attrgetter("id")
_PARAMS = attrgetter("params")


def _buffer_key(item: LeasedRequest | None) -> object:
    return None if item is None else prefix_key(item.params)


def _buffer_owner(item: LeasedRequest | None) -> int | None:
    return None if item is None else item.batch_seq


def _usage_of(message: dict[str, Any]) -> tuple[int, int, int, int] | None:
    usage = message.get("usage")
    if not isinstance(usage, dict):
        return None
    return (
        int(usage.get("input_tokens") or 0),
        int(usage.get("output_tokens") or 0),
        int(usage.get("cache_creation_input_tokens") or 0),
        int(usage.get("cache_read_input_tokens") or 0),
    )


def result_error_type(error: OvernightError) -> str:
    """The error type a batch result reports for `error`.

    A result cannot tell the client to come back later, so a backend still rate limiting when the
    attempt budget ran out is reported as overloaded. Types the SDKs' result union does not know
    (`request_too_large` from an upstream's 413) become the general type of their class of status.
    """
    if isinstance(error, RateLimitError):
        return "overloaded_error"
    if error.error_type in RESULT_ERROR_TYPES:
        return error.error_type
    return "invalid_request_error" if error.status_code < 500 else "api_error"
