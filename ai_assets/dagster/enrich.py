"""Factories for enrichment assets: prompt, embed, classify (text and images).

Each asset reads its upstream partition as a stream, runs the plain-Python function window by window (bounded
memory whatever the partition's size) and hands the IO manager a reader over the output as it is computed, which
it writes batch by batch and commits once: each output byte is written once, to the store. The checks measure the
batches as they pass; usage and cost are added to the materialization when the last batch has been read (before
Dagster logs it), into each partition's own materialization when one run covers a range of partitions. An error
in a later window surfaces from the IO manager's write, which then commits nothing.
"""


import hashlib
import itertools
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Literal, Unpack

import dagster as dg
import pyarrow as pa
from pydantic import BaseModel

from ai_assets.dagster import checks as asset_checks
from ai_assets.dagster.budget import SpendCap, caps_of, report_spend
from ai_assets.dagster.call import Call, PriceOf, Run, Upstream
from ai_assets.dagster.checks import Check, embedding_check, error_rate_check, valid_share_check
from ai_assets.dagster.common import EnrichArgs, asset_kwargs, check_enrich_args, fingerprint, upstream_key
from ai_assets.dagster.dead_letter import enrichment_decorator, output_name
from ai_assets.dagster.describe import describe_classify, describe_embed, describe_prompt
from ai_assets.dagster.estimate import observe_estimate
from ai_assets.dagster.gates import DriftCheck, Gate, GoldenSet, JudgeCheck, as_texts, start_gates
from ai_assets.dagster.io_managers import TEXT_COLUMN, VECTOR_COLUMN
from ai_assets.dagster.metadata import progress_logger, usage_metadata
from ai_assets.dagster.resources import provider_of
from ai_assets.dagster.tracing import materialization_scope
from ai_assets.dagster.versions import PROVIDER_KEY
from ai_assets.functions.cascade import Cascade
from ai_assets.functions.classify import Method, classify_text, label_descriptions, method_role
from ai_assets.functions.embed import embed_text
from ai_assets.functions.images import MAX_PIXELS
from ai_assets.functions.prompt import PromptParams, prompt
from ai_assets.functions.templates import Part, check_output_column, check_template, render_content
from ai_assets.functions.vision import LabelSpec, classify_image, embed_image
from ai_assets.providers.protocols import ModelRole, Prompter, RemoteTextEmbedder, with_model
from ai_assets.runtime.engine import RunOptions
from ai_assets.runtime.errors import ConfigError
from ai_assets.runtime.prices import prices_for
from ai_assets.runtime.quality import VectorStats
from ai_assets.runtime.results import EnrichedStream
from ai_assets.runtime.usage import Prices, Usage
from ai_assets.storage.base import PARTITION_COLUMN


