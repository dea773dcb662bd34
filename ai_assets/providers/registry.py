"""The one list of providers by name, each loaded only when asked for (as Daft's ``PROVIDERS``): a backend's
heavy imports (torch, llama.cpp) are paid by the runs that use it. A new provider is its module plus one line
here; the Dagster resources (``ai_assets.dagster.registry``) name the same kinds."""

from __future__ import annotations

import importlib
from typing import Any

PROVIDERS: dict[str, str] = {
    "openai": "ai_assets.providers.openai_compatible:OpenAICompatibleProvider",
    "anthropic": "ai_assets.providers.anthropic:AnthropicProvider",
    "llama_cpp": "ai_assets.providers.llama_cpp:LlamaCppProvider",
    "sentence_transformers": "ai_assets.providers.sentence_transformers:SentenceTransformersProvider",
    "efficientnet": "ai_assets.providers.efficientnet:EfficientNetLite0Provider",
}


def provider_class(name: str) -> type[Any]:
    """The provider class registered as ``name``."""
    try:
        module, _, attribute = PROVIDERS[name].partition(":")
    except KeyError:
        from ai_assets.runtime.errors import ConfigError

        raise ConfigError(f"no provider {name!r}; known: {sorted(PROVIDERS)}") from None
    found: type[Any] = getattr(importlib.import_module(module), attribute)
    return found


def load_provider(name: str, *args: Any, **kwargs: Any) -> Any:
    """A provider by name: ``load_provider("openai", "gpt-4o-mini", base_url=...)``."""
    return provider_class(name)(*args, **kwargs)
