"""Answer models for YAML: a Pydantic model by import path, or an inline JSON schema turned into one."""

from __future__ import annotations

import importlib
from typing import Any, Literal

from pydantic import BaseModel, Field, create_model

from ai_assets.runtime.errors import ConfigError


def answer_model(spec: str | dict[str, Any] | None, name: str) -> type[BaseModel] | None:
    """A ``return_format`` from YAML: a Pydantic model by import path ('pkg.module:Class' or 'pkg.module.Class'),
    or a JSON schema (objects, arrays, strings, numbers, booleans, enums) turned into a model."""
    if spec is None:
        return None
    if isinstance(spec, dict):
        return _model_from_schema(spec, "".join(part.title() for part in name.split("_")) or "Answer")
    module, _, attribute = spec.partition(":") if ":" in spec else spec.rpartition(".")
    try:
        found = getattr(importlib.import_module(module), attribute)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"return_format {spec!r}: cannot import it ({exc})") from exc
    if not (isinstance(found, type) and issubclass(found, BaseModel)):
        raise ConfigError(f"return_format {spec!r} is not a Pydantic model")
    return found


_JSON_TYPES: dict[str, Any] = {"string": str, "integer": int, "number": float, "boolean": bool}


def _model_from_schema(schema: dict[str, Any], name: str) -> type[BaseModel]:
    if schema.get("type", "object") != "object" or not schema.get("properties"):
        raise ConfigError(f"return_format: an inline JSON schema must be an object with properties, got {schema}")
    required = set(schema.get("required", schema["properties"]))
    fields: dict[str, Any] = {}
    for field, sub in schema["properties"].items():
        kind = _python_type(sub, f"{name}{field.title()}")
        default = ... if field in required else None
        bound = sub.get("maxItems", sub.get("maxLength"))  # enforced by grammar-constrained decoding too
        fields[field] = (kind if field in required else kind | None,
                         Field(default, description=sub.get("description"), max_length=bound))
    model: type[BaseModel] = create_model(name, **fields)
    return model


def _python_type(schema: dict[str, Any], name: str) -> Any:
    if "enum" in schema:
        return Literal[tuple(schema["enum"])]
    kind = schema.get("type", "string")
    if kind == "array":
        return list[_python_type(schema.get("items", {"type": "string"}), name)]  # type: ignore[misc]
    if kind == "object":
        return _model_from_schema(schema, name)
    if kind not in _JSON_TYPES:
        raise ConfigError(f"return_format: JSON type {kind!r} is not supported (use {sorted(_JSON_TYPES)})")
    return _JSON_TYPES[kind]

