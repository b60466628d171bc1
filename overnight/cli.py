"""The command line: `overnight serve` (also `python -m overnight serve`) and `overnight batches ...`."""

from __future__ import annotations

import dataclasses
import fcntl
import gc
import importlib
import logging
import signal
import socket
import sys
from pathlib import Path
from types import FrameType
from typing import IO

import click
import uvicorn
import uvloop

from overnight.config import (
    DEFAULT_WORKSPACE,
    ROLES,
    WEBHOOK_SECRET_ENV,
    Settings,
    api_keys_from_environment,
    database_url_from_environment,
    parse_api_keys,
    upstream_api_key_from_environment,
)
from overnight.exceptions import OvernightError
from overnight.store import is_postgres, is_supported
from overnight.webhooks.config import WebhookConfigError, resolve_webhook_targets

logger = logging.getLogger("overnight")


class _Commands(click.Group):
    """`batches` (the client, in overnight/client/) is imported only when it is used: the SDK takes seconds
    to import, and `serve` needs none of it."""

    lazy = {"batches": "overnight.client.commands"}

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), *self.lazy])

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.lazy:
            command = getattr(importlib.import_module(self.lazy[cmd_name]), cmd_name)
            assert isinstance(command, click.Command)
            return command
        return super().get_command(ctx, cmd_name)


