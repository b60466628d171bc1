"""The `overnight batches` command group: submit, list, get, wait, results, cancel, delete.

Output contract (scripts rely on it): results and machine-readable output (`--json`, a submitted batch's
id, results JSONL) go to stdout; messages and progress go to stderr. Exit codes are in `ExitCode`.
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from enum import IntEnum
from pathlib import Path
from typing import IO, Any, ParamSpec, TypeVar

import anthropic
import click
from anthropic.types.messages import MessageBatch
from rich.console import Console

from overnight.client.input_file import InputFileError, read_batch_input
from overnight.client.progress import Counts, summary, wait_for_end

DEFAULT_BASE_URL = "http://127.0.0.1:8000"
# overnight in open mode accepts any key; the SDK insists on one, so a placeholder stands in.
PLACEHOLDER_API_KEY = "overnight-no-key"

P = ParamSpec("P")
R = TypeVar("R")


class ExitCode(IntEnum):
    OK = 0  # done; for submit --wait and wait: the batch ended and every request succeeded
    NOT_ALL_SUCCEEDED = 1  # the batch ended with some request errored, canceled or expired
    BAD_INPUT = 2  # bad command line or input file: nothing was sent
    API_ERROR = 3  # the server answered with an error (unknown batch, bad key, ...)
    UNREACHABLE = 4  # no answer from the server (connection refused, timeout)
    INTERRUPTED = 130  # Ctrl-C while waiting (the batch itself goes on)


class CliError(click.ClickException):
    def __init__(self, message: str, exit_code: ExitCode) -> None:
        super().__init__(message)
        self.exit_code = exit_code  # type: ignore[misc]  # click declares a ClassVar, but reads it per instance


def _stderr() -> Console:
    return Console(stderr=True, highlight=False, soft_wrap=True)  # a long line stays one line in a log


def _client(ctx: click.Context) -> anthropic.Anthropic:
    client = ctx.obj
    assert isinstance(client, anthropic.Anthropic)
    return client


def _api_errors(command: Callable[P, R]) -> Callable[P, R]:
    """Turn the SDK's errors into one clear line on stderr and a documented exit code."""

    @functools.wraps(command)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return command(*args, **kwargs)
        except anthropic.APIStatusError as exc:
            raise CliError(f"the server answered {exc.status_code}: {_error_text(exc)}", ExitCode.API_ERROR) from None
        except anthropic.APIConnectionError as exc:
            client = click.get_current_context().obj
            where = client.base_url if isinstance(client, anthropic.Anthropic) else "the server"
            raise CliError(
                f"cannot reach {where} ({exc}); is it running? (--base-url, ANTHROPIC_BASE_URL)", ExitCode.UNREACHABLE
            ) from None
        except KeyboardInterrupt:
            raise CliError("interrupted; the batch goes on (overnight batches wait ID)", ExitCode.INTERRUPTED) from None

    return wrapper