def _enrich_asset(
    name: str,
    upstream: Upstream,
    run: Run,
    args: EnrichArgs,
    *,
    price_of: PriceOf,
    code_version: str,
    checks: Sequence[Check],
    vector_column: str | None,
    description: str,
    text_column: str | None = None,
    model_role: ModelRole | Literal["auto"] = "chat",
    gates: Sequence[Gate] = (),
    output_column: str = "",
    describe_input: Callable[[pa.RecordBatch], list[str | None]] | None = None,
) -> dg.AssetsDefinition:
    provider_key, model = args["provider_key"], args.get("model")
    cache_key = args.get("cache_key", "ai_cache")
    kwargs = asset_kwargs(args)
    prefix = list(kwargs.pop("key_prefix", None) or [])
    key = dg.AssetKey([*prefix, name])
    metadata = {**({VECTOR_COLUMN: vector_column} if vector_column else {}),
                **({TEXT_COLUMN: text_column} if text_column else {}), PROVIDER_KEY: provider_key,
                **(kwargs.pop("metadata", None) or {})}
    kwargs.setdefault("description", description)
    named: list[asset_checks.Named] = [*checks, *gates]  # each partitioned like the asset
    specs = [asset_checks.check_spec(c.name, key, c.description, blocking=getattr(c, "blocking", False),
                                     partitions_def=kwargs.get("partitions_def")) for c in named]
    resource_keys = {provider_key} | ({cache_key} if cache_key else set())
    letters = dg.AssetKey([*prefix, f"{name}_dead_letter"]) if args.get("dead_letter") else None
    caps = list(caps_of(args.get("automation_condition")))
    decorate = enrichment_decorator(key, letters, upstream, code_version, resource_keys, specs, metadata, kwargs)

    @decorate
    def _enrich(context: dg.AssetExecutionContext, upstream: pa.RecordBatchReader) -> Iterator[Any]:
        provider = with_model(provider_of(getattr(context.resources, provider_key)), model, model_role)
        cache = getattr(context.resources, cache_key).get_cache() if cache_key else None
        partitions = list(context.partition_keys) if context.has_partition_key or context.has_partition_key_range \
            else []
        context.log.info(f"{name}: {provider!r}" + (f", partitions {partitions}" if partitions else ""))
        call = Call(provider, cache, progress_logger(context.log, name), context.run.run_id,
                    PARTITION_COLUMN if partitions else None, prices=price_of(provider), partitions=tuple(partitions))
        watching = yield from start_gates(context, name, key, gates, lambda gate: gate.start(
            output_column, describe_input, ",".join(partitions)), run, call)
        scope = materialization_scope(context, key, partitions)  # OpenTelemetry, when OTEL_* turn it on
        with scope.current():  # the call's spans become the materialization's children
            stream = run(upstream, call)
        if call.estimate:  # no new value to store: the estimate is an observation, no output (downstream skips)
            scope.end()
            return (yield from observe_estimate(context, name, key, stream, price_of(provider), partitions))
        vectors = VectorStats() if vector_column else None
        done = False

        def report() -> None:  # runs as the IO manager reads the last batch: before the materialization is logged
            _report(context, name, key, stream.usage, price_of(provider), partitions, caps)
            if warning := scope.end(stream.usage, price_of(provider)):  # a collector down costs a warning, no more
                context.log.warning(warning)
            for watch in watching:
                watch.metadata(context, key, partitions)

        def measured(first: pa.RecordBatch | None) -> Iterator[pa.RecordBatch]:
            nonlocal done
            for batch in itertools.chain([first] if first is not None else [], stream):
                if vectors is not None and vector_column in batch.schema.names:
                    vectors.update(batch.column(vector_column))
                for watch in watching:
                    watch.observe(batch)
                yield batch
            done = True
            report()

        first = next(iter(stream), None)  # the output's schema; an empty partition keeps its upstream's
        yield dg.Output(pa.RecordBatchReader.from_batches(first.schema if first is not None else upstream.schema,
                                                          measured(first)), output_name=output_name(key, letters))
        if not done:
            context.log.warning(f"{name}: the IO manager did not read the whole output; usage and checks cover "
                                "the rows it read")
        if letters is not None:  # after the output is stored: the rows that used up their attempts
            failed = stream.failed.table(upstream.schema)
            context.log.info(f"{name}: {failed.num_rows} dead letter(s) to {letters.to_user_string()}")
            yield dg.Output(failed, output_name=letters.to_python_identifier(),
                            metadata={"dagster/row_count": failed.num_rows})
        yield from asset_checks.measured(context, key, checks, stream.usage, vectors)  # each under its partition
        yield from asset_checks.verdicts(context, key, (watch.after(context, key, call) for watch in watching),
                                         {gate.name: gate.blocking for gate in gates})  # a judge's, a drift check's

    return _enrich


def _report(context: dg.AssetExecutionContext, name: str, key: dg.AssetKey, usage: Usage, prices: Prices | None,
            partitions: list[str], caps: Sequence[SpendCap]) -> None:
    """Usage and cost into the log and each partition's materialization metadata; the billed cost into the
    spend ledger of the budget in the asset's automation condition."""
    summary = usage.summary()
    context.log.info(
        f"{name}: {summary['rows']} rows, {summary['cache_hits']} from the journal, {summary['sent_rows']} "
        f"sent, {summary['errors']} failed, {summary['requests']} requests, {summary['rows_per_s']} rows/s")
    for partition in partitions:  # each partition's own usage and cost, also in a single-run backfill
        context.add_asset_metadata(usage_metadata(usage.groups.get(partition, Usage()), prices),
                                   asset_key=key, partition_key=partition)
    if not partitions:
        context.add_asset_metadata(usage_metadata(usage, prices), asset_key=key)
    if caps:
        report_spend(context, key, caps, usage, prices, partitions)