@click.group(cls=_Commands)
@click.version_option(package_name="overnight")
def main() -> None:
    """overnight: a self-hosted server for Anthropic's Message Batches API."""


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option(
    "--port",
    default=8000,
    show_default=True,
    type=click.IntRange(min=0, max=65535),
    help="Port to listen on (0: any free one, named in the start-up log line).",
)
@click.option(
    "--data-dir",
    default="overnight-data",
    show_default=True,
    type=click.Path(path_type=Path),
    help="Directory for the SQLite database and any other state.",
)
@click.option(
    "--database",
    "database_url",
    default=None,
    help="Database URL: sqlite:///PATH (overrides the file in --data-dir) or "
    "postgresql://USER[:PASSWORD]@HOST:PORT/DB, shared by any number of nodes "
    "(also OVERNIGHT_DATABASE_URL).",
)
@click.option(
    "--role",
    default="all",
    show_default=True,
    type=click.Choice(ROLES),
    help="all: API and worker; api: serve the API, run no requests; worker: run requests, "
    "serve only /healthz. api and worker need a PostgreSQL --database.",
)
@click.option(
    "--backend",
    default="local",
    show_default=True,
    type=click.Choice(["local", "anthropic", "openai", "fake"]),
    help="Backend that serves every model (ignored with --config).",
)
@click.option(
    "--config",
    "config_file",
    default=None,
    type=click.Path(path_type=Path, dir_okay=False),
    help="TOML file routing model names/patterns to backends (see README).",
)
@click.option(
    "--fake-latency-ms",
    default=0.0,
    show_default=True,
    type=click.FloatRange(min=0),
    help="Latency the fake backend adds to each request.",
)
@click.option("--upstream-url", default=None, help="Base URL of the upstream for --backend anthropic|openai.")
@click.option("--upstream-api-key", default=None, help="Key for the upstream (also OVERNIGHT_UPSTREAM_API_KEY).")
@click.option("--upstream-model", default=None, help="Model name sent upstream instead of the request's.")
@click.option(
    "--upstream-max-concurrency",
    default=None,
    type=click.IntRange(min=1),
    help="Most calls at once to the upstream (lowered automatically on 429s).",
)
@click.option(
    "--model-path",
    default=None,
    type=click.Path(path_type=Path, dir_okay=False),
    help="GGUF file for --backend local (default: SmolLM2-135M-Instruct, shipped on PyPI).",
)
@click.option(
    "--local-instances",
    default=1,
    show_default=True,
    type=click.IntRange(min=1),
    help="Copies of the local model, each running one request at a time.",
)
@click.option(
    "--concurrency",
    default=32,
    show_default=True,
    type=click.IntRange(min=1),
    help="Requests run at once across all backends.",
)
@click.option(
    "--api-key",
    "api_keys",
    multiple=True,
    metavar="KEY[:WORKSPACE]",
    help="Accepted API key and its workspace (repeatable; also OVERNIGHT_API_KEYS, "
    "comma-separated). With none, any key is accepted.",
)
@click.option(
    "--max-body-bytes",
    default=256 * 1024 * 1024,
    show_default=True,
    type=click.IntRange(min=1),
    help="Largest create-batch body.",
)
@click.option(
    "--body-read-timeout",
    "body_read_timeout_seconds",
    default=30.0,
    show_default=True,
    type=click.FloatRange(min=0, min_open=True),
    help="Seconds a request body may send nothing before it is answered 408.",
)
@click.option(
    "--max-head-bytes",
    default=64 * 1024,
    show_default=True,
    type=click.IntRange(min=1024),
    help="Largest request line plus headers (431 beyond).",
)
@click.option(
    "--head-timeout",
    "head_timeout_seconds",
    default=10.0,
    show_default=True,
    type=click.FloatRange(min=0, min_open=True),
    help="Seconds for a request line and headers to arrive (408 beyond; an idle new connection is closed).",
)
@click.option(
    "--max-connections",
    default=1024,
    show_default=True,
    type=click.IntRange(min=1),
    help="Open client connections; one more is answered 503 and closed.",
)
@click.option(
    "--max-in-flight-requests",
    default=256,
    show_default=True,
    type=click.IntRange(min=1),
    help="API requests handled at once; beyond, 529 overloaded_error with retry-after.",
)
@click.option(
    "--max-beta-features",
    default=32,
    show_default=True,
    type=click.IntRange(min=0),
    help="anthropic-beta features one call may name (400 beyond).",
)
@click.option(
    "--max-requests", default=100_000, show_default=True, type=click.IntRange(min=1), help="Most requests in one batch."
)
@click.option(
    "--openai-max-file-bytes",
    default=200 * 1024 * 1024,
    show_default=True,
    type=click.IntRange(min=1),
    help="Largest OpenAI batch input file (POST /v1/files).",
)
@click.option(
    "--openai-max-file-lines",
    default=50_000,
    show_default=True,
    type=click.IntRange(min=1),
    help="Most requests in one OpenAI batch input file.",
)
@click.option(
    "--openai-validation-hold",
    "openai_validation_hold_seconds",
    default=0.0,
    type=click.FloatRange(min=0),
    hidden=True,  # for tests: a batch that stays `validating` this long
)
@click.option(
    "--batch-ttl",
    "batch_ttl_seconds",
    default=86_400.0,
    show_default=True,
    type=click.FloatRange(min=0, min_open=True),
    help="Seconds until a batch expires.",
)
@click.option(
    "--results-retention",
    "results_retention_seconds",
    default=29 * 86_400.0,
    show_default=True,
    type=click.FloatRange(min=0, min_open=True),
    help="Seconds after creation until results are archived.",
)
@click.option("--public-url", default=None, help="Base URL for results_url (default: as the request came in).")
@click.option(
    "--max-attempts",
    default=5,
    show_default=True,
    type=click.IntRange(min=1),
    help="Backend calls per request on retryable errors (429/529/5xx/timeouts) before it errors.",
)
@click.option(
    "--retry-base-delay",
    "retry_base_delay_seconds",
    default=0.5,
    show_default=True,
    type=click.FloatRange(min=0),
    help="First retry's backoff ceiling in seconds (doubles per retry).",
)
@click.option(
    "--lease-seconds",
    default=60.0,
    show_default=True,
    type=click.FloatRange(min=0.1),
    help="How long a worker's claim on a request lasts without renewal.",
)
@click.option(
    "--sweep-interval",
    "sweep_interval_seconds",
    default=1.0,
    show_default=True,
    type=click.FloatRange(min=0.01),
    help="Seconds between expiry/archival/lease sweeps.",
)
@click.option(
    "--rate-limit-rpm",
    "rate_limit_per_minute",
    default=0,
    show_default=True,
    type=click.IntRange(min=0),
    help="Batch-endpoint calls per workspace per minute (0: off).",
)
@click.option(
    "--max-queued-requests",
    default=0,
    show_default=True,
    type=click.IntRange(min=0),
    help="Unfinished requests per workspace before create answers 429 (0: off).",
)
@click.option(
    "--webhook-url",
    default=None,
    help="POST a signed event here when a batch of the default workspace ends (see README).",
)
@click.option(
    "--webhook-secret",
    default=None,
    envvar=WEBHOOK_SECRET_ENV,
    show_envvar=True,
    help="Standard Webhooks secret (whsec_ + base64) that signs --webhook-url's events.",
)
@click.option(
    "--webhook-timeout",
    "webhook_timeout_seconds",
    default=10.0,
    show_default=True,
    type=click.FloatRange(min=0, min_open=True),
    help="Seconds a webhook receiver has to answer.",
)
@click.option(
    "--webhook-retry-base",
    "webhook_retry_base_seconds",
    default=5.0,
    show_default=True,
    type=click.FloatRange(min=0, min_open=True),
    help="First webhook retry's delay (doubles per retry).",
)
@click.option(
    "--webhook-retry-max",
    "webhook_retry_max_seconds",
    default=3600.0,
    show_default=True,
    type=click.FloatRange(min=0, min_open=True),
    help="Longest delay between webhook retries.",
)
@click.option(
    "--webhook-retry-window",
    "webhook_retry_window_seconds",
    default=86_400.0,
    show_default=True,
    type=click.FloatRange(min=0),
    help="Seconds after a batch ends that its webhook is retried.",
)
@click.option(
    "--log-level", default="info", show_default=True, type=click.Choice(["debug", "info", "warning", "error"])
)
def serve(
    log_level: str,
    api_keys: tuple[str, ...],
    public_url: str | None,
    upstream_api_key: str | None,
    database_url: str | None,
    webhook_url: str | None,
    webhook_secret: str | None,
    **options: object,
) -> None:
    """Start the server on its embedded defaults (SQLite in --data-dir)."""
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("alembic").setLevel(logging.WARNING)
    settings = Settings(
        api_keys=parse_api_keys([*api_keys_from_environment(), *api_keys]),
        public_url=public_url.rstrip("/") if public_url else None,
        upstream_api_key=upstream_api_key or upstream_api_key_from_environment(),
        database_url=database_url or database_url_from_environment(),
        **options,  # type: ignore[arg-type]
    )
    try:
        webhooks = resolve_webhook_targets(
            config_file=settings.config_file,
            flag_url=webhook_url,
            flag_secret=webhook_secret,
            flag_workspace=DEFAULT_WORKSPACE,
        )
    except WebhookConfigError as exc:
        raise click.ClickException(str(exc)) from None
    settings = dataclasses.replace(settings, webhooks=webhooks)
    if settings.database_url is not None and not is_supported(settings.database_url):
        raise click.BadParameter(
            "use sqlite:///PATH or postgresql://USER[:PASSWORD]@HOST:PORT/DB", param_hint="--database"
        )
    shared = settings.database_url is not None and is_postgres(settings.database_url)
    if settings.role != "all" and not shared:
        raise click.BadParameter(
            f"--role {settings.role} needs a database that several nodes share: --database postgresql://...",
            param_hint="--role",
        )
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    # SQLite: one server per data dir, since the store hands back every lease left at start-up.
    lock = None if shared else _lock_data_dir(settings)
    # Bound now, so that with --port 0 everything built below (e.g. the results_url in webhook events)
    # knows the real port; clients are refused until the server starts listening.
    listening = _listening_socket(settings.host, settings.port)
    settings = dataclasses.replace(settings, port=listening.getsockname()[1])
    from overnight.api.app import create_app
    from overnight.api.connections import ConnectionLimits, guarded_protocol
    from overnight.backends.config import RouterConfigError
    from overnight.backends.routing import router_from_settings

    if settings.open_mode:
        logger.warning("no API keys configured: accepting any key (one workspace, 'default')")
    try:
        router = router_from_settings(settings)
    except RouterConfigError as exc:
        raise click.ClickException(str(exc)) from None
    config = uvicorn.Config(
        create_app(settings, router),
        host=settings.host,
        port=settings.port,
        loop="uvloop",
        http=guarded_protocol(
            ConnectionLimits(
                max_head_bytes=settings.max_head_bytes,
                head_timeout_seconds=settings.head_timeout_seconds,
                max_connections=settings.max_connections,
            )
        ),
        lifespan="on",
        log_level=log_level,
        access_log=log_level == "debug",
        timeout_graceful_shutdown=10,
    )
    server = uvicorn.Server(config)

    async def start_backends_then_serve() -> None:
        # Backends start on the loop that will serve them (their queues and clients belong to it), and
        # before the server listens, so a bad model or config is one clear error, not a traceback.
        try:
            await router.start()
        except OvernightError as exc:
            await router.aclose()
            raise click.ClickException(f"cannot start the backends: {exc.message}") from None
        settle_heap()
        where = "PostgreSQL" if shared else settings.data_dir.resolve()
        # The port bound, not the one asked for: with --port 0 this line is how a caller learns it.
        logger.info(
            "overnight %s node serving on http://%s:%d (data in %s)", settings.role, settings.host, settings.port, where
        )
        await server.serve(sockets=[listening])

    # uvicorn shuts down gracefully on SIGTERM/SIGINT, then raises the signal again for the handler that
    # was there before it; a no-op one there makes a clean shutdown exit 0, as a service manager expects.
    for handled in (signal.SIGTERM, signal.SIGINT):
        signal.signal(handled, _after_graceful_shutdown)
    # The store's threads give the GIL up for every statement and must take it back from a busy event
    # loop, which by default keeps it up to 5 ms: each write or lease would wait that long per statement
    # while the workers run. A shorter turn lets them in sooner, at the cost of more (cheap) switches.
    sys.setswitchinterval(_SWITCH_INTERVAL_SECONDS)
    uvloop.run(start_backends_then_serve())
    if lock is not None:
        lock.close()
    if not server.started:
        sys.exit(1)


_SWITCH_INTERVAL_SECONDS = 0.001
# Tracked objects allocated (net) before the youngest generation is collected; Python's default is 700.
_YOUNG_GC_THRESHOLD = 50_000


def settle_heap() -> None:
    """Leave what startup built (modules, the app, a loaded model's wrappers) out of garbage collection
    from now on, and collect the youngest generation less often.

    A running batch allocates objects by the hundred thousand (leased requests, their results), which
    sets off full collections; each walked every object startup left behind, tens of milliseconds of
    the event loop's time every second or so. The young threshold bounds how much garbage in
    reference cycles waits for a collection: a few megabytes.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(_YOUNG_GC_THRESHOLD, *gc.get_threshold()[1:])


def _listening_socket(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise click.ClickException(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    return sock


def _after_graceful_shutdown(signum: int, frame: FrameType | None) -> None:
    return None


def _lock_data_dir(settings: Settings) -> IO[str]:
    """One server per SQLite data dir: leases are reclaimed at start on that assumption."""
    lock = (settings.data_dir / "overnight.lock").open("w")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise click.ClickException(
            f"another overnight server is using {settings.data_dir}; use a different --data-dir"
        ) from None
    return lock
