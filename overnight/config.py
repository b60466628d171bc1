"""One frozen settings object, built from flags and the environment, passed down from the CLI."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from overnight.webhooks.config import WebhookTarget

DEFAULT_WORKSPACE = "default"
API_KEYS_ENV = "OVERNIGHT_API_KEYS"
UPSTREAM_API_KEY_ENV = "OVERNIGHT_UPSTREAM_API_KEY"
WEBHOOK_SECRET_ENV = "OVERNIGHT_WEBHOOK_SECRET"
DATABASE_URL_ENV = "OVERNIGHT_DATABASE_URL"
ROLES = ("all", "api", "worker")


@dataclass(frozen=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 8000
    data_dir: Path = Path("overnight-data")
    database_url: str | None = None
    role: str = "all"
    """`all`: API and worker; `api`: the HTTP API only; `worker`: runs requests, serves only /healthz."""
    backend: str = "local"
    config_file: Path | None = None
    fake_latency_ms: float = 0.0
    upstream_url: str | None = None
    upstream_api_key: str | None = None
    upstream_model: str | None = None
    upstream_max_concurrency: int | None = None
    model_path: Path | None = None
    local_instances: int = 1
    concurrency: int = 32
    api_keys: Mapping[str, str] = field(default_factory=dict)
    """API key → workspace. Empty means open mode: any key, one default workspace."""
    max_body_bytes: int = 256 * 1024 * 1024
    body_read_timeout_seconds: float = 30.0
    """A request body that sends nothing for this long is answered 408 and its connection closed."""
    max_head_bytes: int = 64 * 1024
    """Request line and headers together; longer is answered 431."""
    head_timeout_seconds: float = 10.0
    """A request line and headers must arrive within this (408, or closed if nothing came)."""
    max_connections: int = 1024
    """Open client connections; one more is answered 503 and closed."""
    max_in_flight_requests: int = 256
    """API requests handled at once; beyond, 529 overloaded_error with retry-after."""
    max_beta_features: int = 32
    """`anthropic-beta` features one call may name (each at most 128 characters); more is a 400."""
    max_requests: int = 100_000
    openai_max_file_bytes: int = 200 * 1024 * 1024
    """Largest OpenAI-format batch input file (`POST /v1/files`; OpenAI's limit)."""
    openai_max_file_lines: int = 50_000
    """Most requests in one OpenAI-format batch input file (OpenAI's limit)."""
    openai_validation_hold_seconds: float = 0.0
    """For tests only: each OpenAI batch validation waits this long after claiming its batch."""
    batch_ttl_seconds: float = 86_400.0
    results_retention_seconds: float = 29 * 86_400.0
    public_url: str | None = None
    max_attempts: int = 5
    """Calls per request on retryable backend errors (429, 529, 5xx, timeouts) before it is errored."""
    retry_base_delay_seconds: float = 0.5
    lease_seconds: float = 60.0
    sweep_interval_seconds: float = 1.0
    rate_limit_per_minute: int = 0
    """Batch-endpoint calls per workspace per minute; 0 turns the limit off."""
    max_queued_requests: int = 0
    """Requests waiting per workspace before create answers 429; 0 turns the limit off."""
    webhooks: Mapping[str, WebhookTarget] = field(default_factory=dict)
    """Workspace → where its `message_batch.ended` events go (see `overnight.webhooks`)."""
    webhook_timeout_seconds: float = 10.0
    webhook_retry_base_seconds: float = 5.0
    webhook_retry_max_seconds: float = 3600.0
    webhook_retry_window_seconds: float = 86_400.0
    """Failed deliveries are retried with backoff for this long after the event, then given up."""

    @property
    def open_mode(self) -> bool:
        return not self.api_keys

    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'overnight.sqlite3').resolve()}"


def parse_api_keys(values: Iterable[str]) -> dict[str, str]:
    """`KEY[:WORKSPACE]` items (comma-separated lists allowed) → {key: workspace}."""
    keys: dict[str, str] = {}
    for value in values:
        for item in value.split(","):
            item = item.strip()
            if not item:
                continue
            key, _, workspace = item.partition(":")
            keys[key] = workspace or DEFAULT_WORKSPACE
    return keys


def database_url_from_environment() -> str | None:
    return os.environ.get(DATABASE_URL_ENV) or None


def upstream_api_key_from_environment() -> str | None:
    return os.environ.get(UPSTREAM_API_KEY_ENV) or None


def api_keys_from_environment() -> list[str]:
    value = os.environ.get(API_KEYS_ENV, "")
    return [value] if value else []