def with_defaults(args: EnrichArgs, provider_key: str, max_error_rate: float) -> EnrichArgs:
    """``args`` with the factory's own defaults where the user gave none; a keyword no factory takes (a typo,
    a setting of another factory) is an error naming it, not ignored."""
    unknown = sorted(set(args) - set(EnrichArgs.__annotations__))
    if unknown:
        raise TypeError(f"unexpected keyword argument(s) {unknown}; an enrichment factory takes its own settings "
                        f"and {sorted(EnrichArgs.__annotations__)}")
    check_enrich_args(args)
    return {"provider_key": provider_key, "max_error_rate": max_error_rate, **args}


def prompt_asset(
    name: str,
    upstream: Upstream,
    *,
    template: str | Sequence[Part],
    return_format: type[BaseModel] | None = None,
    system_message: str | None = None,
    output_column: str | None = None,
    params: PromptParams | None = None,
    min_valid_share: float = 0.95,
    cascade: Cascade | None = None,
    golden_set: GoldenSet | None = None,
    judge: JudgeCheck | None = None,
    **args: Unpack[EnrichArgs],
) -> dg.AssetsDefinition:
    """An asset that prompts an LLM once per upstream row (``template`` over its columns) and adds
    ``output_column`` (default: the asset's name; a struct with ``return_format``'s fields, or text) and
    ``<output_column>_error``. ``args``: what every enrichment factory takes (``EnrichArgs``: ``provider_key``
    (default ``llm``), ``model``, ``options``, ``prices``, ``max_error_rate`` (0.05), ``dead_letter``, and the
    ``@dg.asset`` settings of ``AssetArgs``).

    ``model`` enters the cache keys and the code version, so Dagster shows the asset stale when it changes, as it
    does for the template, system message, schema and params. ``cascade`` (``Cascade(["gpt-4o-mini", "gpt-4o"])``,
    instead of ``model``) sends each row to the next model only when the one before failed it or is not trusted;
    ``<output_column>_model`` says which answered, and the metadata gives each model's usage and cost.

        insights = prompt_asset("review_insights", clean, template="Review: {text}", return_format=Insight,
                                provider_key="llm", model="gpt-4o-mini", partitions_def=daily)
        dg.Definitions(assets=[..., insights], resources={
            "llm": OpenAICompatibleResource(model="gpt-4o-mini", api_key=dg.EnvVar("OPENAI_API_KEY")),
            "ai_cache": ResultCacheResource(), "io_manager": DeltaIOManager(root="warehouse")})
    """
    args = with_defaults(args, "llm", 0.05)
    output_column = output_column or name
    check_output_column(output_column, check_template(template), f"prompt_asset {name!r}")
    if cascade is not None and args.get("model") is not None:
        raise ConfigError(f"prompt_asset {name!r}: give model= or cascade=, not both (a cascade names its "
                          "models)")
    if cascade is not None:
        cascade.check(return_format)
    params = params or PromptParams()
    schema = return_format.model_json_schema() if return_format else None
    version = fingerprint(kind="prompt", template=template, system=system_message, schema=schema,
                          params=params.as_request(), model=args.get("model"), output=output_column,
                          cascade=None if cascade is None else cascade.fingerprint())
    prices = args.get("prices")

    def run(data: pa.RecordBatchReader, call: Call) -> EnrichedStream:
        return prompt(data, template, provider=call.provider, return_format=return_format,
                      system_message=system_message, output_column=output_column, params=params, prices=prices,
                      cascade=cascade, **call.common(args.get("options")))

    checks = [error_rate_check(output_column, args["max_error_rate"])]
    if return_format is not None:
        checks.append(valid_share_check(output_column, min_valid_share))
    gates = [g for g in (golden_set, judge) if g is not None]
    return _enrich_asset(name, upstream, run, args, gates=gates, output_column=output_column,
                         describe_input=lambda b: as_texts(render_content(b, template)[0]), code_version=version,
                         price_of=lambda provider: prices or prices_for(provider), checks=checks, vector_column=None,
                         description=describe_prompt(upstream_key(upstream), template, return_format, system_message,
                                                     output_column, args["provider_key"], args.get("model")))


