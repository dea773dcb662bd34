"""Public names imported on first use (PEP 562, module ``__getattr__``): a package's ``__init__`` maps each name it
exports to the module that defines it, so importing the package costs none of those modules, nor the backends they
import, until a name is used. ``from ai_assets import prompt`` gives the same object as before, imported then."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any


def lazy_exports(package: str, namespace: dict[str, Any], sources: Mapping[str, Sequence[str]]
                 ) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for ``package``, whose ``namespace`` is its ``globals()``; ``sources`` maps each
    module to the public names it defines."""
    where = {name: module for module, names in sources.items() for name in names}

    def __getattr__(name: str) -> Any:
        module = where.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        namespace[name] = value  # later reads are plain attribute reads
        return value

    def __dir__() -> list[str]:
        return sorted({*namespace, *where})

    return __getattr__, __dir__
