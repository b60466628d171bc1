"""Validating OpenAI batches in the background, on every node that runs the engine.

`POST /v1/batches` only stores a `validating` row. A validator claims it (a lease on the row, renewed
while it works; a claim whose holder died lapses and is anyone's) and reads the input file once from
its stored chunks, in one transaction that first compare-and-sets the claim, then checks each chunk's
lines and enqueues them as the engine batch's requests, and commits only if every line passed. So a
batch is enqueued exactly once whatever crashes, cancels and other validators do, and a file of any
size is checked and enqueued in the memory of a few chunks, holding nothing else but the custom_ids.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import secrets
import socket
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import msgspec

from overnight.config import Settings
from overnight.openai_api.input_file import InputChecker, batch_error, checked_requests
from overnight.store import QueueFullError, StoreUnavailableError
from overnight.store.openai import InputFileGoneError, OpenAIBatchRecord, OpenAIStore
from overnight.store.records import BatchRecord
from overnight.timestamps import MICROS, now_micros

logger = logging.getLogger(__name__)

_CONCURRENT_VALIDATIONS = 2
_POLL_SECONDS = 0.25  # how soon a batch created on another node is picked up (no wake-up reaches us)
_STOP_SECONDS = 5.0


class _Aborted(Exception):
    """The claim was lost (cancelled, lapsed) or the node is stopping: drop the work, store nothing."""


class _InvalidInput(Exception):
    """The input file failed its check: these are the batch's errors."""

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        super().__init__(f"{len(errors)} errors")
        self.errors = errors


def file_not_found(file_id: str) -> dict[str, Any]:
    return batch_error("invalid_request", f"Cannot find file {file_id}.", param="file_id")