def embedding_prices(prices: Prices | None) -> PriceOf:
    def price_of(provider: Any) -> Prices | None:
        return prices or prices_for(provider, embeddings=isinstance(provider, RemoteTextEmbedder))

    return price_of


def embed_asset(
    name: str,
    upstream: Upstream,
    *,
    column: str,
    output_column: str | None = None,
    drift: DriftCheck | None = None,
    **args: Unpack[EnrichArgs],
) -> dg.AssetsDefinition:
    """An asset that adds ``output_column`` (``fixed_size_list<float32>[d]``) embedding ``column``; with
    ``LanceDBIOManager`` the column becomes the table's vector column. ``args`` as for ``prompt_asset``
    (``provider_key`` default ``embedder``, ``max_error_rate`` 0).

        vectors = embed_asset("review_vectors", clean, column="text", provider_key="embedder",
                              io_manager_key="lancedb", partitions_def=daily)
    """
    args = with_defaults(args, "embedder", 0.0)
    output_column = output_column or name
    version = fingerprint(kind="embed", column=column, model=args.get("model"), output=output_column)
    prices = args.get("prices")

    def run(data: pa.RecordBatchReader, call: Call) -> EnrichedStream:
        return embed_text(data, column, provider=call.provider, output_column=output_column, prices=prices,
                          **call.common(args.get("options")))

    return _enrich_asset(name, upstream, run, args, gates=[drift] if drift else [], output_column=output_column,
                         price_of=embedding_prices(prices), code_version=version,
                         checks=[error_rate_check(output_column, args["max_error_rate"]),
                                 embedding_check(output_column)],
                         vector_column=output_column, text_column=column, model_role="embedding",
                         description=describe_embed(upstream_key(upstream), column, output_column,
                                                    args["provider_key"], args.get("model")))


def classify_asset(
    name: str,
    upstream: Upstream,
    *,
    column: str,
    labels: Sequence[str] | Mapping[str, str],
    method: Method | None = None,
    output_column: str | None = None,
    top_k: int | None = None,
    threshold: float | None = None,
    params: PromptParams | None = None,
    temperature: float = 0.05,
    **args: Unpack[EnrichArgs],
) -> dg.AssetsDefinition:
    """An asset that labels ``column`` with one of ``labels`` (``{label: description}`` helps embedding models),
    adding a ``{label, score}`` struct column: by embedding similarity with an embedder, by a constrained answer
    with an LLM (``params``: its sampling settings). With ``top_k`` / ``threshold`` it is multi-label: a list of the
    labels that apply, best first. ``args`` as for ``prompt_asset`` (``provider_key`` default ``embedder``).

        topics = classify_asset("review_topics", clean, column="text",
                                labels={"battery": "battery life and charging", "screen": "the display"},
                                provider_key="embedder", io_manager_key="delta", partitions_def=daily)
    """
    args = with_defaults(args, "embedder", 0.05)
    output_column = output_column or name
    described = label_descriptions(labels)
    version = fingerprint(kind="classify", column=column, labels=described, method=method, model=args.get("model"),
                          output=output_column, top_k=top_k, threshold=threshold,
                          params=params.as_request() if params else None, temperature=temperature)
    prices = args.get("prices")

    def run(data: pa.RecordBatchReader, call: Call) -> EnrichedStream:
        out = classify_text(data, column, described, provider=call.provider, method=method,
                            output_column=output_column, prices=prices, top_k=top_k, threshold=threshold,
                            params=params, temperature=temperature, **call.common(args.get("options")))
        assert isinstance(out, EnrichedStream)
        return out

    def price_of(provider: Any) -> Prices | None:
        return prices or (prices_for(provider) if isinstance(provider, Prompter) else embedding_prices(None)(provider))

    return _enrich_asset(name, upstream, run, args, price_of=price_of, code_version=version,
                         checks=[error_rate_check(output_column, args["max_error_rate"])], vector_column=None,
                         model_role=method_role(method),
                         description=describe_classify(upstream_key(upstream), column, list(described),
                                                       output_column, args["provider_key"], args.get("model"), method))


