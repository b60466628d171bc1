"""Which backend answers which model: a TOML file of named backends and ordered model routes.

    [backends.gemma]
    type = "local"                      # local | anthropic | openai | fake
    instances = 1

    [backends.claude]
    type = "anthropic"
    base_url = "https://api.anthropic.com"
    api_key_env = "ANTHROPIC_API_KEY"   # or api_key = "..."
    max_concurrency = 16
    timeout_seconds = 600

    [backends.ollama]
    type = "openai"
    base_url = "http://127.0.0.1:11434"
    model = "llama3.2"                  # the model name sent upstream, whatever the client asked for

    [[routes]]
    model = "claude-*"                  # an exact name or an fnmatch pattern, case-sensitive
    backend = "claude"

    [[routes]]
    model = "*"
    backend = "gemma"

Routes are tried in order and the first match wins. A backend with `model` renames every request it
serves; the Message still echoes the client's model name. A relative `model_path` is relative to the
config file. Secrets are best given as `api_key_env`, read when the backend is built.
"""

from __future__ import annotations

import fnmatch
import os
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, model_validator

from overnight.backends.base import Backend
from overnight.exceptions import NotFoundError


class RouterConfigError(ValueError):
    """The routing config is missing, unreadable or invalid; the message says where and why."""


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _HttpSpec(_Spec):
    api_key: str | None = None
    api_key_env: str | None = None
    model: str | None = Field(default=None, min_length=1, description="model name sent upstream")
    max_concurrency: int | None = Field(default=None, ge=1)
    max_concurrency_scope: Literal["node", "cluster"] = "node"
    timeout_seconds: float = Field(default=600.0, gt=0)

    @model_validator(mode="after")
    def _one_key_source(self) -> _HttpSpec:
        if self.api_key is not None and self.api_key_env is not None:
            raise ValueError("give api_key or api_key_env, not both")
        return self

    def resolve_api_key(self, backend_name: str) -> str | None:
        if self.api_key_env is None:
            return self.api_key
        value = os.environ.get(self.api_key_env)
        if not value:
            raise RouterConfigError(
                f"backends.{backend_name}.api_key_env: environment variable {self.api_key_env} is not set"
            )
        return value


class AnthropicSpec(_HttpSpec):
    type: Literal["anthropic"]
    base_url: str = Field(default="https://api.anthropic.com", min_length=1)


class OpenAISpec(_HttpSpec):
    type: Literal["openai"]
    base_url: str = Field(min_length=1)


class LocalSpec(_Spec):
    type: Literal["local"]
    model_path: Path | None = None
    instances: int = Field(default=1, ge=1)  # also the backend's concurrency: one request per instance
    n_ctx: int = Field(default=2048, ge=64)
    n_threads: int | None = Field(default=None, ge=1)
    seed: int | None = Field(default=None, ge=0, lt=2**32)
    min_p: float = Field(default=0.05, ge=0.0, le=1.0)


class FakeSpec(_Spec):
    type: Literal["fake"]
    latency_seconds: float = Field(default=0.0, ge=0)
    max_concurrency: int | None = Field(default=None, ge=1)
    max_concurrency_scope: Literal["node", "cluster"] = "node"


BackendSpec = Annotated[AnthropicSpec | OpenAISpec | LocalSpec | FakeSpec, Field(discriminator="type")]
_BACKEND_TYPES = ("local", "anthropic", "openai", "fake")
_MAX_RESOLVED = 4096


class Route(_Spec):
    model: str = Field(min_length=1, description="an exact model name or an fnmatch pattern")
    backend: str = Field(min_length=1)


class RouterConfig(_Spec):
    backends: dict[str, BackendSpec] = Field(min_length=1)
    routes: list[Route] = Field(min_length=1)
    workspaces: dict[str, Any] = Field(default_factory=dict)  # validated by overnight.webhooks.config

    @model_validator(mode="after")
    def _routes_name_backends(self) -> RouterConfig:
        for index, route in enumerate(self.routes):
            if route.backend not in self.backends:
                known = ", ".join(sorted(self.backends))
                raise ValueError(f"routes.{index}.backend: no backend named {route.backend!r} (defined: {known})")
        return self


def load_router_config(path: Path | str) -> RouterConfig:
    """Read and validate a routing config; every problem becomes a `RouterConfigError` naming the field."""
    path = Path(path)
    try:
        with path.open("rb") as file:
            data = tomllib.load(file)
    except OSError as exc:
        raise RouterConfigError(f"{path}: cannot read the routing config: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise RouterConfigError(f"{path}: invalid TOML: {exc}") from None
    config = parse_router_config(data, source=str(path))
    return _with_paths_relative_to(config, path.parent)


def parse_router_config(data: Mapping[str, Any], *, source: str = "routing config") -> RouterConfig:
    """Validate already-parsed config data (what `load_router_config` does after reading TOML)."""
    try:
        return RouterConfig.model_validate(data)
    except ValidationError as exc:
        raise RouterConfigError(f"{source}: {_describe(exc)}") from None


def parse_backend_spec(data: Mapping[str, Any]) -> AnthropicSpec | OpenAISpec | LocalSpec | FakeSpec:
    """One backend entry, e.g. `{"type": "local"}` for a `--backend local` without a config file."""
    try:
        return TypeAdapter(BackendSpec).validate_python(data)
    except ValidationError as exc:
        raise RouterConfigError(f"backend: {_describe(exc)}") from None


def build_backend(name: str, spec: AnthropicSpec | OpenAISpec | LocalSpec | FakeSpec, data_dir: Path) -> Backend:
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
    def from_config(cls, config: RouterConfig, *, data_dir: Path) -> Router:
        """Build every configured backend once (shared by all routes naming it) and route to them."""
        # Check every secret first: a missing one must fail before any HTTP client exists to leak.
        for name, spec in config.backends.items():
            if isinstance(spec, _HttpSpec):
                spec.resolve_api_key(name)
        built = {name: build_backend(name, spec, data_dir) for name, spec in config.backends.items()}
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


def _with_paths_relative_to(config: RouterConfig, base: Path) -> RouterConfig:
    backends: dict[str, Any] = {}
    for name, spec in config.backends.items():
        if isinstance(spec, LocalSpec) and spec.model_path is not None:
            spec = spec.model_copy(update={"model_path": (base / spec.model_path.expanduser()).resolve()})
        backends[name] = spec
    return config.model_copy(update={"backends": backends})


def _describe(exc: ValidationError) -> str:
    """Every error as `location: message`, without pydantic's union tags in the location."""
    lines = []
    for error in exc.errors(include_url=False):
        loc = list(error["loc"])
        # `backends.<name>.<type tag>.field`: the tag is pydantic's union branch, not a config key.
        if len(loc) > 3 and loc[0] == "backends" and loc[2] in _BACKEND_TYPES:
            del loc[2]
        location = ".".join(str(part) for part in loc)
        message = error["msg"]
        if error["type"] == "extra_forbidden":
            message = "unknown setting"
        elif error["type"] == "union_tag_invalid":
            message = f"type must be one of {', '.join(_BACKEND_TYPES)}"
        elif error["type"] == "union_tag_not_found":
            message = f"type is required (one of {', '.join(_BACKEND_TYPES)})"
        elif error["type"] == "value_error":
            message = str(error.get("ctx", {}).get("error", message))  # without pydantic's "Value error, "
        lines.append(f"{location}: {message}" if location else message)
    return "; ".join(lines)
