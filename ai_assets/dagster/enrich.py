"""Factories for enrichment assets: prompt, embed, classify. Each translates Dagster context into a call of the
plain-Python function, records usage metadata and progress, and reports its asset checks."""


import hashlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Unpack

import dagster as dg
import numpy as np
import pyarrow as pa
from pydantic import BaseModel

from ai_assets.dagster.common import AssetArgs, asset_kwargs, fingerprint, upstream_key
from ai_assets.dagster.io_managers import VECTOR_COLUMN
from ai_assets.dagster.metadata import progress_logger, usage_metadata
from ai_assets.dagster.resources import provider_of
from ai_assets.functions.classify import Method, classify_text, label_descriptions
from ai_assets.functions.embed import embed_text
from ai_assets.functions.prompt import PromptParams, prompt
from ai_assets.functions.templates import Part
from ai_assets.functions.vision import LabelSpec, classify_image, embed_image
from ai_assets.runtime.cache import Cache
from ai_assets.runtime.engine import RunOptions
from ai_assets.runtime.pipeline import Enriched, EnrichedStream, Progress
from ai_assets.runtime.usage import Prices

CheckFn = Callable[[Enriched], dg.AssetCheckResult]
Check = tuple[str, str, CheckFn]  # name, description, evaluation
Run = Callable[[Any, Cache | None, Progress, pa.Table], Enriched]


def _table(result: Enriched | EnrichedStream) -> Enriched:
    assert isinstance(result, Enriched), "a table in gives a table out"
    return result


def _error_rate_check(output_column: str, max_error_rate: float) -> Check:
    name = "error_rate"

    def check(result: Enriched) -> dg.AssetCheckResult:
        attempted = result.usage.rows - result.usage.skipped
        rate = result.usage.errors / attempted if attempted else 0.0
        return dg.AssetCheckResult(check_name=name, passed=rate <= max_error_rate,
                                   metadata={"error_rate": rate, "max_error_rate": max_error_rate,
                                             "rows_with_errors": result.usage.errors})

    return name, f"share of rows sent whose {output_column} failed is at most {max_error_rate:.0%}", check


def _valid_share_check(output_column: str, min_share: float) -> Check:
    name = "schema_valid_share"

    def check(result: Enriched) -> dg.AssetCheckResult:
        errors = result.table.column(f"{output_column}_error").to_pylist()
        values = result.table.column(output_column)
        attempted = [i for i, e in enumerate(errors) if not (e or "").startswith("skipped:")]
        valid = sum(1 for i in attempted if values[i].is_valid)
        share = valid / len(attempted) if attempted else 1.0
        return dg.AssetCheckResult(check_name=name, passed=share >= min_share,
                                   metadata={"valid_share": share, "min_share": min_share})

    return name, f"at least {min_share:.0%} of rows sent got output that validates against the schema", check


def _embedding_check(output_column: str) -> Check:
    name = "embedding_dimension_and_finite"

    def check(result: Enriched) -> dg.AssetCheckResult:
        column = result.table.column(output_column).combine_chunks()
        dim = column.type.list_size
        # The child values of every slot, null slots included (flatten() would drop them).
        raw = column.values.slice(column.offset * dim, len(column) * dim)
        flat = np.asarray(raw.to_numpy(zero_copy_only=False), dtype=np.float32)
        valid = np.asarray(column.is_valid().to_numpy(zero_copy_only=False))
        vectors = flat.reshape(-1, dim)[valid] if dim else flat.reshape(0, 0)
        finite = bool(np.isfinite(vectors).all())
        zero = int((np.abs(vectors).sum(axis=1) == 0).sum()) if vectors.size else 0
        return dg.AssetCheckResult(check_name=name, passed=dim > 0 and finite and zero == 0,
                                   metadata={"dimension": dim, "all_finite": finite, "zero_vectors": zero})

    return name, f"{output_column} has a fixed dimension, no NaN / inf and no all-zero vector", check


