"""Factories for the pair operators: ``semantic_join_asset`` and ``semantic_dedup_asset``.

A join asset is partitioned like its left upstream and reads all of its right upstream (``AllPartitionMapping``),
so a daily left partition is joined against every right row; the verdicts are journalled by the pair's content,
so adding a day on the left sends only that day's pairs, and a re-run sends none. A dedup asset clusters the rows of
its upstream partition (or of the whole upstream when it is not partitioned); a range of partitions in one run
(``BackfillPolicy.single_run()``) gives each partition its own join or clusters, as a run of it alone would. Both
take ``EnrichArgs`` like the enrichment factories: the journal, options, model, prices, the error-rate check, cost
metadata and dead letters (the pairs whose verdict used up its attempts); ``embedder_key`` names the resource that
embeds for the blocking.
"""

from collections.abc import Callable, Iterator
from typing import Any, Unpack

import dagster as dg
import pyarrow as pa
import pyarrow.compute as pc

from ai_assets.dagster import checks as asset_checks
from ai_assets.dagster.call import Call, Upstream
from ai_assets.dagster.checks import error_rate_check
from ai_assets.dagster.common import EnrichArgs, asset_kwargs, fingerprint, upstream_key
from ai_assets.dagster.dead_letter import only_selected
from ai_assets.dagster.enrich import with_defaults
from ai_assets.dagster.metadata import progress_logger, usage_metadata
from ai_assets.dagster.resources import provider_of
from ai_assets.dagster.versions import PROVIDER_KEY
from ai_assets.functions.cascade import Cascade
from ai_assets.functions.semantic._rows_ask import add_usage
from ai_assets.functions.semantic.blocking import check_floor, check_k
from ai_assets.functions.semantic.dedup import MAX_CLUSTER_SIZE, SAME_ENTITY, check_cluster_size, semantic_dedup
from ai_assets.functions.semantic.join import MAX_TEXT_CHARS, Paired, check_limit, semantic_join
from ai_assets.providers.protocols import with_model
from ai_assets.runtime.dead_letter import COLUMNS as LETTER_COLUMNS
from ai_assets.runtime.engine import RunOptions
from ai_assets.runtime.errors import ConfigError
from ai_assets.runtime.prices import prices_for
from ai_assets.storage.base import PARTITION_COLUMN

Compute = Callable[[dict[str, pa.Table], Call, Any], Paired]


def semantic_join_asset(
    name: str,
    left: Upstream,
    right: Upstream,
    *,
    left_column: str,
    right_column: str,
    condition: str,
    k: int = 5,
    min_similarity: float | None = None,
    left_vector: str | None = None,
    right_vector: str | None = None,
    cascade: Cascade | None = None,
    max_text_chars: int = MAX_TEXT_CHARS,
    keep_unmatched: bool = False,
    embedder_key: str = "embedder",
    **args: Unpack[EnrichArgs],
) -> dg.AssetsDefinition:
    """An asset of the pairs of ``left`` and ``right`` rows for which ``condition`` holds (``semantic_join``:
    ``k`` candidates per left row by embedding similarity, each verified by the LLM of ``provider_key``).
    Partition it like ``left`` (``partitions_def=``): each left partition is joined against all of ``right``.

        matches = semantic_join_asset("matches", "orders", "catalog", left_column="item", right_column="title",
                                      condition="the order is for this product", k=5, partitions_def=daily)
        dg.Definitions(assets=[orders, catalog, matches], resources={
            "llm": OpenAICompatibleResource(model="gpt-4o-mini", api_key=dg.EnvVar("OPENAI_API_KEY")),
            "embedder": SentenceTransformersResource(), "ai_cache": ResultCacheResource(),
            "io_manager": DeltaIOManager(root="warehouse")})
    """
    args = with_defaults(args, "llm", 0.05)
    check_k(k)  # a wrong setting fails when the definitions load (dg check defs), not in a run
    check_floor(min_similarity, "min_similarity")
    check_limit(max_text_chars)
    if cascade is not None and args.get("model") is not None:
        raise ConfigError(f"semantic_join_asset {name!r}: give model= or cascade=, not both")
    version = fingerprint(kind="semantic_join", left=left_column, right=right_column, condition=condition, k=k,
                          min_similarity=min_similarity, vectors=[left_vector, right_vector], model=args.get("model"),
                          cascade=None if cascade is None else cascade.fingerprint(), cut=max_text_chars,
                          unmatched=keep_unmatched)

    def compute(tables: dict[str, pa.Table], call: Call, embedder: Any) -> Paired:
        return semantic_join(tables["left"], tables["right"], left_column, right_column, condition,
                             provider=call.provider, embedder=embedder, k=k, min_similarity=min_similarity,
                             left_vector=left_vector, right_vector=right_vector, cascade=cascade,
                             max_text_chars=max_text_chars, keep_unmatched=keep_unmatched, prices=args.get("prices"),
                             **_common(call, args))

    ins = {"left": dg.AssetDep(upstream_key(left)),
           "right": dg.AssetDep(upstream_key(right), partition_mapping=dg.AllPartitionMapping())}
    description = (f"Pairs of `{upstream_key(left).to_user_string()}`.`{left_column}` and "
                   f"`{upstream_key(right).to_user_string()}`.`{right_column}` for which: {condition} ({k} "
                   f"candidates per left row, verified by resource `{args['provider_key']}`).")
    return _pair_asset(name, ins, compute, args, version, description, embedder_key)


