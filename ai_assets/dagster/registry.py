"""The one list of provider resources and IO managers by kind, and the YAML models derived from it.

A provider or store in YAML (``ResourcesComponent``) takes exactly its resource's own fields (with the field's
type, default and description), so a setting cannot be accepted for one kind and dropped for another: a field
the kind does not have fails ``dg check defs`` with its line. A new provider is its resource class plus one line
here. Secrets never appear in YAML: a resource's ``api_key`` is read from the environment variable named by
``api_key_env`` (through ``dg.EnvVar``).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

import dagster as dg
from pydantic import Field, create_model

from ai_assets.dagster.io_iceberg import IcebergIOManager
from ai_assets.dagster.io_managers import DeltaIOManager, LanceDBIOManager, ParquetIOManager
from ai_assets.dagster.resources import (
    EfficientNetResource,
    LlamaCppResource,
    OpenAICompatibleResource,
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


def build_resource(value: dg.Model, **overrides: Any) -> Any:
    """The resource or IO manager a YAML entry describes, from the fields it gave (and ``overrides``)."""
    kind, resource, aliases = _BUILT[type(value)]
    given = {name: getattr(value, name) for name in value.model_fields_set if name not in ("kind", "api_key_env")}
    given.update(overrides)
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


Provider = _union([_variant(kind, cls, secrets=True) for kind, cls in PROVIDERS.items()])
Store = _union([_variant(kind, cls, secrets=False) for kind, cls in STORES.items()])