def _error_text(exc: anthropic.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        error = body["error"]
        return f"{error.get('type', 'error')}: {error.get('message', '')}"
    return exc.message


@click.group()
@click.option(
    "--base-url",
    envvar="ANTHROPIC_BASE_URL",
    default=DEFAULT_BASE_URL,
    show_default=True,
    help="Server to talk to: overnight, or https://api.anthropic.com (also ANTHROPIC_BASE_URL).",
)
@click.option(
    "--api-key",
    envvar="ANTHROPIC_API_KEY",
    default=None,
    help="API key sent as x-api-key (also ANTHROPIC_API_KEY; optional for an open-mode overnight).",
)
@click.option(
    "--timeout",
    "timeout_seconds",
    default=600.0,
    show_default=True,
    type=click.FloatRange(min=0.1),
    help="Seconds one HTTP call may take.",
)
@click.pass_context
def batches(ctx: click.Context, base_url: str, api_key: str | None, timeout_seconds: float) -> None:
    """Submit and watch Message Batches on any server (overnight or the real API), through the official SDK.

    \b
    Exit codes:
      0  done (submit --wait, wait: every request succeeded)
      1  the batch ended with requests errored, canceled or expired
      2  bad command line or input file (nothing was sent)
      3  the server answered with an error (unknown batch, bad key, ...)
      4  the server could not be reached
      130  interrupted while waiting (the batch goes on)
    """
    ctx.obj = anthropic.Anthropic(
        base_url=base_url, api_key=api_key or PLACEHOLDER_API_KEY, timeout=timeout_seconds, max_retries=2
    )
    ctx.call_on_close(ctx.obj.close)


_poll = click.option(
    "--poll-interval",
    "poll_seconds",
    default=1.0,
    show_default=True,
    type=click.FloatRange(min=0.05),
    help="Seconds between status checks.",
)
_report = click.option(
    "--report-interval",
    "report_seconds",
    default=5.0,
    show_default=True,
    type=click.FloatRange(min=0),
    help="Seconds between progress lines when stderr is no terminal.",
)


@batches.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, allow_dash=True, path_type=Path))
@click.option("--wait", "wait_", is_flag=True, help="Wait for the batch to end, showing progress.")
@_poll
@_report
@click.pass_context
@_api_errors
def submit(ctx: click.Context, file: Path, wait_: bool, poll_seconds: float, report_seconds: float) -> None:
    """Create a batch from FILE (JSONL: one {"custom_id", "params"} per line; - reads stdin).

    The whole file is checked first; on any problem nothing is sent. The batch id is printed alone as the
    last line of stdout.
    """
    console = _stderr()
    try:
        if str(file) == "-":
            batch_input = read_batch_input(sys.stdin.buffer)
        else:
            with file.open("rb") as stream:
                batch_input = read_batch_input(stream)
    except InputFileError as exc:
        raise CliError(f"{file}: {exc}; nothing was sent", ExitCode.BAD_INPUT) from None
    client = _client(ctx)
    batch = client.messages.batches.create(requests=batch_input.requests)  # type: ignore[arg-type]
    console.print(f"submitted {len(batch_input.requests):,} requests as batch {batch.id}", markup=False)
    click.echo(batch.id)
    if wait_:
        _wait_and_exit(client, batch.id, console, poll_seconds, report_seconds)


@batches.command("wait")
@click.argument("batch_id")
@_poll
@_report
@click.pass_context
@_api_errors
def wait_command(ctx: click.Context, batch_id: str, poll_seconds: float, report_seconds: float) -> None:
    """Wait for a batch to end, showing progress; exit 0 only if every request succeeded."""
    _wait_and_exit(_client(ctx), batch_id, _stderr(), poll_seconds, report_seconds)


def _wait_and_exit(
    client: anthropic.Anthropic, batch_id: str, console: Console, poll_seconds: float, report_seconds: float
) -> None:
    batch = wait_for_end(
        lambda: client.messages.batches.retrieve(batch_id),
        console,
        poll_seconds=poll_seconds,
        report_seconds=report_seconds,
    )
    counts = Counts.of(batch)
    console.print(f"{batch.id} ended: {counts.done}/{counts.total} done ({summary(counts)})", markup=False)
    if counts.succeeded != counts.total:
        console.print(f"results: overnight batches results {batch.id}", markup=False)
        sys.exit(ExitCode.NOT_ALL_SUCCEEDED)


@batches.command("list")
@click.option(
    "--limit", default=20, show_default=True, type=click.IntRange(min=1), help="Most batches to show (newest first)."
)
@click.option("--json", "as_json", is_flag=True, help="One JSON batch object per line.")
@click.pass_context
@_api_errors
def list_command(ctx: click.Context, limit: int, as_json: bool) -> None:
    """List the workspace's batches, newest first."""
    shown: list[MessageBatch] = []
    for batch in _client(ctx).messages.batches.list(limit=min(limit, 1000)):
        shown.append(batch)
        if len(shown) >= limit:
            break
    if as_json:
        for batch in shown:
            click.echo(batch.to_json(indent=None))
        return
    if not shown:
        _stderr().print("no batches")
        return
    click.echo(f"{'ID':<40} {'STATUS':<12} {'DONE':>15}  {'ERRORED':>7}  CREATED")
    for batch in shown:
        counts = Counts.of(batch)
        click.echo(
            f"{batch.id:<40} {batch.processing_status:<12} {f'{counts.done}/{counts.total}':>15}  "
            f"{counts.errored:>7}  {batch.created_at.isoformat(timespec='seconds')}"
        )


