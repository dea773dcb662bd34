"""``defaults.yaml``: the settings a folder's components share, written once beside their ``defs.yaml``.

How a component's own YAML and its folder's defaults combine (``merge``):

* a setting the component leaves out comes from ``defaults.yaml``;
* nested mappings merge key by key, at every depth, and the component's own keys win: a component that sets
  ``options: {concurrency: 9}`` keeps the folder's ``options: {on_error: "null", retry: {...}}`` for every other
  key of ``options``;
* lists (and every other value) are replaced whole, never concatenated;
* ``partitions`` is a choice of one kind (daily, static or dynamic): a component that sets it replaces the
  folder's whole, as a daily folder and a static component must not make two kinds;
* a shortcut (``options.max_attempts``) counts as the key it stands for (``options.retry.max_attempts``), so a
  component's ``retry: {max_attempts: 2}`` wins over a folder's ``max_attempts: 5`` and the other way round.

A value of ``defaults.yaml`` that is wrong is an error naming the file and the key, whichever component found it.
That includes a setting that is a mapping in one file and a single value or a list in the other (``options: 3``
in ``defaults.yaml`` under a component's ``options: {concurrency: 2}``): the component's own value passed its
checks, so the folder's has the wrong shape, and replacing it silently would hide it from this component only
(Helm warns on the same clash, "cannot overwrite table with non table"). A null is never a clash: it removes the
default (Helm's documented way to delete a default key).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml  # type: ignore[import-untyped]  # PyYAML (a Dagster dependency) ships no types

from ai_assets.runtime.errors import ConfigError

SHARED_DEFAULTS = ("partitions", "group_name", "io_manager_key", "pool", "retries", "single_run_backfill", "gpus",
                   "options", "cache_key", "prices")
REPLACED_WHOLE = frozenset({"partitions"})  # one-of settings: the component's choice replaces the folder's
OPTION_ALIASES = {"max_attempts": "retry.max_attempts"}  # shortcuts of ``options`` (see ``Options``)


class Clash(ConfigError):
    """A setting that is a mapping in one file and not in the other; ``key`` is dotted for nested keys."""

    def __init__(self, key: str, folder: Any, own: Any) -> None:
        self.key = key
        self.problem = (f"{_shape(folder)} here, but {_shape(own)} in the component's own YAML (the same setting "
                        "must be a mapping in both files, or a single value in both)")
        super().__init__(f"{key}: {self.problem}")


def _shape(value: Any) -> str:
    return "a mapping" if isinstance(value, Mapping) else f"{type(value).__name__} {value!r:.40}"


@dataclasses.dataclass(frozen=True)
class FolderDefaults:
    path: Path
    values: dict[str, Any]

    def blame(self, key: str, problem: object) -> ConfigError:
        """An error naming this file and the setting ``key`` (dotted for nested keys)."""
        return ConfigError(f"{self.path}: {key}: {problem}")


def folder_defaults(folder: Path) -> FolderDefaults | None:
    """``defaults.yaml`` of ``folder``: shared settings for the components defined in it."""
    path = folder / "defaults.yaml"
    if not path.is_file():
        return None
    try:
        values = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: expected a mapping of settings, got {type(values).__name__}")
    unknown = sorted(set(values) - set(SHARED_DEFAULTS), key=str)
    if unknown:
        raise ConfigError(f"{path}: {unknown} are not shared settings; a defaults file takes {list(SHARED_DEFAULTS)}")
    return FolderDefaults(path, values)


def merge(defaults: Mapping[str, Any], own: Mapping[str, Any]) -> dict[str, Any]:
    """A component's settings over its folder's (see the module docstring for the rules)."""
    merged = dict(defaults)
    for key, value in own.items():
        if key == "options":
            folder, mine = expand_aliases(defaults.get(key)), expand_aliases(value)
            check_shapes(folder, mine, key)
            merged[key] = deep_merge(folder, mine)
        elif key in REPLACED_WHOLE:
            merged[key] = value
        else:
            check_shapes(defaults.get(key), value, key)
            merged[key] = deep_merge(defaults.get(key), value)
    if "options" in merged:
        merged["options"] = expand_aliases(merged["options"])
    return merged


def deep_merge(base: Any, own: Any) -> Any:
    """``own`` over ``base``: mappings key by key at every depth, anything else (a list included) replaced."""
    if not (isinstance(base, Mapping) and isinstance(own, Mapping)):
        return own
    merged = dict(base)
    for key, value in own.items():
        merged[key] = deep_merge(base.get(key), value) if key in base else value
    return merged


def check_shapes(folder: Any, own: Any, key: str) -> None:
    """Raise ``Clash`` where one of ``folder`` and ``own`` is a mapping and the other a value (not null), at any
    depth the merge reaches."""
    if folder is None or own is None:
        return
    if isinstance(folder, Mapping) != isinstance(own, Mapping):
        raise Clash(key, folder, own)
    if isinstance(own, Mapping):
        for inner, value in own.items():
            if inner in folder:
                check_shapes(folder[inner], value, f"{key}.{inner}")


def expand_aliases(options: Any) -> Any:
    """``options`` with each shortcut written as the nested key it stands for (a value given both ways keeps the
    shortcut's, as ``build`` does). A shortcut beside a nested key that is no mapping (``retry: 7``) is left as
    written, for the checks to name that key rather than drop it."""
    if not isinstance(options, Mapping):
        return options
    expanded = dict(options)
    for alias, target in OPTION_ALIASES.items():
        outer, _, inner = target.partition(".")
        nested = expanded.get(outer)
        if alias in expanded and (nested is None or isinstance(nested, Mapping)):
            expanded[outer] = {**(nested if isinstance(nested, Mapping) else {}), inner: expanded.pop(alias)}
    return expanded

