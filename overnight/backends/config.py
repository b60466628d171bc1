"""The config file: named backends and the ordered model routes to them, in TOML.

    [backends.smollm]
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
    backend = "smollm"

Routes are tried in order and the first match wins. A backend with `model` renames every request it
serves; the Message still echoes the client's model name. A relative `model_path` is relative to the
config file. Secrets are best given as `api_key_env`, read when the backend is built.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, model_validator

from overnight.config_file import read_toml
from overnight.protocol.validation import Location, describe_error


class RouterConfigError(ValueError):
    """The routing config is missing, unreadable or invalid; the message says where and why."""


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class HttpSpec(_Spec):
    api_key: str | None = None
    api_key_env: str | None = None
    model: str | None = Field(default=None, min_length=1, description="model name sent upstream")
    max_concurrency: int | None = Field(default=None, ge=1)
    max_concurrency_scope: Literal["node", "cluster"] = "node"
    timeout_seconds: float = Field(default=600.0, gt=0)

    @model_validator(mode="after")
    def _one_key_source(self) -> HttpSpec:
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


class AnthropicSpec(HttpSpec):
    type: Literal["anthropic"]
    base_url: str = Field(default="https://api.anthropic.com", min_length=1)


class OpenAISpec(HttpSpec):
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
    """The whole config file; a new top-level table is a new field here (unknown tables are refused)."""

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
    config = parse_router_config(read_toml(path, RouterConfigError), source=str(path))
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


def _with_paths_relative_to(config: RouterConfig, base: Path) -> RouterConfig:
    backends: dict[str, Any] = {}
    for name, spec in config.backends.items():
        if isinstance(spec, LocalSpec) and spec.model_path is not None:
            spec = spec.model_copy(update={"model_path": (base / spec.model_path.expanduser()).resolve()})
        backends[name] = spec
    return config.model_copy(update={"backends": backends})


_CONFIG_MESSAGES = {
    "extra_forbidden": "unknown setting",
    "union_tag_invalid": f"type must be one of {', '.join(_BACKEND_TYPES)}",
    "union_tag_not_found": f"type is required (one of {', '.join(_BACKEND_TYPES)})",
}


def _is_backend_type_tag(loc: Location, index: int) -> bool:
    """`backends.<name>.<type tag>.field`: the tag is pydantic's union branch, not a config key."""
    return index == 2 and len(loc) > 3 and loc[0] == "backends" and loc[2] in _BACKEND_TYPES


def _describe(exc: ValidationError) -> str:
    """Every error as `location: message`, without pydantic's union tags in the location."""
    return "; ".join(
        describe_error(error, is_label=_is_backend_type_tag, messages=_CONFIG_MESSAGES)
        for error in exc.errors(include_url=False)
    )
