"""The one list of provider resources and IO managers by kind, and the YAML models derived from it.

A provider or store in YAML (``ResourcesComponent``) takes exactly its resource's own fields (with the field's
type, default and description), so a setting cannot be accepted for one kind and dropped for another: a field
the kind does not have fails ``dg check defs`` with its line. A new provider is its resource class plus one line
here. Secrets never appear in YAML: a resource's ``api_key`` is read from the environment variable named by
``api_key_env`` (through ``dg.EnvVar``).

A provider another package registers (entry-point group ``ai_assets.providers``, see
``ai_assets.providers.registry``) is a kind too: its YAML fields are its class's keyword parameters (typed as
annotated where the annotation has a JSON schema), ``api_key`` read from ``api_key_env`` as for the built-in kinds,
and it is held by a ``PluginProviderResource``.
"""

from __future__ import annotations

import inspect
import typing
from typing import Annotated, Any, Literal, Union

import dagster as dg
from pydantic import Field, TypeAdapter, create_model

from ai_assets.dagster.io_iceberg import IcebergIOManager
from ai_assets.dagster.io_managers import DeltaIOManager, LanceDBIOManager, ParquetIOManager
from ai_assets.dagster.resources import (
    EfficientNetResource,
    LlamaCppResource,
    OpenAICompatibleResource,
    ProviderResource,
    SentenceTransformersResource,
)
from ai_assets.dagster.vendor_resources import AnthropicResource

PROVIDERS: dict[str, type[dg.ConfigurableResource]] = {  # type: ignore[type-arg]
    "openai": OpenAICompatibleResource,
    "anthropic": AnthropicResource,
    "llama_cpp": LlamaCppResource,
    "sentence_transformers": SentenceTransformersResource,
    "efficientnet": EfficientNetResource,
}
STORES: dict[str, type[dg.ConfigurableIOManager]] = {
    "parquet": ParquetIOManager,
    "delta": DeltaIOManager,
    "lancedb": LanceDBIOManager,
    "iceberg": IcebergIOManager,
}
# Older YAML names kept working: {kind: {yaml name: resource field}}.
ALIASES: dict[str, dict[str, str]] = {"openai": {"llm_model": "model"}, "llama_cpp": {"llm_model": "model_path"},
                                      "sentence_transformers": {"embedding_model": "model"}}
SECRETS = ("api_key",)
_BUILT: dict[type[dg.Model], tuple[str, type[Any], dict[str, str]]] = {}


def _variant(kind: str, resource: type[Any], *, secrets: bool) -> type[dg.Model]:
    fields: dict[str, Any] = {"kind": (Literal[kind], Field(description=resource.__name__))}
    for name, info in resource.model_fields.items():
        if name in SECRETS:
            continue
        if info.default_factory is not None:
            fields[name] = (info.annotation, Field(default_factory=info.default_factory,
                                                     description=info.description))
        else:
            fields[name] = (info.annotation, Field(default=... if info.is_required() else info.default,
                                                     description=info.description))
    aliases = ALIASES.get(kind, {})
    for alias, target in aliases.items():
        fields[alias] = (resource.model_fields[target].annotation | None,
                         Field(default=None, description=f"the same as {target}"))
        if resource.model_fields[target].is_required():  # either name may give it
            fields[target] = (resource.model_fields[target].annotation | None,
                              Field(default=None, description=resource.model_fields[target].description))
    if secrets and any(s in resource.model_fields for s in SECRETS):
        env = getattr(resource, "default_api_key_env", "OPENAI_API_KEY")  # each vendor's own variable
        fields["api_key_env"] = (str, Field(default=env,
                                            description="The environment variable the API key is read from"))
    model: type[dg.Model] = create_model(f"{resource.__name__}Yaml", __base__=dg.Model, **fields)
    _BUILT[model] = (kind, resource, aliases)
    return model