def semantic_dedup_asset(
    name: str,
    upstream: Upstream,
    *,
    column: str,
    k: int = 5,
    threshold: float | None = 0.5,
    vector_column: str | None = None,
    condition: str = SAME_ENTITY,
    max_cluster_size: int = MAX_CLUSTER_SIZE,
    max_text_chars: int = MAX_TEXT_CHARS,
    cascade: Cascade | None = None,
    embedder_key: str = "embedder",
    **args: Unpack[EnrichArgs],
) -> dg.AssetsDefinition:
    """An asset of the upstream rows with ``cluster_id`` and ``cluster_size`` (``semantic_dedup``: rows the LLM
    judges to be the same entity share an id, stable across runs and row order).

        companies = semantic_dedup_asset("companies_resolved", "companies", column="name", k=5, threshold=0.5)
    """
    args = with_defaults(args, "llm", 0.05)
    check_k(k)
    check_floor(threshold, "threshold")
    check_limit(max_text_chars)
    check_cluster_size(max_cluster_size)
    if cascade is not None and args.get("model") is not None:
        raise ConfigError(f"semantic_dedup_asset {name!r}: give model= or cascade=, not both")
    version = fingerprint(kind="semantic_dedup", column=column, k=k, threshold=threshold, vector=vector_column,
                          condition=condition, most=max_cluster_size, model=args.get("model"), cut=max_text_chars,
                          cascade=None if cascade is None else cascade.fingerprint())

    def compute(tables: dict[str, pa.Table], call: Call, embedder: Any) -> Paired:
        return semantic_dedup(tables["upstream"], column, provider=call.provider, embedder=embedder, k=k,
                              threshold=threshold, vector_column=vector_column, condition=condition,
                              max_cluster_size=max_cluster_size, max_text_chars=max_text_chars, cascade=cascade,
                              prices=args.get("prices"), **_common(call, args))

    description = (f"The rows of `{upstream_key(upstream).to_user_string()}` clustered by entity (`{column}`; "
                   f"{k} candidates per text, verified by resource `{args['provider_key']}`) into `cluster_id`.")
    return _pair_asset(name, {"upstream": dg.AssetDep(upstream_key(upstream))}, compute, args, version, description,
                       embedder_key)


def _common(call: Call, args: EnrichArgs) -> dict[str, Any]:
    common = call.common(args.get("options"), RunOptions(on_error="null"))
    common["group_column"] = None  # a pair belongs to no one partition of its sides
    return common


def each_partition(tables: dict[str, pa.Table], name: str, run: Callable[[dict[str, pa.Table]], Paired]) -> Paired:
    """``run`` over each partition of ``tables[name]`` on its own (a single-run backfill of a range gives each day
    what a run of that day gives: its own pairs, its own clusters), the results tagged with their partition for the
    IO manager, the figures and usage summed (and kept per partition)."""
    table = tables[name]
    if PARTITION_COLUMN not in table.column_names:
        return run(tables)
    column = table.column(PARTITION_COLUMN)
    keys = sorted((key for key in pc.unique(column).to_pylist() if key is not None), key=str)
    if len(keys) <= 1:
        return run(tables)
    total = Paired(pa.table({}))
    parts = []
    for key in keys:
        out = run({**tables, name: table.filter(pc.equal(column, key))})
        result = out.table
        if PARTITION_COLUMN not in result.column_names:
            result = result.add_column(0, PARTITION_COLUMN, pa.array([key] * result.num_rows, column.type))
        parts.append(result)
        for usage, part in ((total.usage, out.usage), (total.usage.group(str(key)), out.usage),
                            (total.embedding_usage, out.embedding_usage)):
            add_usage(usage, part)
        for batch in out.failed.batches():  # each dead letter written to its own partition
            inputs = batch.select([n for n in batch.schema.names if n not in LETTER_COLUMNS])
            inputs = inputs.append_column(PARTITION_COLUMN, pa.array([key] * batch.num_rows, column.type))
            total.failed.add(inputs, *(batch.column(n).to_pylist() for n in LETTER_COLUMNS))
        total.candidates += out.candidates
        total.brute_force += out.brute_force
        total.k = out.k
    total.table = pa.concat_tables(parts, promote_options="permissive")
    return total


