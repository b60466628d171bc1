"""The app factory: wires store, engine, backends and routes together for one settings object."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect

from overnight.api.auth import RateLimiter
from overnight.api.context import Context
from overnight.api.dashboard import dashboard_routes
from overnight.api.errors import (
    handle_client_disconnect,
    handle_http_exception,
    handle_overnight_error,
    handle_store_unavailable,
    handle_unexpected,
)
from overnight.api.metrics import MetricsMiddleware
from overnight.api.middleware import RequestIdMiddleware
from overnight.api.routes import routes, worker_routes
from overnight.api.shedding import LoadShedder
from overnight.config import Settings
from overnight.engine import Scheduler
from overnight.engine.calls import BackendCaller, BackendRouter, RetryPolicy
from overnight.engine.sweeper import Sweeper
from overnight.engine.webhooks import start_webhooks
from overnight.exceptions import OvernightError
from overnight.metrics import Metrics
from overnight.openai_api.routes import openai_routes
from overnight.openai_api.service import OpenAIService
from overnight.service import BatchService
from overnight.store import StoreUnavailableError, open_store
from overnight.timestamps import MICROS, now_micros

logger = logging.getLogger(__name__)

_SHUTDOWN_STEP_SECONDS = 5.0


async def _bounded_step(name: str, step: Awaitable[object], *, seconds: float = _SHUTDOWN_STEP_SECONDS) -> None:
    """One shutdown step, given up after `seconds`: a process asked to stop must stop (whatever it still
    held is safe: its leases lapse and other nodes, or the next start, run those requests)."""
    try:
        async with asyncio.timeout(seconds):
            await step
    except TimeoutError:
        logger.warning("shutdown: the %s did not stop within %.0f s; going on without it", name, seconds)


def create_app(settings: Settings, router: BackendRouter) -> Starlette:
    """An ASGI app that owns its store and engine for the length of its lifespan.

    The router's backends must already be started (`await router.start()`, on the serving loop);
    the app closes them when it shuts down.
    """
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        store = open_store(settings.resolved_database_url())
        try:
            await asyncio.get_running_loop().run_in_executor(None, store.migrate)
        except Exception:
            store.close()
            raise
        caller = BackendCaller(
            router,
            RetryPolicy(max_attempts=settings.max_attempts, base_delay_seconds=settings.retry_base_delay_seconds),
            default_limit=settings.concurrency,
            metrics=metrics,
        )
        scheduler = (
            Scheduler(
                store,
                caller,
                concurrency=settings.concurrency,
                lease_seconds=settings.lease_seconds,
                sweep_interval_seconds=settings.sweep_interval_seconds,
                results_retention_seconds=settings.results_retention_seconds,
                metrics=metrics,
            )
            if settings.role in ("all", "worker")
            else None
        )
        # An api node runs no requests, but it sweeps too (expiry, archival, lapsed leases): every
        # sweep statement is guarded, so any number of nodes may run them at once.
        sweeper = (
            Sweeper(
                store,
                None,
                interval_seconds=settings.sweep_interval_seconds,
                retention_micros=int(settings.results_retention_seconds * MICROS),
                metrics=metrics,
            )
            if scheduler is None
            else None
        )
        app.state.context = Context(
            settings=settings,
            batches=BatchService(store, settings, scheduler, metrics),
            rate_limiter=RateLimiter(settings.rate_limit_per_minute),
            caller=caller,
            router=router,
            started_at=now_micros(),
            metrics=metrics,
            openai=OpenAIService(store, settings, router, scheduler, metrics),
        )
        sweeping = asyncio.create_task(sweeper.run(), name="overnight-sweeper") if sweeper else None
        sending = start_webhooks(store, settings, owner=scheduler.owner if scheduler is not None else None)
        if scheduler is not None:
            await scheduler.start()
        await app.state.context.openai.start()  # validates OpenAI batches where the engine runs
        try:
            yield
        finally:
            for name, task in (("sweeper", sweeping), ("webhook sender", sending)):
                if task is not None:
                    task.cancel()
                    await _bounded_step(name, asyncio.gather(task, return_exceptions=True))
            await _bounded_step("OpenAI batch validator", app.state.context.openai.stop())
            if scheduler is not None:
                # Its workers get `shutdown_grace_seconds` themselves; this bounds the hand-back after them.
                await _bounded_step("scheduler", scheduler.stop(), seconds=_SHUTDOWN_STEP_SECONDS * 2)
            await _bounded_step("backends", router.aclose())
            store.close()

    app = Starlette(
        routes=[*routes, *openai_routes, *dashboard_routes] if settings.role != "worker" else worker_routes,
        middleware=[
            Middleware(RequestIdMiddleware),
            Middleware(MetricsMiddleware, metrics=metrics),
            Middleware(LoadShedder, limit=settings.max_in_flight_requests),
        ],
        exception_handlers={
            OvernightError: handle_overnight_error,
            StoreUnavailableError: handle_store_unavailable,
            HTTPException: handle_http_exception,
            ClientDisconnect: handle_client_disconnect,
            Exception: handle_unexpected,
        },
        lifespan=lifespan,
    )
    # `/v1/messages/batches/` is an unknown path (404 in our envelope), not a redirect with no body.
    app.router.redirect_slashes = False
    return app
