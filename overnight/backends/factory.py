"""Building the router the settings ask for: a config file, or one backend for every model."""

from __future__ import annotations

from typing import Any

import click

from overnight.config import Settings
from overnight.routing import Router, RouterConfigError, build_backend, load_router_config, parse_backend_spec


def router_from_settings(settings: Settings) -> Router:
    try:
        if settings.config_file is not None:
            return Router.from_config(load_router_config(settings.config_file), data_dir=settings.data_dir)
        spec = parse_backend_spec(_shorthand_spec(settings))
        return Router.single(build_backend(settings.backend, spec, settings.data_dir))
    except RouterConfigError as exc:
        raise click.ClickException(str(exc)) from None


def _shorthand_spec(settings: Settings) -> dict[str, Any]:
    """`--backend NAME` and its flags, as the config file would say it."""
    if settings.backend == "fake":
        return {"type": "fake", "latency_seconds": settings.fake_latency_ms / 1000}
    if settings.backend == "local":
        spec: dict[str, Any] = {"type": "local", "instances": settings.local_instances}
        if settings.model_path is not None:
            spec["model_path"] = settings.model_path
        return spec
    if settings.upstream_url is None:
        raise click.BadParameter(f"--backend {settings.backend} needs --upstream-url", param_hint="--upstream-url")
    spec = {"type": settings.backend, "base_url": settings.upstream_url}
    if settings.upstream_api_key:
        spec["api_key"] = settings.upstream_api_key
    if settings.upstream_model:
        spec["model"] = settings.upstream_model
    if settings.upstream_max_concurrency:
        spec["max_concurrency"] = settings.upstream_max_concurrency
    return spec