def _specs(key: dg.AssetKey, letters: dg.AssetKey | None, deps: list[dg.AssetDep], version: str,
           metadata: dict[str, Any], description: str, kwargs: dict[str, Any]) -> list[dg.AssetSpec]:
    """The pairs' asset (its outputs optional: an estimate stores none) and, with ``letters``, its dead letters."""
    shared = {k: kwargs[k] for k in ("group_name", "tags", "owners", "automation_condition", "freshness_policy")
              if k in kwargs}
    io_manager = kwargs.get("io_manager_key", "io_manager")
    specs = [dg.AssetSpec(key, code_version=version, metadata={**metadata, **(kwargs.get("metadata") or {})},
                          kinds={"ai", *(kwargs.get("kinds") or ())}, deps=deps, skippable=True,
                          description=kwargs.get("description", description), **shared
                          ).with_io_manager_key(io_manager)]
    if letters is not None:
        specs.append(dg.AssetSpec(letters, code_version=version, deps=[key], skippable=True, description=(
            f"Pairs of {key.to_user_string()} whose verdict used up its attempts; materialize it again to re-drive "
            "them."), **{k: v for k, v in shared.items() if k not in ("automation_condition", "freshness_policy")}
            ).with_io_manager_key(io_manager))
    return specs


def _pair_asset(name: str, ins: dict[str, dg.AssetDep], compute: Compute, args: EnrichArgs, version: str,
                description: str, embedder_key: str) -> dg.AssetsDefinition:
    provider_key, model = args["provider_key"], args.get("model")
    cache_key = args.get("cache_key", "ai_cache")
    kwargs = asset_kwargs(args)
    prefix = list(kwargs.pop("key_prefix", None) or [])
    key = dg.AssetKey([*prefix, name])
    letters = dg.AssetKey([*prefix, f"{name}_dead_letter"]) if args.get("dead_letter") else None
    partitions_def = kwargs.get("partitions_def")
    checks = [error_rate_check("match", args["max_error_rate"])]
    check_specs = [asset_checks.check_spec(c.name, key, c.description, partitions_def=partitions_def) for c in checks]
    specs = _specs(key, letters, list(ins.values()), version, {PROVIDER_KEY: provider_key}, description, kwargs)
    resources = {provider_key, embedder_key} | ({cache_key} if cache_key else set())
    op_args = {k: kwargs[k] for k in ("op_tags", "retry_policy", "pool", "backfill_policy", "partitions_def")
               if k in kwargs}

    def body(context: dg.AssetExecutionContext, tables: dict[str, pa.Table]) -> Iterator[Any]:
        provider = with_model(provider_of(getattr(context.resources, provider_key)), model)
        embedder = provider_of(getattr(context.resources, embedder_key))
        cache = getattr(context.resources, cache_key).get_cache() if cache_key else None
        call = Call(provider, cache, progress_logger(context.log, name), context.run.run_id, None)
        out = each_partition(tables, "left" if "left" in ins else "upstream", lambda t: compute(t, call, embedder))
        prices = args.get("prices") or prices_for(provider)
        embedded = out.embedding_usage.summary()
        figures = {"candidate_pairs": out.candidates, "brute_force_pairs": out.brute_force, "k": out.k,
                   "embedding_sent_rows": embedded["sent_rows"], "embedding_cache_hits": embedded["cache_hits"]}
        if call.estimate:  # nothing verified: an observation of what it would cost, no output (downstream skips)
            context.log.info(f"{name}: estimate only: {out.candidates} candidate pairs, nothing verified or stored")
            for partition in list(context.partition_keys) if context.has_partition_key else [None]:
                yield dg.AssetObservation(asset_key=key, partition=partition, metadata={
                    **usage_metadata(out.usage, prices), **figures, "ai/mode": "estimate"})
            return
        summary = out.usage.summary()
        context.log.info(f"{name}: {out.candidates} candidate pairs of {out.brute_force} (k={out.k}), "
                         f"{summary['sent_rows']} sent, {summary['cache_hits']} from the journal, "
                         f"{summary['errors']} failed")
        yield dg.Output(out.table, output_name=key.to_python_identifier(), metadata={
            **usage_metadata(out.usage, prices), "dagster/row_count": out.table.num_rows,
            **figures})
        if letters is not None:
            failed = out.failed.table()
            if len(context.partition_keys if context.has_partition_key_range else []) > 1 and \
                    PARTITION_COLUMN not in failed.column_names:  # none failed: an empty slice of each partition
                failed = failed.append_column(PARTITION_COLUMN, pa.array([], pa.string()))
            yield dg.Output(failed, output_name=letters.to_python_identifier(),
                            metadata={"dagster/row_count": failed.num_rows})
        yield from asset_checks.measured(context, key, checks, out.usage, None)

    def selected(context: dg.AssetExecutionContext, tables: dict[str, pa.Table]) -> Iterator[Any]:
        """``body``'s events that the run selected (the outputs and checks are optional: an estimate has none)."""
        yield from only_selected(context, body(context, tables))

    decorate = dg.multi_asset(name=key.to_python_identifier(), specs=specs, check_specs=check_specs, can_subset=True,
                              ins={name: dg.AssetIn(dep.asset_key) for name, dep in ins.items()},
                              required_resource_keys=resources, **op_args)
    if "left" in ins:
        def join(context: dg.AssetExecutionContext, left: pa.Table, right: pa.Table) -> Iterator[Any]:
            yield from selected(context, {"left": left, "right": right})

        return decorate(join)

    def dedup(context: dg.AssetExecutionContext, upstream: pa.Table) -> Iterator[Any]:
        yield from selected(context, {"upstream": upstream})

    return decorate(dedup)