class Validator:
    """Claims validating batches, at most `_CONCURRENT_VALIDATIONS` at once, and takes each to
    `in_progress` (`on_started` is told of the engine batch) or `failed`."""

    def __init__(
        self,
        store: OpenAIStore,
        settings: Settings,
        *,
        model_is_served: Callable[[str], bool],
        on_started: Callable[[BatchRecord], None],
    ) -> None:
        self.store = store
        self.settings = settings
        self.model_is_served = model_is_served
        self.on_started = on_started
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}:validate"
        self.lease_seconds = settings.lease_seconds
        self._wake = asyncio.Event()
        self._loop_task: asyncio.Task[None] | None = None
        self._running: dict[int, tuple[asyncio.Task[None], threading.Event]] = {}

    # --- life cycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        if self.store.store.single_process:
            # Only this process uses this database: every claim was left by a crash.
            released = await self.store.release_validations(owner=None)
            if released:
                logger.info("%d batches left validating by a previous process will be validated again", released)
        self._loop_task = asyncio.create_task(self._run(), name="openai-validator")

    async def stop(self) -> None:
        """Stop claiming, drop the validations under way and hand their claims back."""
        if self._loop_task is not None:
            self._loop_task.cancel()
            await asyncio.gather(self._loop_task, return_exceptions=True)
        running = dict(self._running)
        for task, abort in running.values():
            abort.set()
            task.cancel()
        if running:
            await asyncio.wait([task for task, _ in running.values()], timeout=_STOP_SECONDS)
            try:
                await self.store.release_validations(list(running), owner=self.owner)
            except Exception as exc:  # the claims lapse by themselves
                logger.warning("could not hand back validation claims (%s)", exc)

    def wake(self) -> None:
        """A batch was created here: claim it now rather than at the next poll."""
        self._wake.set()

    # --- claiming --------------------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            self._wake.clear()
            try:
                while len(self._running) < _CONCURRENT_VALIDATIONS:
                    now = now_micros()
                    record = await self.store.claim_validation(
                        owner=self.owner, now=now, lease_until=now + int(self.lease_seconds * MICROS)
                    )
                    if record is None:
                        break
                    abort = threading.Event()
                    task = asyncio.create_task(self._validate(record, abort), name=f"openai-validate-{record.id}")
                    self._running[record.seq] = (task, abort)
                    task.add_done_callback(functools.partial(self._finished, record.seq))
            except StoreUnavailableError as exc:
                logger.warning("claiming batches to validate failed, the database is unavailable (%s)", exc)
            except Exception:
                logger.exception("claiming batches to validate failed; trying again shortly")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), _POLL_SECONDS)

    def _finished(self, seq: int, _: object) -> None:
        self._running.pop(seq, None)
        self._wake.set()

    # --- one batch -----------------------------------------------------------------------------

    async def _validate(self, record: OpenAIBatchRecord, abort: threading.Event) -> None:
        renewing = asyncio.create_task(self._renew(record.seq, abort))
        try:
            await self._validate_claimed(record, abort)
        except (_Aborted, asyncio.CancelledError):
            logger.info("validation of batch %s stopped (cancelled, claim lost or shutting down)", record.id)
        except StoreUnavailableError as exc:
            logger.warning("validating batch %s failed, the database is unavailable (%s); will retry", record.id, exc)
            await self._release(record)
        except Exception:
            logger.exception("validating batch %s failed", record.id)
            error = batch_error("validation_error", "The input file could not be validated (server error).")
            try:
                await self._fail(record, [error])
            except Exception as exc:  # the claim lapses; another try then
                logger.warning("could not fail batch %s (%s)", record.id, exc)
        finally:
            renewing.cancel()

    async def _validate_claimed(self, record: OpenAIBatchRecord, abort: threading.Event) -> None:
        if self.settings.openai_validation_hold_seconds:  # tests: a validation that takes this long
            await asyncio.sleep(self.settings.openai_validation_hold_seconds)
        if await self.store.get_file(record.workspace, record.input_file_id) is None:
            await self._fail(record, [file_not_found(record.input_file_id)])
            return
        checker = self._checker(record)

        def item_groups(chunks: Iterable[bytes]) -> Iterator[list[tuple[str, msgspec.Raw]]]:
            nonlocal checker
            # Afresh for each try of the transaction: one that lost a race (a deadlock on PostgreSQL) runs
            # again, and must not find the file's custom_ids already seen.
            checker = self._checker(record)
            return checked_requests(checker, _until(abort, chunks))

        def verdict() -> tuple[int, str | None]:
            if abort.is_set():
                raise _Aborted()
            if checker.errors:
                raise _InvalidInput(checker.errors)
            return checker.total, checker.model

        try:
            batch = await self.store.start_validated(
                record,
                owner=self.owner,
                verdict=verdict,
                item_groups=item_groups,
                now=now_micros(),
                max_queued_requests=self.settings.max_queued_requests,
            )
        except _InvalidInput as invalid:
            await self._fail(record, invalid.errors)
            return
        except InputFileGoneError:
            await self._fail(record, [file_not_found(record.input_file_id)])
            return
        except QueueFullError as exc:
            message = (
                f"Enqueued request limit reached for this workspace: at most {exc.limit} requests may wait. "
                "Try again once some in_progress batches have completed."
            )
            await self._fail(record, [batch_error("request_limit_exceeded", message)])
            return
        if batch is None:
            raise _Aborted()
        logger.info("batch %s validated: %d requests in progress", record.id, batch.total)
        self.on_started(batch)

    def _checker(self, record: OpenAIBatchRecord) -> InputChecker:
        return InputChecker(
            endpoint=record.endpoint,
            max_lines=self.settings.openai_max_file_lines,
            model_is_served=self.model_is_served,
        )

    async def _renew(self, seq: int, abort: threading.Event) -> None:
        while True:
            await asyncio.sleep(self.lease_seconds / 3)
            try:
                held = await self.store.renew_validation(
                    seq, owner=self.owner, lease_until=now_micros() + int(self.lease_seconds * MICROS)
                )
            except Exception as exc:  # keep trying: the claim is good until it lapses
                logger.warning("renewing a validation claim failed (%s)", exc)
                continue
            if not held:
                abort.set()
                return

    async def _fail(self, record: OpenAIBatchRecord, errors: list[dict[str, Any]]) -> None:
        if await self.store.fail_validation(
            record.seq, owner=self.owner, errors=msgspec.json.encode(errors), now=now_micros()
        ):
            logger.info("batch %s failed validation (%s)", record.id, errors[0]["code"])

    async def _release(self, record: OpenAIBatchRecord) -> None:
        try:
            await self.store.release_validations([record.seq], owner=self.owner)
        except Exception as exc:  # it lapses by itself
            logger.warning("could not hand back the claim on batch %s (%s)", record.id, exc)


def _until(abort: threading.Event, chunks: Iterable[bytes]) -> Iterator[bytes]:
    for chunk in chunks:
        if abort.is_set():
            raise _Aborted()
        yield chunk
