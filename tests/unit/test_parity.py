"""Every parameter reaches every view of a step: each parameter of a plain function is a parameter of its
factory, and each parameter of a factory is a field of its YAML component (a nested spec's fields flattened where
the component flattens them). A parameter added to a function and forgotten in the factory or the YAML fails here."""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable
from typing import Any, Unpack, get_args, get_origin

import pytest

import ai_assets as plain
import ai_assets.dagster as factories
from ai_assets.dagster import components
from ai_assets.dagster.common import AssetArgs
from ai_assets.dagster.tasks import semantic_filter_asset
from ai_assets.functions.ingest_spec import IngestSpec
from ai_assets.functions.semantic.filter import semantic_filter

RUN_CONTEXT = {"table", "provider", "embedder", "cache", "progress", "run_id", "group_column", "left", "right",
               "right_key"}
"""What the Dagster layer supplies itself (the upstream rows, the resource's provider and embedder, the journal);
``right_key`` names the key of a LanceDB table given as the right side, which an asset reads as an Arrow table."""
DAGSTER_ONLY = {"name", "upstream", "left", "asset_args", "provider_key", "cache_key", "max_error_rate",
                "min_valid_share"}
MODEL_FIELDS = ("llm_model", "embedding_model")  # a component's ``model`` (the base classes own that name)
FLATTENED: dict[str, type[Any]] = {"policy": plain.DownloadPolicy, "spec": plain.ImageSpec}
"""Factory parameters whose dataclass's fields the component takes one by one."""

STEPS: list[tuple[Callable[..., Any], Callable[..., Any], type[Any] | None]] = [
    (plain.prompt, factories.prompt_asset, components.PromptComponent),
    (plain.embed_text, factories.embed_asset, components.EmbedComponent),
    (plain.classify_text, factories.classify_asset, components.ClassifyComponent),
    (plain.embed_image, factories.embed_image_asset, components.EmbedImageComponent),
    (plain.classify_image, factories.classify_image_asset, components.ClassifyImageComponent),
    (plain.download, factories.download_asset, components.DownloadComponent),
    (plain.decode_images, factories.decode_images_asset, components.DecodeImagesComponent),
    (plain.extract_text, factories.extract_text_asset, components.ExtractTextComponent),
    (plain.chunk_text, factories.chunk_text_asset, components.ChunkTextComponent),
    (plain.summarize, factories.summarize_asset, components.TaskComponent),
    (plain.translate, factories.translate_asset, components.TaskComponent),
    (plain.extract, factories.extract_asset, components.TaskComponent),
    (plain.mask, factories.mask_asset, components.TaskComponent),
    (plain.fix_grammar, factories.fix_grammar_asset, components.TaskComponent),
    (plain.analyze_sentiment, factories.sentiment_asset, components.TaskComponent),
    (plain.similarity, factories.similarity_asset, components.TaskComponent),
    (plain.transcribe, factories.transcribe_asset, components.TaskComponent),
    (semantic_filter, semantic_filter_asset, components.TaskComponent),
    (plain.semantic_top_k, factories.semantic_top_k_asset, components.SemanticTopKComponent),
    (plain.semantic_aggregate, factories.semantic_aggregate_asset, components.SemanticAggregateComponent),
    (plain.semantic_join, factories.semantic_join_asset, components.SemanticJoinComponent),
    (plain.semantic_dedup, factories.semantic_dedup_asset, components.SemanticDedupComponent),
]


def parameters(function: Callable[..., Any]) -> set[str]:
    """Its named parameters and the keys of a ``**kwargs: Unpack[SomeTypedDict]`` (``RunArgs``, ``EnrichArgs``)."""
    names = set()
    for name, p in inspect.signature(function).parameters.items():
        if p.kind == p.VAR_KEYWORD:
            names |= set(typed_keys(p.annotation, function))
        elif p.kind != p.VAR_POSITIONAL:
            names.add(name)
    return names