def embed_image_asset(
    name: str,
    upstream: Upstream,
    *,
    column: str = "image",
    output_column: str | None = None,
    max_pixels: int = MAX_PIXELS,
    **args: Unpack[EnrichArgs],
) -> dg.AssetsDefinition:
    """An asset that embeds the encoded images in ``column`` (CLIP through ``SentenceTransformersResource``, or
    ``EfficientNetResource`` offline); with ``LanceDBIOManager`` the column becomes the vector column. ``args`` as
    for ``prompt_asset`` (``provider_key`` default ``image_embedder``, ``max_error_rate`` 0).

        vectors = embed_image_asset("image_vectors", resized, column="image", provider_key="clip",
                                    io_manager_key="lancedb")
    """
    args = with_defaults(args, "image_embedder", 0.0)
    output_column = output_column or name
    version = fingerprint(kind="embed_image", column=column, model=args.get("model"), output=output_column,
                          max_pixels=max_pixels)
    prices = args.get("prices")

    def run(data: pa.RecordBatchReader, call: Call) -> EnrichedStream:
        out = embed_image(data, column, provider=call.provider, output_column=output_column, max_pixels=max_pixels,
                          prices=prices, **call.common(args.get("options"), RunOptions(on_error="null")))
        assert isinstance(out, EnrichedStream)
        return out

    return _enrich_asset(name, upstream, run, args, price_of=lambda provider: prices or prices_for(provider),
                         code_version=version, model_role="embedding",
                         checks=[error_rate_check(output_column, args["max_error_rate"]),
                                 embedding_check(output_column)],
                         vector_column=output_column,
                         description=describe_embed(upstream_key(upstream), column, output_column,
                                                    args["provider_key"], args.get("model"), images=True))


def classify_image_asset(
    name: str,
    upstream: Upstream,
    *,
    labels: Sequence[str] | Mapping[str, LabelSpec],
    column: str = "image",
    method: Method | None = None,
    output_column: str | None = None,
    temperature: float = 0.05,
    max_pixels: int = MAX_PIXELS,
    params: PromptParams | None = None,
    **args: Unpack[EnrichArgs],
) -> dg.AssetsDefinition:
    """An asset that labels the images in ``column``: by label prompts with a CLIP-class model
    (``{"phone": "a photo of a phone"}``) or by example images with any image embedder
    (``{"phone": [png_bytes, ...]}``). Adds a ``{label, score}`` struct column; a score is the softmax of the
    cosine similarities divided by ``temperature``. With ``method="llm"`` and a chat resource
    (``provider_key="llm"``) a vision LLM picks the label (``params``: its sampling settings). ``args`` as for
    ``prompt_asset`` (``provider_key`` default ``image_embedder``).
    """
    args = with_defaults(args, "image_embedder", 0.05)
    output_column = output_column or name
    described: dict[str, LabelSpec] = label_descriptions(labels)
    version = fingerprint(kind="classify_image", column=column, model=args.get("model"), output=output_column,
                          labels={k: v if isinstance(v, str) else _digest(v) for k, v in described.items()},
                          temperature=temperature, max_pixels=max_pixels, method=method,
                          params=params.as_request() if params else None)
    prices = args.get("prices")

    def run(data: pa.RecordBatchReader, call: Call) -> EnrichedStream:
        out = classify_image(data, column, described, provider=call.provider, method=method,
                             output_column=output_column, temperature=temperature, max_pixels=max_pixels,
                             params=params, prices=prices,
                             **call.common(args.get("options"), RunOptions(on_error="null")))
        assert isinstance(out, EnrichedStream)
        return out

    return _enrich_asset(name, upstream, run, args, price_of=lambda provider: prices or prices_for(provider),
                         code_version=version, model_role=method_role(method),
                         checks=[error_rate_check(output_column, args["max_error_rate"])], vector_column=None,
                         description=describe_classify(upstream_key(upstream), column, list(described),
                                                       output_column, args["provider_key"], args.get("model"),
                                                       "image"))


def _digest(examples: bytes | Sequence[bytes]) -> str:
    items = [examples] if isinstance(examples, bytes) else list(examples)
    return hashlib.sha256(b"".join(hashlib.sha256(e).digest() for e in items)).hexdigest()
