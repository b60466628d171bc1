"""The routing config (TOML → validated `RouterConfig`) and the `Router` built from it."""

from __future__ import annotations

from pathlib import Path

import pytest

from overnight.backends.anthropic import AnthropicBackend
from overnight.backends.config import (
    AnthropicSpec,
    LocalSpec,
    RouterConfigError,
    load_router_config,
    parse_backend_spec,
)
from overnight.backends.fake import FakeBackend
from overnight.backends.local import LocalBackend
from overnight.backends.openai import OpenAIBackend
from overnight.backends.routing import Router, build_backend
from overnight.engine.calls import BackendRouter
from overnight.exceptions import NotFoundError

EXAMPLE = """
[backends.gemma]
type = "local"
instances = 1

[backends.claude]
type = "anthropic"
base_url = "https://api.anthropic.com"
api_key_env = "ANTHROPIC_API_KEY"
max_concurrency = 16
timeout_seconds = 600

[backends.ollama]
type = "openai"
base_url = "http://127.0.0.1:11434"
model = "llama3.2"

[[routes]]
model = "claude-*"
backend = "claude"

[[routes]]
model = "llama*"
backend = "ollama"

[[routes]]
model = "*"
backend = "gemma"
"""


ROUTE = '[[routes]]\nmodel = "*"\nbackend = "x"\n'


def write(tmp_path: Path, text: str, name: str = "routes.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


async def test_the_example_config_routes_by_pattern(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-from-env")
    config = load_router_config(write(tmp_path, EXAMPLE))
    router = Router.from_config(config)
    try:
        claude = router.resolve("claude-sonnet-4-5")
        assert isinstance(claude, AnthropicBackend)
        assert claude.name == "anthropic:claude"
        assert claude.max_concurrency == 16
        assert claude._api_key == "sk-ant-from-env"

        ollama = router.resolve("llama3.2:1b")
        assert isinstance(ollama, OpenAIBackend)
        assert ollama.upstream_model == "llama3.2"  # the backend renames; the Message echoes the client's name
        assert ollama.max_concurrency is None

        gemma = router.resolve("anything-else")
        assert isinstance(gemma, LocalBackend)
        assert gemma.max_concurrency == 1
        assert router.resolve("gemma-3") is gemma  # one backend object per config entry
        assert len(router.backends()) == 3
    finally:
        await router.aclose()


async def test_first_matching_route_wins(tmp_path: Path) -> None:
    config = load_router_config(
        write(
            tmp_path,
            """
            [backends.a]
            type = "fake"
            [backends.b]
            type = "fake"
            latency_seconds = 0.5
            [[routes]]
            model = "claude-*"
            backend = "a"
            [[routes]]
            model = "claude-opus-4-1"
            backend = "b"
            [[routes]]
            model = "gpt-?o"
            backend = "b"
            [[routes]]
            model = "Claude-[0-9]*"
            backend = "b"
            """,
        )
    )
    router = Router.from_config(config)
    a, b = (router.resolve(name) for name in ("claude-x", "gpt-4o"))
    assert a is not b
    assert router.resolve("claude-opus-4-1") is a  # the exact route comes later, so the pattern wins
    assert router.resolve("Claude-3") is b  # patterns are case-sensitive
    assert isinstance(a, FakeBackend) and a.name == "fake:a"
    with pytest.raises(NotFoundError) as caught:
        router.resolve("gpt-4.1")
    assert caught.value.message.startswith("model: gpt-4.1")
    await router.aclose()


async def test_single_routes_everything_to_one_backend() -> None:
    backend = FakeBackend()
    router: BackendRouter = Router.single(backend)  # what the engine takes (checked by mypy)
    assert router.resolve("claude-sonnet-4-5") is backend
    assert router.resolve("x") is backend
    assert router.backends() == [backend]
    assert isinstance(router, Router)
    await router.start()  # nothing to start for a fake
    await router.aclose()


def test_relative_model_path_is_relative_to_the_config_file(tmp_path: Path) -> None:
    config_dir = tmp_path / "etc"
    config_dir.mkdir()
    config = load_router_config(
        write(
            config_dir,
            """
            [backends.mine]
            type = "local"
            model_path = "models/my.gguf"
            instances = 2
            n_ctx = 4096
            seed = 42
            [[routes]]
            model = "*"
            backend = "mine"
            """,
        )
    )
    spec = config.backends["mine"]
    assert isinstance(spec, LocalSpec)
    assert spec.model_path == config_dir / "models" / "my.gguf"
    backend = build_backend("mine", spec)
    assert isinstance(backend, LocalBackend)
    assert (backend.max_concurrency, backend.n_ctx, backend.seed, backend.name) == (2, 4096, 42, "local:mine")


def test_parse_backend_spec_and_defaults() -> None:
    spec = parse_backend_spec({"type": "anthropic", "api_key": "k"})
    assert isinstance(spec, AnthropicSpec)
    assert (spec.base_url, spec.timeout_seconds, spec.model) == ("https://api.anthropic.com", 600.0, None)
    assert build_backend("local", parse_backend_spec({"type": "local"})).name == "local"
    with pytest.raises(RouterConfigError, match="type must be one of"):
        parse_backend_spec({"type": "gemini"})


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[backends.x\n", "invalid TOML"),
        (ROUTE, "backends: Field required"),
        ('[backends.x]\ntype = "fake"\n', "routes: Field required"),
        (
            '[backends.x]\nbase_url = "http://h"\n' + ROUTE,
            "backends.x: type is required",
        ),
        ('[backends.x]\ntype = "vertex"\n' + ROUTE, "backends.x: type must be one of"),
        (
            '[backends.x]\ntype = "openai"\n' + ROUTE,
            "backends.x.base_url: Field required",
        ),
        (
            '[backends.x]\ntype = "openai"\nbase_ur1 = "http://h"\nbase_url = "http://h"\n' + ROUTE,
            "backends.x.base_ur1: unknown setting",
        ),
        (
            '[backends.x]\ntype = "local"\ninstances = 0\n' + ROUTE,
            "backends.x.instances",
        ),
        (
            '[backends.x]\ntype = "local"\nmax_concurrency = 4\n' + ROUTE,
            "backends.x.max_concurrency: unknown setting",
        ),
        (
            '[backends.x]\ntype = "anthropic"\napi_key = "a"\napi_key_env = "B"\n' + ROUTE,
            "not both",
        ),
        ('[backends.x]\ntype = "fake"\n[[routes]]\nmodel = "*"\nbackend = "y"\n', "no backend named 'y' (defined: x)"),
        ('[backends.x]\ntype = "fake"\nroutes = []\n', "routes: Field required"),
    ],
)
def test_bad_configs_fail_with_a_clear_message(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(RouterConfigError) as caught:
        load_router_config(path)
    assert str(caught.value).startswith(str(path))
    assert message in str(caught.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(RouterConfigError, match="cannot read"):
        load_router_config(tmp_path / "absent.toml")


def test_unset_api_key_env_fails_before_any_backend_is_built(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OVERNIGHT_TEST_UNSET_KEY", raising=False)
    config = load_router_config(
        write(
            tmp_path,
            """
            [backends.up]
            type = "openai"
            base_url = "http://127.0.0.1:8000"
            api_key_env = "OVERNIGHT_TEST_UNSET_KEY"
            [[routes]]
            model = "*"
            backend = "up"
            """,
        )
    )
    with pytest.raises(RouterConfigError, match="OVERNIGHT_TEST_UNSET_KEY is not set"):
        Router.from_config(config)
