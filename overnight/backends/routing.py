"""Which backend answers which model: backends built from the config file (or the --backend flags)
and the router that picks one per model name. No CLI here: problems are `RouterConfigError`s."""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from typing import Any

from overnight.backends.base import Backend
from overnight.backends.config import (
    AnthropicSpec,
    FakeSpec,
    HttpSpec,
    LocalSpec,
    OpenAISpec,
    RouterConfig,
    RouterConfigError,
    load_router_config,
    parse_backend_spec,
)
from overnight.config import Settings
from overnight.exceptions import NotFoundError

_MAX_RESOLVED = 4096


def router_from_settings(settings: Settings) -> Router:
    """The router the settings ask for: the config file's, or one backend for every model."""
    if settings.config_file is not None:
        return Router.from_config(load_router_config(settings.config_file))
    spec = parse_backend_spec(_shorthand_spec(settings))
    return Router.single(build_backend(settings.backend, spec))


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
        raise RouterConfigError(f"--backend {settings.backend} needs --upstream-url")
    spec = {"type": settings.backend, "base_url": settings.upstream_url}
    if settings.upstream_api_key:
        spec["api_key"] = settings.upstream_api_key
    if settings.upstream_model:
        spec["model"] = settings.upstream_model
    if settings.upstream_max_concurrency:
        spec["max_concurrency"] = settings.upstream_max_concurrency
    return spec


def build_backend(name: str, spec: AnthropicSpec | OpenAISpec | LocalSpec | FakeSpec) -> Backend:
    """The backend a spec describes; HTTP clients are created now, a local model loads on `start()`."""
    label = name if name == spec.type else f"{spec.type}:{name}"
    if isinstance(spec, LocalSpec):
        from overnight.backends.local import LocalBackend

        return LocalBackend(
            model_path=spec.model_path,
            instances=spec.instances,
            n_ctx=spec.n_ctx,
            n_threads=spec.n_threads,
            seed=spec.seed,
            min_p=spec.min_p,
            name=label,
        )
    if isinstance(spec, AnthropicSpec | OpenAISpec):
        from overnight.backends.anthropic import AnthropicBackend
        from overnight.backends.openai import OpenAIBackend

        backend_class = AnthropicBackend if isinstance(spec, AnthropicSpec) else OpenAIBackend
        return backend_class(
            base_url=spec.base_url,
            api_key=spec.resolve_api_key(name),
            upstream_model=spec.model,
            timeout_seconds=spec.timeout_seconds,
            max_concurrency=spec.max_concurrency,
            max_concurrency_scope=spec.max_concurrency_scope,
            name=label,
        )
    from overnight.backends.fake import FakeBackend

    fake = FakeBackend(latency_seconds=spec.latency_seconds)
    fake.name = label
    fake.max_concurrency = spec.max_concurrency
    fake.max_concurrency_scope = spec.max_concurrency_scope
    return fake


class Router:
    """Model name → backend, by the first matching route."""

    def __init__(self, routes: Sequence[tuple[str, Backend]]) -> None:
        if not routes:
            raise ValueError("a router needs at least one route")
        self._routes = list(routes)
        self._resolved: dict[str, Backend] = {}  # model name → backend: fnmatch is slow per request

    @classmethod
    def single(cls, backend: Backend) -> Router:
        """Every model to one backend (what `--backend NAME` means)."""
        return cls([("*", backend)])

    @classmethod
    def from_config(cls, config: RouterConfig) -> Router:
        """Build every configured backend once (shared by all routes naming it) and route to them."""
        # Check every secret first: a missing one must fail before any HTTP client exists to leak.
        for name, spec in config.backends.items():
            if isinstance(spec, HttpSpec):
                spec.resolve_api_key(name)
        built = {name: build_backend(name, spec) for name, spec in config.backends.items()}
        return cls([(route.model, built[route.backend]) for route in config.routes])

    def backends(self) -> list[Backend]:
        """Each distinct backend once, in route order (a method, as the engine's `BackendRouter` has it)."""
        seen: dict[int, Backend] = {}
        for _, backend in self._routes:
            seen.setdefault(id(backend), backend)
        return list(seen.values())

    def patterns(self) -> list[str]:
        return [pattern for pattern, _ in self._routes]

    def model_ids(self) -> list[str]:
        """Each exactly-named route, and each backend reached through a pattern under its own name."""
        ids: list[str] = []
        for pattern, backend in self._routes:
            model_id = backend.name if _is_pattern(pattern) else pattern
            if model_id not in ids:
                ids.append(model_id)
        return ids

    def resolve(self, model: str) -> Backend:
        backend = self._resolved.get(model)
        if backend is not None:
            return backend
        for pattern, backend in self._routes:
            if pattern == model or fnmatch.fnmatchcase(model, pattern):
                if len(self._resolved) >= _MAX_RESOLVED:
                    self._resolved.clear()  # clients choose model names: keep the memo bounded
                self._resolved[model] = backend
                return backend
        raise NotFoundError(f"model: {model} (no route in this server's config matches this model)")

    async def start(self) -> None:
        """Start backends that need it (loading local models), so a bad setup fails at startup."""
        for backend in self.backends():
            start = getattr(backend, "start", None)
            if start is not None:
                await start()

    async def aclose(self) -> None:
        errors: list[BaseException] = []
        for backend in self.backends():
            try:
                await backend.aclose()
            except Exception as exc:  # close the others all the same
                errors.append(exc)
        if errors:
            raise errors[0]


def _is_pattern(model: str) -> bool:
    return any(character in model for character in "*?[")