def _enrich_asset(
    name: str,
    upstream: dg.AssetsDefinition | dg.AssetKey | str,
    run: Run,
    *,
    provider_key: str,
    cache_key: str | None,
    code_version: str,
    checks: Sequence[Check],
    prices: Prices | None,
    extra_metadata: Mapping[str, Any],
    asset_args: AssetArgs,
) -> dg.AssetsDefinition:
    kwargs = asset_kwargs(asset_args)
    key = dg.AssetKey([*(kwargs.pop("key_prefix", None) or []), name])
    metadata = {**extra_metadata, **(kwargs.pop("metadata", None) or {})}
    specs = [dg.AssetCheckSpec(check_name, asset=key, description=text) for check_name, text, _ in checks]
    resource_keys = {provider_key} | ({cache_key} if cache_key else set())

    @dg.asset(key=key, ins={"upstream": dg.AssetIn(upstream_key(upstream))}, code_version=code_version,
              required_resource_keys=resource_keys, check_specs=specs, metadata=metadata, kinds={"ai"}, **kwargs)
    def _enrich(context: dg.AssetExecutionContext, upstream: pa.Table) -> Iterator[Any]:
        provider = provider_of(getattr(context.resources, provider_key))
        cache = getattr(context.resources, cache_key).get_cache() if cache_key else None
        context.log.info(f"{name}: {upstream.num_rows} rows with {provider!r}")
        result = run(provider, cache, progress_logger(context.log, name), upstream)
        summary = result.usage.summary()
        context.log.info(
            f"{name}: {summary['rows']} rows, {summary['cache_hits']} from cache, {summary['sent_rows']} sent, "
            f"{summary['errors']} failed, {summary['requests']} requests, {summary['rows_per_s']} rows/s")
        yield dg.Output(result.table, metadata=usage_metadata(result.usage, prices))
        for _, _, check in checks:
            yield check(result)

    return _enrich


def prompt_asset(
    name: str,
    upstream: dg.AssetsDefinition | dg.AssetKey | str,
    *,
    template: str | Sequence[Part],
    return_format: type[BaseModel] | None = None,
    system_message: str | None = None,
    output_column: str | None = None,
    params: PromptParams | None = None,
    options: RunOptions | None = None,
    provider_key: str = "llm",
    cache_key: str | None = "ai_cache",
    model: str | None = None,
    prices: Prices | None = None,
    max_error_rate: float = 0.05,
    min_valid_share: float = 0.95,
    **asset_args: Unpack[AssetArgs],
) -> dg.AssetsDefinition:
    """An asset that prompts an LLM once per upstream row (``template`` over its columns) and adds
    ``output_column`` (default: the asset's name; a struct with ``return_format``'s fields, or text) and
    ``<output_column>_error``.

    ``model`` enters the code version, so Dagster shows the asset stale when it changes (as it does for the
    template, system message, schema and params); cached answers are keyed by the provider's real model anyway.

        insights = prompt_asset("review_insights", clean, template="Review: {text}", return_format=Insight,
                                provider_key="llm", model="gpt-4o-mini", partitions_def=daily)
        dg.Definitions(assets=[..., insights], resources={
            "llm": OpenAICompatibleResource(model="gpt-4o-mini", api_key=dg.EnvVar("OPENAI_API_KEY")),
            "ai_cache": ResultCacheResource(), "io_manager": DeltaIOManager(root="warehouse")})
    """
    output_column = output_column or name
    params = params or PromptParams()
    schema = return_format.model_json_schema() if return_format else None
    version = fingerprint(kind="prompt", template=template, system=system_message, schema=schema,
                          params=params.as_request(), model=model, output=output_column)

    def run(provider: Any, cache: Cache | None, progress: Progress, table: pa.Table) -> Enriched:
        return _table(prompt(table, template, provider=provider, return_format=return_format,
                      system_message=system_message, output_column=output_column, params=params, options=options,
                      cache=cache, progress=progress))

    checks = [_error_rate_check(output_column, max_error_rate)]
    if return_format is not None:
        checks.append(_valid_share_check(output_column, min_valid_share))
    return _enrich_asset(name, upstream, run, provider_key=provider_key, cache_key=cache_key, code_version=version,
                         checks=checks, prices=prices, extra_metadata={}, asset_args=asset_args)


def embed_asset(
    name: str,
    upstream: dg.AssetsDefinition | dg.AssetKey | str,
    *,
    column: str,
    output_column: str | None = None,
    options: RunOptions | None = None,
    provider_key: str = "embedder",
    cache_key: str | None = "ai_cache",
    model: str | None = None,
    max_error_rate: float = 0.0,
    **asset_args: Unpack[AssetArgs],
) -> dg.AssetsDefinition:
    """An asset that adds ``output_column`` (``fixed_size_list<float32>[d]``) embedding ``column``; with
    ``LanceDBIOManager`` the column becomes the table's vector column.

        vectors = embed_asset("review_vectors", clean, column="text", provider_key="embedder",
                              io_manager_key="lancedb", partitions_def=daily)
    """
    output_column = output_column or name
    version = fingerprint(kind="embed", column=column, model=model, output=output_column)

    def run(provider: Any, cache: Cache | None, progress: Progress, table: pa.Table) -> Enriched:
        return _table(embed_text(table, column, provider=provider, output_column=output_column, options=options,
                          cache=cache, progress=progress))

    checks = [_error_rate_check(output_column, max_error_rate), _embedding_check(output_column)]
    return _enrich_asset(name, upstream, run, provider_key=provider_key, cache_key=cache_key, code_version=version,
                         checks=checks, prices=None, extra_metadata={VECTOR_COLUMN: output_column},
                         asset_args=asset_args)


