"""YAML models derived from the plain-Python option dataclasses, so a component takes every field of
``RunOptions`` (and of its nested ``RetryPolicy`` and ``BatchOptions``) with no default copied by hand: a field left
out of the YAML is left out of the dataclass call, and the dataclass's own default applies."""

from __future__ import annotations

import dataclasses
import typing
from typing import Any

import dagster as dg
from pydantic import Field, create_model

_TARGETS: dict[type[dg.Model], tuple[type[Any], dict[str, str]]] = {}


def _is_options(kind: Any) -> bool:
    return isinstance(kind, type) and dataclasses.is_dataclass(kind)


def yaml_model(cls: type[Any], *, name: str | None = None, aliases: dict[str, str] | None = None
               ) -> type[dg.Model]:
    """A ``dg.Model`` with one optional field per field of the dataclass ``cls`` (nested option dataclasses become
    nested models); ``build(model)`` makes the dataclass from the fields that were given. ``aliases`` adds
    shortcuts (``{"max_attempts": "retry.max_attempts"}``)."""
    hints = typing.get_type_hints(cls)
    fields: dict[str, Any] = {}
    for field in dataclasses.fields(cls):
        kind = hints[field.name]
        if _is_options(kind):
            kind = yaml_model(kind)
        fields[field.name] = (kind | None, Field(default=None, description=_default_of(field)))
    for alias, target in (aliases or {}).items():
        outer, _, inner = target.partition(".")
        inner_hints = typing.get_type_hints(hints[outer])
        fields[alias] = (inner_hints[inner] | None, Field(default=None, description=f"shortcut for {target}"))
    model: type[dg.Model] = create_model(name or cls.__name__, __base__=dg.Model, **fields)
    model.__doc__ = f"``{cls.__name__}``: every field optional; a field not given takes {cls.__name__}'s default."
    _TARGETS[model] = (cls, dict(aliases or {}))
    return model


def _default_of(field: dataclasses.Field[Any]) -> str:
    if field.default is not dataclasses.MISSING:
        return f"default: {field.default!r}"
    return "default: the dataclass's"


def build(model: dg.Model) -> Any:
    """The dataclass ``model`` stands for, from the fields given (nested ones built the same way)."""
    target, aliases = _TARGETS[type(model)]
    given = {name: getattr(model, name) for name in model.model_fields_set if getattr(model, name) is not None}
    nested: dict[str, dict[str, Any]] = {}
    for alias, target_path in aliases.items():
        if alias in given:
            outer, _, inner = target_path.partition(".")
            nested.setdefault(outer, {})[inner] = given.pop(alias)
    values: dict[str, Any] = {}
    for name, value in given.items():
        values[name] = build(value) if type(value) in _TARGETS else value
    for outer, inner_values in nested.items():
        if outer in values:
            values[outer] = dataclasses.replace(values[outer], **inner_values)
        else:
            values[outer] = typing.get_type_hints(target)[outer](**inner_values)
    return target(**values)
