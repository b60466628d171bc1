"""Building the backend router the settings ask for."""

from __future__ import annotations

import click

from overnight.backends.fake import FakeBackend
from overnight.config import Settings
from overnight.engine.calls import BackendRouter, SingleBackendRouter


def router_from_settings(settings: Settings) -> BackendRouter:
    if settings.backend == "fake":
        return SingleBackendRouter(FakeBackend(latency_seconds=settings.fake_latency_ms / 1000))
    raise click.BadParameter(f"unknown backend {settings.backend!r} (available: fake)", param_hint="--backend")
