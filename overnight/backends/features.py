"""Request options a non-Anthropic backend cannot honour, refused by name instead of silently dropped.

Options that only steer Anthropic's own infrastructure or are hints (`service_tier`, `inference_geo`,
`speed`, `diagnostics`, `cache_control` anywhere, `output_config.effort`, `thinking: adaptive` — a
model that never thinks satisfies "think when useful") are ignored: ignoring them changes no answer's
meaning. Everything that would change what the model is asked to do is refused with an
`InvalidRequestError` naming the feature.
"""

from __future__ import annotations

from overnight.exceptions import InvalidRequestError
from overnight.protocol.messages import MessageCreateParams, ThinkingEnabled

_IGNORED_OUTPUT_CONFIG_KEYS = {"effort"}


def refuse_unknown_keys(params: MessageCreateParams, backend: str) -> None:
    """Raise `InvalidRequestError` for a top-level key overnight does not know (only an Anthropic
    upstream, which may know it, is sent such keys)."""
    unknown = params.unknown_keys()
    if unknown:
        raise InvalidRequestError(f"{unknown[0]}: unknown parameter, not supported by the {backend} backend")


def refuse_unsupported_options(params: MessageCreateParams, backend: str) -> None:
    """Raise `InvalidRequestError` for the first top-level option `backend` cannot express."""
    refuse_unknown_keys(params, backend)
    if isinstance(params.thinking, ThinkingEnabled):
        raise unsupported("extended thinking (thinking.type: enabled)", backend)
    if params.mcp_servers:
        raise unsupported("mcp_servers", backend)
    if params.container is not None:
        raise unsupported("container", backend)
    if params.context_management is not None:
        raise unsupported("context_management", backend)
    if params.output_format is not None:
        raise unsupported("structured outputs (output_format)", backend)
    if params.output_config:
        for key in params.output_config:
            if key not in _IGNORED_OUTPUT_CONFIG_KEYS:
                raise unsupported(f"output_config.{key}", backend)


def unsupported(feature: str, backend: str) -> InvalidRequestError:
    return InvalidRequestError(f"{feature} is not supported by the {backend} backend")