def typed_keys(annotation: Any, function: Callable[..., Any]) -> tuple[str, ...]:
    if isinstance(annotation, str):  # postponed annotations: resolve in the function's module
        annotation = eval(annotation, vars(inspect.getmodule(function)))
    args = get_args(annotation)
    assert get_origin(annotation) is Unpack and args, f"{function.__name__}: **kwargs must be an Unpack[TypedDict]"
    return tuple(args[0].__annotations__)


ASSET_ARGS = set(AssetArgs.__annotations__) - {"automation_condition"}
"""``@dg.asset`` settings a component gives its own way (``partitions``, ``retries``, ``gpus``, ...)."""


@pytest.mark.parametrize(("function", "factory", "component"), STEPS, ids=[s[1].__name__ for s in STEPS])
def test_every_parameter_reaches_the_factory_and_the_component(
        function: Callable[..., Any], factory: Callable[..., Any], component: type[Any] | None) -> None:
    assert parameters(function) - RUN_CONTEXT - parameters(factory) == set()
    if component is None:
        return
    fields = set(component.model_fields)
    missing = set()
    for name in parameters(factory) - DAGSTER_ONLY - ASSET_ARGS - {"prices"}:
        if name in FLATTENED:
            inner = {f.name for f in dataclasses.fields(FLATTENED[name])} - {"size"} | ({"size"} & fields)
            missing |= {f"{name}.{f}" for f in inner - fields}
        elif name == "model":
            missing |= set() if set(MODEL_FIELDS) & fields else {"model"}
        elif name not in fields:
            missing.add(name)
    assert missing == set()
    assert "prices" not in parameters(factory) or "prices" in fields


def test_every_ingest_setting_is_in_the_factory_and_the_component() -> None:
    spec = {f.name for f in dataclasses.fields(IngestSpec)}
    assert spec - parameters(factories.ingest_asset) == set()
    # the component names its table source by kind (delta_table / lance_table + partition_column)
    assert spec - {"source"} - set(components.IngestComponent.model_fields) == set()


def test_the_task_registry_is_what_the_factories_and_the_component_offer() -> None:
    """``TASKS`` is the one list of tasks: the component's ``task`` choices are its names, every entry's inputs and
    settings are parameters of its function and fields of the component, and each task function has a factory."""
    from typing import get_args

    from ai_assets.dagster.components.enrich import TASK_SETTINGS
    from ai_assets.functions.tasks import TASKS

    assert set(get_args(components.TaskComponent.model_fields["task"].annotation)) == set(TASKS)
    assert set(TASK_SETTINGS) <= set(components.TaskComponent.model_fields)
    factory_of = {step[0]: step[1] for step in STEPS}
    for name, entry in TASKS.items():
        taken = {*entry.inputs, *entry.settings}
        assert taken <= parameters(entry.function), name
        assert taken <= set(TASK_SETTINGS), name
        assert set(entry.required) <= set(entry.settings), name
        assert taken <= parameters(factory_of[entry.function]), name
    covered = {step[0] for step in STEPS if step[2] is components.TaskComponent}
    assert covered == {entry.function for entry in TASKS.values()}


@pytest.mark.parametrize("task", sorted(__import__("ai_assets.functions.tasks").functions.tasks.TASKS))
def test_a_generated_task_factory_s_typed_view_is_its_signature(task: str) -> None:
    """The named task factories are generated from ``TASKS`` (their signature built from the task function's);
    the Protocol each is declared as (what a type checker and an IDE read) names the same keywords with the same
    defaults, so the two cannot drift apart."""
    from typing import get_type_hints

    import ai_assets.dagster.tasks as module

    name = "sentiment_asset" if task == "sentiment" else f"{task}_asset"
    factory = getattr(module, name)
    declared = get_type_hints(module)[name]
    runtime = inspect.signature(factory).parameters
    typed = dict(inspect.signature(declared.__call__).parameters)
    typed.pop("self")
    assert list(typed) == list(runtime) or set(typed) == set(runtime), (list(typed), list(runtime))
    for key, parameter in typed.items():
        if parameter.default is not Ellipsis:  # ``...``: a default spelt in the function (e.g. DEFAULT_ENTITIES)
            assert parameter.default == runtime[key].default, key
        assert parameter.kind == runtime[key].kind, key