def classify_asset(
    name: str,
    upstream: dg.AssetsDefinition | dg.AssetKey | str,
    *,
    column: str,
    labels: Sequence[str] | Mapping[str, str],
    method: Method | None = None,
    output_column: str | None = None,
    options: RunOptions | None = None,
    provider_key: str = "embedder",
    cache_key: str | None = "ai_cache",
    model: str | None = None,
    max_error_rate: float = 0.05,
    **asset_args: Unpack[AssetArgs],
) -> dg.AssetsDefinition:
    """An asset that labels ``column`` with one of ``labels`` (``{label: description}`` helps embedding models),
    adding a ``{label, score}`` struct column.

        topics = classify_asset("review_topics", clean, column="text",
                                labels={"battery": "battery life and charging", "screen": "the display"},
                                provider_key="embedder", io_manager_key="delta", partitions_def=daily)
    """
    output_column = output_column or name
    described = label_descriptions(labels)
    version = fingerprint(kind="classify", column=column, labels=described, method=method, model=model,
                          output=output_column)

    def run(provider: Any, cache: Cache | None, progress: Progress, table: pa.Table) -> Enriched:
        return _table(classify_text(table, column, described, provider=provider, method=method,
                             output_column=output_column, options=options, cache=cache, progress=progress))

    checks = [_error_rate_check(output_column, max_error_rate)]
    return _enrich_asset(name, upstream, run, provider_key=provider_key, cache_key=cache_key, code_version=version,
                         checks=checks, prices=None, extra_metadata={}, asset_args=asset_args)


def embed_image_asset(
    name: str,
    upstream: dg.AssetsDefinition | dg.AssetKey | str,
    *,
    column: str = "image",
    output_column: str | None = None,
    provider_key: str = "image_embedder",
    cache_key: str | None = "ai_cache",
    model: str | None = None,
    max_error_rate: float = 0.0,
    **asset_args: Unpack[AssetArgs],
) -> dg.AssetsDefinition:
    """An asset that embeds the encoded images in ``column`` (CLIP through ``SentenceTransformersResource``, or
    ``EfficientNetResource`` offline); with ``LanceDBIOManager`` the column becomes the vector column.

        vectors = embed_image_asset("image_vectors", resized, column="image", provider_key="clip",
                                    io_manager_key="lancedb")
    """
    output_column = output_column or name
    version = fingerprint(kind="embed_image", column=column, model=model, output=output_column)

    def run(provider: Any, cache: Cache | None, progress: Progress, table: pa.Table) -> Enriched:
        return _table(embed_image(table, column, provider=provider, output_column=output_column, cache=cache,
                           progress=progress))

    checks = [_error_rate_check(output_column, max_error_rate), _embedding_check(output_column)]
    return _enrich_asset(name, upstream, run, provider_key=provider_key, cache_key=cache_key, code_version=version,
                         checks=checks, prices=None, extra_metadata={VECTOR_COLUMN: output_column},
                         asset_args=asset_args)


def classify_image_asset(
    name: str,
    upstream: dg.AssetsDefinition | dg.AssetKey | str,
    *,
    labels: Sequence[str] | Mapping[str, LabelSpec],
    column: str = "image",
    output_column: str | None = None,
    provider_key: str = "image_embedder",
    cache_key: str | None = "ai_cache",
    model: str | None = None,
    max_error_rate: float = 0.05,
    **asset_args: Unpack[AssetArgs],
) -> dg.AssetsDefinition:
    """An asset that labels the images in ``column``: by label prompts with a CLIP-class model
    (``{"phone": "a photo of a phone"}``) or by example images with any image embedder
    (``{"phone": [png_bytes, ...]}``). Adds a ``{label, score}`` struct column.
    """
    output_column = output_column or name
    described = dict(labels) if isinstance(labels, Mapping) else {label: label for label in labels}
    version = fingerprint(kind="classify_image", column=column, model=model, output=output_column,
                          labels={k: v if isinstance(v, str) else _digest(v) for k, v in described.items()})

    def run(provider: Any, cache: Cache | None, progress: Progress, table: pa.Table) -> Enriched:
        return _table(classify_image(table, column, described, provider=provider, output_column=output_column,
                              cache=cache, progress=progress))

    checks = [_error_rate_check(output_column, max_error_rate)]
    return _enrich_asset(name, upstream, run, provider_key=provider_key, cache_key=cache_key, code_version=version,
                         checks=checks, prices=None, extra_metadata={}, asset_args=asset_args)


def _digest(examples: bytes | Sequence[bytes]) -> str:
    items = [examples] if isinstance(examples, bytes) else list(examples)
    return hashlib.sha256(b"".join(hashlib.sha256(e).digest() for e in items)).hexdigest()
