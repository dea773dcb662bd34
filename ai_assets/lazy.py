"""Public names imported on first use (PEP 562, module ``__getattr__``): a package's ``__init__`` maps each name it
exports to the module that defines it, so importing the package costs none of those modules, nor the backends they
import, until a name is used. ``from ai_assets import prompt`` gives the same object as before, imported then.

A name whose module needs an optional extra that is not installed (``ai_assets.dagster`` without the ``dagster``
extra) raises ``MissingExtraError`` naming the extra when the name is first used, as Daft's
``ProviderImportError`` does, instead of a bare ``ModuleNotFoundError`` from deep inside the import."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any


def lazy_exports(package: str, namespace: dict[str, Any], sources: Mapping[str, Sequence[str]],
                 extras: Mapping[str, str] | None = None) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for ``package``, whose ``namespace`` is its ``globals()``; ``sources`` maps each
    module to the public names it defines; ``extras`` maps a third-party package those modules import to the
    extra of ai_assets that installs it."""
    where = {name: module for module, names in sources.items() for name in names}

    def __getattr__(name: str) -> Any:
        module = where.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        try:
            imported = importlib.import_module(module)
        except ModuleNotFoundError as exc:
            missing = (exc.name or "").partition(".")[0]
            if missing not in (extras or {}):
                raise
            from ai_assets.runtime.errors import MissingExtraError

            raise MissingExtraError(missing, (extras or {})[missing]) from exc
        value = getattr(imported, name)
        namespace[name] = value  # later reads are plain attribute reads
        return value

    def __dir__() -> list[str]:
        return sorted({*namespace, *where})

    return __getattr__, __dir__
