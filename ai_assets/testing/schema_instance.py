"""Deterministic JSON-schema instances, so the fake server can answer structured requests.

The same seed always gives the same instance; different seeds give different values, so tests can tell rows apart.
"""

from __future__ import annotations

import hashlib
from typing import Any

JSONSchema = dict[str, Any]


def seed_of(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


def instance_for(schema: JSONSchema, seed: int, root: JSONSchema | None = None, name: str = "value") -> Any:
    """Build a value that validates against ``schema`` (the subset Pydantic emits)."""
    root = schema if root is None else root
    if "$ref" in schema:
        return instance_for(_resolve(schema["$ref"], root), seed, root, name)
    if "const" in schema:
        return schema["const"]
    if "enum" in schema:
        options = schema["enum"]
        return options[seed % len(options)]
    for combinator in ("anyOf", "oneOf", "allOf"):
        if combinator in schema:
            options = [s for s in schema[combinator] if s.get("type") != "null"] or schema[combinator]
            return instance_for(options[0], seed, root, name)
    kind = schema.get("type", "object")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object":
        props: dict[str, JSONSchema] = schema.get("properties", {})
        return {key: instance_for(sub, seed_of(f"{seed}:{key}"), root, key) for key, sub in props.items()}
    if kind == "array":
        count = max(int(schema.get("minItems", 1)), 1 + seed % 2)
        items = schema.get("items", {"type": "string"})
        return [instance_for(items, seed_of(f"{seed}:{i}"), root, name) for i in range(count)]
    if kind == "string":
        return f"{name}-{seed % 10_000}"
    if kind == "integer":
        return int(schema.get("minimum", 0)) + seed % 100
    if kind == "number":
        floor = float(schema.get("minimum", 0.0))
        ceiling = float(schema.get("maximum", floor + 1.0))
        return floor + (ceiling - floor) * ((seed % 1000) / 1000)
    if kind == "boolean":
        return bool(seed % 2)
    return None


def _resolve(ref: str, root: JSONSchema) -> JSONSchema:
    node: Any = root
    for part in ref.removeprefix("#/").split("/"):
        node = node[part]
    return dict(node)
