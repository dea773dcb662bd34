"""Pydantic models as Arrow types: nested models become structs, lists become lists, enums / Literals strings."""

from __future__ import annotations

import datetime as dt
import enum
import types
from collections.abc import Sequence
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import pyarrow as pa
from pydantic import BaseModel

from ai_assets.runtime.errors import ConfigError

_SCALARS: dict[Any, pa.DataType] = {
    str: pa.string(), int: pa.int64(), float: pa.float64(), bool: pa.bool_(), bytes: pa.binary(),
    dt.datetime: pa.timestamp("us", tz="UTC"), dt.date: pa.date32(),
}


def arrow_type(annotation: Any, where: str = "return_format") -> pa.DataType:
    """The Arrow type for a field annotation; ``where`` names the field in errors."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return model_struct(annotation)
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return arrow_type(type(next(iter(annotation)).value), where)
    if annotation in _SCALARS:
        return _SCALARS[annotation]
    origin = get_origin(annotation)
    args = get_args(annotation)
    if origin is Annotated:
        return arrow_type(args[0], where)
    if origin is Literal:
        return arrow_type(type(args[0]), where)
    if origin in (Union, types.UnionType):
        rest = [a for a in args if a is not type(None)]
        if len(rest) == 1:
            return arrow_type(rest[0], where)
        raise ConfigError(f"{where}: unions of several types ({annotation}) have no Arrow type; use one type")
    if origin in (list, tuple, set, frozenset, Sequence):
        return pa.list_(arrow_type(args[0] if args else str, f"{where}[]"))
    if origin is dict:
        return pa.map_(arrow_type(args[0], where), arrow_type(args[1], where))
    raise ConfigError(f"{where}: no Arrow type for {annotation!r}")


def model_struct(model: type[BaseModel]) -> pa.StructType:
    return pa.struct([
        pa.field(name, arrow_type(info.annotation, f"{model.__name__}.{name}"))
        for name, info in model.model_fields.items()
    ])


def to_python(value: Any) -> Any:
    """A validated model dumped for pyarrow: enums by value, everything else as Python objects."""
    if isinstance(value, BaseModel):
        return {name: to_python(getattr(value, name)) for name in type(value).model_fields}
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, (list, tuple, set, frozenset)):
        return [to_python(v) for v in value]
    if isinstance(value, dict):
        return [(k, to_python(v)) for k, v in value.items()]
    return value
