"""Who gets webhook events: `[workspaces.NAME]` tables of the TOML config, and flags for one workspace.

    [workspaces.team-a]
    webhook_url = "https://example.com/hooks/overnight"
    webhook_secret_env = "TEAM_A_WEBHOOK_SECRET"   # or webhook_secret = "whsec_..."

Secrets are Standard Webhooks secrets: `whsec_` and the base64 of 24 to 64 random bytes.
"""

from __future__ import annotations

import base64
import binascii
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from overnight.config_file import read_toml

SECRET_PREFIX = "whsec_"
_SECRET_BYTES = (24, 64)  # what the Standard Webhooks spec asks of a secret


class WebhookConfigError(ValueError):
    """A webhook setting is missing or invalid; the message names it."""


@dataclass(frozen=True)
class WebhookTarget:
    """Where a workspace's events go, and the secret they are signed with."""

    url: str
    secret: str

    def __repr__(self) -> str:  # never print the secret
        return f"WebhookTarget(url={self.url!r}, secret='whsec_…')"


class WorkspaceSpec(BaseModel):
    """One `[workspaces.NAME]` table."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    webhook_url: str | None = Field(default=None, min_length=1)
    webhook_secret: str | None = None
    webhook_secret_env: str | None = Field(default=None, min_length=1)

    @field_validator("webhook_url")
    @classmethod
    def _http_url(cls, url: str | None) -> str | None:
        return None if url is None else check_webhook_url(url)

    @field_validator("webhook_secret")
    @classmethod
    def _whsec(cls, secret: str | None) -> str | None:
        return None if secret is None else check_webhook_secret(secret)

    @model_validator(mode="after")
    def _secret_with_url(self) -> WorkspaceSpec:
        has_secret = self.webhook_secret is not None or self.webhook_secret_env is not None
        if self.webhook_secret is not None and self.webhook_secret_env is not None:
            raise ValueError("give webhook_secret or webhook_secret_env, not both")
        if self.webhook_url is not None and not has_secret:
            raise ValueError("webhook_url needs webhook_secret or webhook_secret_env (events are always signed)")
        if self.webhook_url is None and has_secret:
            raise ValueError("a webhook secret without webhook_url")
        return self

    def target(self, workspace: str) -> WebhookTarget | None:
        if self.webhook_url is None:
            return None
        secret = self.webhook_secret
        if self.webhook_secret_env is not None:
            secret = os.environ.get(self.webhook_secret_env)
            if not secret:
                raise WebhookConfigError(
                    f"workspaces.{workspace}.webhook_secret_env: environment variable {self.webhook_secret_env} "
                    "is not set"
                )
            try:
                secret = check_webhook_secret(secret)
            except ValueError as exc:
                raise WebhookConfigError(f"workspaces.{workspace}.webhook_secret_env: {exc}") from None
        assert secret is not None
        return WebhookTarget(self.webhook_url, secret)


def check_webhook_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"webhook URL must be http:// or https:// with a host, got {url!r}")
    return url


def check_webhook_secret(secret: str) -> str:
    """`whsec_` + base64 of 24..64 bytes, or a ValueError that does not echo the secret."""
    if not secret.startswith(SECRET_PREFIX):
        raise ValueError(f"a webhook secret starts with {SECRET_PREFIX!r} (Standard Webhooks)")
    body = secret[len(SECRET_PREFIX) :]
    try:
        key = base64.b64decode(body + "=" * (-len(body) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"a webhook secret is {SECRET_PREFIX!r} followed by base64") from None
    low, high = _SECRET_BYTES
    if not low <= len(key) <= high:
        raise ValueError(f"a webhook secret's key is {low} to {high} bytes, got {len(key)}")
    return secret


def parse_workspaces(data: Mapping[str, Any], *, source: str = "config") -> dict[str, WorkspaceSpec]:
    """The `workspaces` table of already-parsed config data (absent: no workspaces)."""
    tables = data.get("workspaces", {})
    if not isinstance(tables, Mapping):
        raise WebhookConfigError(f"{source}: workspaces: must be a table of [workspaces.NAME] tables")
    specs: dict[str, WorkspaceSpec] = {}
    for name, table in tables.items():
        try:
            specs[name] = WorkspaceSpec.model_validate(table)
        except ValidationError as exc:
            raise WebhookConfigError(f"{source}: {_describe(exc, f'workspaces.{name}')}") from None
    return specs


def load_workspaces(path: Path) -> dict[str, WorkspaceSpec]:
    return parse_workspaces(read_toml(path, WebhookConfigError), source=str(path))


def resolve_webhook_targets(
    *, config_file: Path | None, flag_url: str | None, flag_secret: str | None, flag_workspace: str
) -> dict[str, WebhookTarget]:
    """Workspace → target, from the config file's tables and the flags (which name `flag_workspace`).

    Secrets named by `webhook_secret_env` are read now, so a missing one fails at startup."""
    specs = load_workspaces(config_file) if config_file is not None else {}
    targets = {name: target for name, spec in specs.items() if (target := spec.target(name)) is not None}
    if flag_url is None:
        if flag_secret is not None:
            raise WebhookConfigError("--webhook-secret needs --webhook-url")
        return targets
    if flag_workspace in targets:
        raise WebhookConfigError(
            f"--webhook-url and [workspaces.{flag_workspace}] both configure a webhook for workspace "
            f"{flag_workspace!r}; use one"
        )
    if flag_secret is None:
        raise WebhookConfigError("--webhook-url needs --webhook-secret (or OVERNIGHT_WEBHOOK_SECRET)")
    try:
        targets[flag_workspace] = WebhookTarget(check_webhook_url(flag_url), check_webhook_secret(flag_secret))
    except ValueError as exc:
        raise WebhookConfigError(f"--webhook-url/--webhook-secret: {exc}") from None
    return targets


def _describe(exc: ValidationError, prefix: str) -> str:
    lines = []
    for error in exc.errors(include_url=False):
        location = ".".join([prefix, *(str(part) for part in error["loc"])])
        message = error["msg"]
        if error["type"] == "extra_forbidden":
            message = "unknown setting"
        elif error["type"] == "value_error":
            message = str(error.get("ctx", {}).get("error", message))
        lines.append(f"{location}: {message}")
    return "; ".join(lines)