class PluginProviderResource(ProviderResource):
    """A provider another package registers (entry-point group ``ai_assets.providers``), built from its keyword
    arguments: ``PluginProviderResource(kind="myprov", settings={"model": "m1"}, api_key=dg.EnvVar("MYPROV_KEY"))``.
    Every setting is taken to decide answers (an asset using it is stale when one changes)."""

    kind: str = Field(description="The provider's registered name")
    settings: dict[str, Any] = Field(default_factory=dict, description="Keyword arguments of the provider class")
    api_key: str | None = Field(default=None, description="Passed as api_key when set; give a dg.EnvVar")

    def answer_settings(self) -> dict[str, Any]:
        return {"resource": type(self).__name__, "kind": self.kind, **self.settings}

    def build_provider(self) -> Any:
        from ai_assets.providers.registry import provider_class

        arguments = dict(self.settings, **({"api_key": self.api_key} if self.api_key is not None else {}))
        return provider_class(self.kind)(**arguments)


def _yaml_type(annotation: Any) -> Any:
    """``annotation`` where YAML can give it (it has a JSON schema), else Any."""
    try:
        TypeAdapter(annotation).json_schema()
    except Exception:  # an arbitrary class (a RateLimit, a client): any value, checked by the class itself
        return Any
    return annotation


def _plugin_variant(kind: str) -> type[dg.Model]:
    from ai_assets.providers.registry import provider_class

    cls = provider_class(kind)
    try:
        hints = typing.get_type_hints(cls.__init__)
    except Exception:  # annotations that do not resolve here: any value, checked by the class
        hints = {}
    fields: dict[str, Any] = {"kind": (Literal[kind], Field(description=f"{cls.__module__}.{cls.__qualname__}"))}
    keywords = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    parameters = [p for p in inspect.signature(cls).parameters.values() if p.kind in keywords]
    for parameter in parameters:
        if parameter.name in (*SECRETS, "kind", "api_key_env"):  # the entry's own fields
            continue
        default = ... if parameter.default is inspect.Parameter.empty else parameter.default
        fields[parameter.name] = (_yaml_type(hints.get(parameter.name, Any)), Field(default=default))
    if any(p.name in SECRETS for p in parameters):
        env = getattr(cls, "default_api_key_env", f"{kind.upper()}_API_KEY")
        fields["api_key_env"] = (str, Field(default=env,
                                            description="The environment variable the API key is read from"))
    model: type[dg.Model] = create_model(f"{cls.__name__}Yaml", __base__=dg.Model, **fields)
    _BUILT[model] = (kind, PluginProviderResource, {})
    return model


def build_resource(value: dg.Model, **overrides: Any) -> Any:
    """The resource or IO manager a YAML entry describes, from the fields it gave (and ``overrides``)."""
    kind, resource, aliases = _BUILT[type(value)]
    given = {name: getattr(value, name) for name in value.model_fields_set if name not in ("kind", "api_key_env")}
    given.update(overrides)
    if resource is PluginProviderResource:
        api_key = dg.EnvVar(value.model_dump()["api_key_env"]) if "api_key_env" in type(value).model_fields else None
        return PluginProviderResource(kind=kind, settings=given, api_key=api_key)
    for alias, target in aliases.items():
        if alias in given:
            if given.get(target) is not None:
                raise dg.DagsterInvalidDefinitionError(f"{kind}: give {target} or {alias}, not both")
            given[target] = given.pop(alias)
    given = {k: v for k, v in given.items() if v is not None or not resource.model_fields[k].is_required()}
    if "api_key_env" in type(value).model_fields:
        given["api_key"] = dg.EnvVar(value.model_dump()["api_key_env"])
    return resource(**given)


def _union(variants: list[type[dg.Model]]) -> Any:
    return Annotated[Union[tuple(variants)], Field(discriminator="kind")]  # noqa: UP007  # a runtime union


def _plugin_variants() -> list[type[dg.Model]]:
    """A YAML kind for each provider other packages register; one that does not load is left out, with a warning
    naming it and its package (one broken plugin does not stop every code location that imports ai_assets)."""
    import warnings

    from ai_assets.providers.registry import plugins
    from ai_assets.runtime.errors import AIAssetsWarning, ConfigError

    variants = []
    for kind in sorted(plugins()):
        try:
            variants.append(_plugin_variant(kind))
        except (ConfigError, TypeError, ValueError) as error:  # its import, signature or annotations
            warnings.warn(f"YAML kind {kind!r} is not available: {error}", AIAssetsWarning, stacklevel=2)
    return variants


Provider = _union([*(_variant(kind, cls, secrets=True) for kind, cls in PROVIDERS.items()), *_plugin_variants()])
Store = _union([_variant(kind, cls, secrets=False) for kind, cls in STORES.items()])
