"""Small builders shared by the Anthropic and OpenAI halves of the OpenAPI document."""

from __future__ import annotations

from typing import Any


def ref(name: str) -> dict[str, str]:
    """A reference to a schema in the document's components."""
    return {"$ref": f"#/components/schemas/{name}"}


def object_schema(properties: dict[str, Any], *, required: list[str] | None = None, **extra: Any) -> dict[str, Any]:
    """An object schema; every property is required unless `required` says otherwise."""
    return {"type": "object", "properties": properties, "required": required or list(properties), **extra}


def json_response(schema: str, description: str) -> dict[str, Any]:
    """A response whose JSON body is the named component schema."""
    return {"description": description, "content": {"application/json": {"schema": ref(schema)}}}