@batches.command()
@click.argument("batch_id")
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help='The batch object as JSON, with overnight\'s token usage under "usage" (null if none).',
)
@click.pass_context
@_api_errors
def get(ctx: click.Context, batch_id: str, as_json: bool) -> None:
    """Show a batch: status, request counts, times and (from overnight) token usage."""
    client = _client(ctx)
    batch = client.messages.batches.retrieve(batch_id)
    usage = batch_usage(client, batch_id)
    if as_json:
        click.echo(json.dumps({**json.loads(batch.to_json(indent=None)), "usage": usage}))
        return
    counts = Counts.of(batch)
    rows: list[tuple[str, str]] = [
        ("id", batch.id),
        ("status", batch.processing_status),
        ("requests", f"{counts.total} ({counts.done} done, {counts.processing} processing)"),
        ("counts", summary(counts)),
        ("created", batch.created_at.isoformat()),
        ("expires", batch.expires_at.isoformat()),
    ]
    for label, moment in (
        ("cancel asked", batch.cancel_initiated_at),
        ("ended", batch.ended_at),
        ("archived", batch.archived_at),
    ):
        if moment is not None:
            rows.append((label, moment.isoformat()))
    if usage is None:
        rows.append(("usage", "n/a (the server reports no usage per batch)"))
    else:
        rows.append(("input tokens", f"{usage.get('input_tokens', 0):,}"))
        rows.append(("output tokens", f"{usage.get('output_tokens', 0):,}"))
        rows.append(
            (
                "cache tokens",
                f"{usage.get('cache_creation_input_tokens', 0):,} written, "
                f"{usage.get('cache_read_input_tokens', 0):,} read",
            )
        )
    rows.append(("results", batch.results_url or "not yet (the batch has not ended)"))
    for label, value in rows:
        click.echo(f"{label + ':':<15} {value}")


def batch_usage(client: anthropic.Anthropic, batch_id: str) -> dict[str, Any] | None:
    """overnight's token sums for the batch, from its own endpoint; None from a server without it."""
    try:
        usage = client.get(f"/v1/overnight/batches/{batch_id}/usage", cast_to=object)
    except (anthropic.NotFoundError, anthropic.BadRequestError, anthropic.PermissionDeniedError):
        return None  # e.g. the real API: no such path
    return usage if isinstance(usage, dict) else None


@batches.command()
@click.argument("batch_id")
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    default=None,
    help="Write the JSONL here instead of stdout.",
)
@click.pass_context
@_api_errors
def results(ctx: click.Context, batch_id: str, output: Path | None) -> None:
    """Download an ended batch's results: JSONL, one line per request, as the server sent them."""
    client = _client(ctx)
    batch = client.messages.batches.retrieve(batch_id)
    if batch.results_url is None:
        raise CliError(
            f"{batch_id} has not ended yet ({batch.processing_status}); wait with: overnight batches wait {batch_id}",
            ExitCode.API_ERROR,
        )
    decoder = client.messages.batches.results(batch_id)
    try:
        if output is None:
            _copy(decoder.http_response.iter_bytes(), sys.stdout.buffer)
            sys.stdout.buffer.flush()
        else:
            partial = output.with_name(f".{output.name}.partial")
            with partial.open("wb") as sink:
                _copy(decoder.http_response.iter_bytes(), sink)
            partial.replace(output)  # never a half-written file under the name asked for
            _stderr().print(f"wrote {_total_requests(batch)} results to {output}", markup=False)
    finally:
        decoder.close()


def _copy(chunks: Any, sink: IO[bytes]) -> None:
    for chunk in chunks:
        sink.write(chunk)


def _total_requests(batch: MessageBatch) -> int:
    return Counts.of(batch).total


@batches.command()
@click.argument("batch_id")
@click.option("--json", "as_json", is_flag=True, help="The batch object the server answered, as JSON.")
@click.pass_context
@_api_errors
def cancel(ctx: click.Context, batch_id: str, as_json: bool) -> None:
    """Ask a batch to stop: requests not yet run end as canceled."""
    batch = _client(ctx).messages.batches.cancel(batch_id)
    click.echo(batch.to_json(indent=None) if as_json else f"{batch.id} {batch.processing_status}")


@batches.command()
@click.argument("batch_id")
@click.option("--json", "as_json", is_flag=True, help="The server's answer (a message_batch_deleted object) as JSON.")
@click.pass_context
@_api_errors
def delete(ctx: click.Context, batch_id: str, as_json: bool) -> None:
    """Delete an ended batch and its results."""
    deleted = _client(ctx).messages.batches.delete(batch_id)
    click.echo(deleted.to_json(indent=None) if as_json else f"{deleted.id} deleted")
