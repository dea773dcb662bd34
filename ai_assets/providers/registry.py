"""The one list of providers by name, each loaded only when asked for (as Daft's ``PROVIDERS``): a backend's
heavy imports (torch, llama.cpp) are paid by the runs that use it. A new provider is its module plus one line
here; the Dagster resources (``ai_assets.dagster.registry``) name the same kinds.

A provider in another package registers through an entry point in the group ``ai_assets.providers`` (the Python
packaging spec, "Entry points": ``[ai_assets.providers]`` ``myprov = my_package.module:MyProvider`` in the
distribution's ``entry_points.txt``, written from ``[project.entry-points."ai_assets.providers"]`` in its
pyproject.toml). It is found after the built-in names: a plugin that takes a built-in name is ignored, with a warning
naming its package. Entry points are read once per process, when a name is first asked for."""

from __future__ import annotations

import importlib
import warnings
from functools import cache
from importlib.metadata import EntryPoint, entry_points
from typing import Any

PROVIDERS: dict[str, str] = {
    "openai": "ai_assets.providers.openai_compatible:OpenAICompatibleProvider",
    "anthropic": "ai_assets.providers.anthropic:AnthropicProvider",
    "llama_cpp": "ai_assets.providers.llama_cpp:LlamaCppProvider",
    "sentence_transformers": "ai_assets.providers.sentence_transformers:SentenceTransformersProvider",
    "efficientnet": "ai_assets.providers.efficientnet:EfficientNetLite0Provider",
}


GROUP = "ai_assets.providers"


def _package(entry: EntryPoint) -> str:
    dist = getattr(entry, "dist", None)
    return f"{dist.name} {dist.version}" if dist is not None else "an unknown package"


@cache
def plugins() -> dict[str, EntryPoint]:
    """The providers other packages register in the ``ai_assets.providers`` entry-point group, by name (the first
    distribution on the path wins a name two of them register, as ``importlib.metadata`` lists them)."""
    from ai_assets.runtime.errors import AIAssetsWarning

    found: dict[str, EntryPoint] = {}
    for entry in entry_points(group=GROUP):
        if entry.name in PROVIDERS:
            warnings.warn(f"provider {entry.name!r} registered by {_package(entry)} (entry point {entry.value!r}) "
                          f"is ignored: {entry.name!r} is a built-in provider", AIAssetsWarning, stacklevel=2)
        else:
            found.setdefault(entry.name, entry)
    return found


def provider_names() -> list[str]:
    """Every provider name: the built-in ones, then those other packages register."""
    return [*PROVIDERS, *(name for name in plugins() if name not in PROVIDERS)]


def provider_class(name: str) -> type[Any]:
    """The provider class registered as ``name``: a built-in one, else one another package registers."""
    from ai_assets.runtime.errors import ConfigError

    if name in PROVIDERS:
        module, _, attribute = PROVIDERS[name].partition(":")
        found: type[Any] = getattr(importlib.import_module(module), attribute)
        return found
    entry = plugins().get(name)
    if entry is None:
        raise ConfigError(f"no provider {name!r}; known: {provider_names()}")
    try:
        loaded = entry.load()
    except Exception as error:  # the plugin's own import: name the package, not only its traceback
        raise ConfigError(f"provider {name!r} from {_package(entry)} (entry point {entry.value!r}) could not be "
                          f"loaded: {type(error).__name__}: {error}") from error
    if not isinstance(loaded, type):
        raise ConfigError(f"provider {name!r} from {_package(entry)}: entry point {entry.value!r} is "
                          f"{type(loaded).__name__}, not a class")
    return loaded


def load_provider(name: str, *args: Any, **kwargs: Any) -> Any:
    """A provider by name: ``load_provider("openai", "gpt-4o-mini", base_url=...)``."""
    return provider_class(name)(*args, **kwargs)
