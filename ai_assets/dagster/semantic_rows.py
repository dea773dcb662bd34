"""Asset factories for the semantic operators that read a whole partition: ``semantic_top_k_asset`` (k ranked rows
per partition) and ``semantic_aggregate_asset`` (one answer per partition). ``semantic_filter_asset`` is a task
factory (``ai_assets.dagster.tasks``), as it works row by row.

Each is an enrichment asset like ``prompt_asset`` (``_enrich_asset``): the journal (every comparison or group
is keyed by its content, so a re-materialization pays nothing and a new partition pays for its own rows), the
``EnrichArgs`` limits and options, an error-rate check, dead letters and usage and cost per partition. Unlike a
row-wise enrichment, the operator needs all of a partition's rows at once: each partition of the run is read into
memory, then ranked or folded on its own (a range of partitions in one run gives each its own result).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Unpack

import dagster as dg
import pyarrow as pa
import pyarrow.compute as pc

from ai_assets.dagster.call import Call, Upstream
from ai_assets.dagster.checks import error_rate_check
from ai_assets.dagster.common import EnrichArgs, fingerprint, upstream_key
from ai_assets.dagster.enrich import _enrich_asset, with_defaults
from ai_assets.functions.prompt import PromptParams
from ai_assets.functions.semantic._rows_ask import MAX_CHARS, add_usage
from ai_assets.functions.semantic.aggregate import MAX_INPUT_TOKENS, MAX_LEVELS, semantic_aggregate
from ai_assets.functions.semantic.top_k import MAX_CANDIDATES, semantic_top_k
from ai_assets.providers.protocols import with_model
from ai_assets.runtime.dead_letter import FailedRows
from ai_assets.runtime.prices import prices_for
from ai_assets.runtime.results import Enriched, EnrichedStream
from ai_assets.runtime.usage import Usage
from ai_assets.storage.base import PARTITION_COLUMN

PerPartition = Callable[[pa.Table, Call], Enriched]


def semantic_top_k_asset(name: str, upstream: Upstream, *, column: str, query: str, k: int,
                         embedder: str | None = None, candidates: int = 100, max_candidates: int = MAX_CANDIDATES,
                         max_chars: int = MAX_CHARS, seed: int = 0, output_column: str | None = None,
                         params: PromptParams | None = None, **args: Unpack[EnrichArgs]) -> dg.AssetsDefinition:
    """An asset of the ``k`` upstream rows (per partition) whose ``column`` best answers ``query``, best first,
    with their rank in ``output_column`` (default: the asset's name; 1 to k) and ``<output_column>_error`` (rows
    whose comparisons failed follow, with a null rank). LOTUS's quickselect over pairwise LLM comparisons (see
    ``ai_assets.functions.semantic.top_k``). ``embedder``: an embedding model of the same resource to cut the
    candidates to the ``candidates`` nearest the query first. Other keywords: ``EnrichArgs``.

        best = semantic_top_k_asset("best_reviews", reviews, column="text", k=5, partitions_def=daily,
                                    query="Which review is the most useful to a buyer?")
        dg.Definitions(assets=[reviews, best], resources={
            "llm": OpenAICompatibleResource(model="gpt-4o-mini", api_key=dg.EnvVar("OPENAI_API_KEY")),
            "ai_cache": ResultCacheResource(), "io_manager": DeltaIOManager(root="warehouse")})
    """
    args = with_defaults(args, "llm", 0.05)
    output = output_column or name
    prices = args.get("prices")

    def rank(rows: pa.Table, call: Call) -> Enriched:
        ranker = with_model(call.provider, embedder, "embedding") if embedder else None
        return semantic_top_k(rows, column, query, k, provider=call.provider, embedder=ranker,
                              candidates=candidates, max_candidates=max_candidates, max_chars=max_chars, seed=seed,
                              output_column=output, params=params, prices=prices,
                              **_rows_run(call, args))

    version = fingerprint(kind="semantic_top_k", column=column, query=query, k=k, embedder=embedder,
                          candidates=candidates, max_chars=max_chars, seed=seed, output=output,
                          model=args.get("model"), params=params.as_request() if params else None)
    description = (f"The {k} rows of `{upstream_key(upstream).to_user_string()}` whose `{column}` best answers: "
                   f"{query} (rank in `{output}`, by pairwise comparisons of resource `{args['provider_key']}`).")
    return _rows_asset(name, upstream, rank, args, version, output, description)


def semantic_aggregate_asset(name: str, upstream: Upstream, *, column: str, instruction: str,
                             max_input_tokens: int = MAX_INPUT_TOKENS, max_levels: int = MAX_LEVELS,
                             max_chars: int = MAX_CHARS, output_column: str | None = None,
                             params: PromptParams | None = None,
                             **args: Unpack[EnrichArgs]) -> dg.AssetsDefinition:
    """An asset of one row per upstream partition: the answer to ``instruction`` over the texts in ``column`` of
    all its rows (``output_column``, default the asset's name), folded hierarchically under ``max_input_tokens``
    per request (see ``ai_assets.functions.semantic.aggregate``), with ``_error``, ``_rows``, ``_levels``,
    ``_failed_rows`` and ``_cut_rows`` beside it. Other keywords: ``EnrichArgs``.

        themes = semantic_aggregate_asset("complaint_themes", reviews, column="text", partitions_def=daily,
                                          instruction="List the three most frequent complaints.")
        dg.Definitions(assets=[reviews, themes], resources={
            "llm": OpenAICompatibleResource(model="gpt-4o-mini", api_key=dg.EnvVar("OPENAI_API_KEY")),
            "ai_cache": ResultCacheResource(), "io_manager": DeltaIOManager(root="warehouse")})
    """
    args = with_defaults(args, "llm", 0.05)
    output = output_column or name
    prices = args.get("prices")

    def fold(rows: pa.Table, call: Call) -> Enriched:
        return semantic_aggregate(rows, column, instruction, provider=call.provider,
                                  max_input_tokens=max_input_tokens, max_levels=max_levels, max_chars=max_chars,
                                  output_column=output, params=params, prices=prices, **_rows_run(call, args))

    version = fingerprint(kind="semantic_aggregate", column=column, instruction=instruction,
                          max_input_tokens=max_input_tokens, max_levels=max_levels, max_chars=max_chars,
                          output=output, model=args.get("model"), params=params.as_request() if params else None)
    description = (f"One answer per partition of `{upstream_key(upstream).to_user_string()}` to: {instruction} "
                   f"(over `{column}`, folded under {max_input_tokens} tokens a request, into `{output}`).")
    return _rows_asset(name, upstream, fold, args, version, output, description)


def _rows_run(call: Call, args: EnrichArgs) -> dict[str, Any]:
    common = call.common(args.get("options"))
    return {k: v for k, v in common.items() if k not in ("progress", "group_column")}


def _rows_asset(name: str, upstream: Upstream, each: PerPartition, args: EnrichArgs, version: str, output: str,
                description: str) -> dg.AssetsDefinition:
    prices = args.get("prices")

    def run(data: pa.RecordBatchReader, call: Call) -> EnrichedStream:
        return per_partition(data.read_all(), each, call)

    return _enrich_asset(name, upstream, run, args, price_of=lambda provider: prices or prices_for(provider),
                         code_version=version, checks=[error_rate_check(output, args["max_error_rate"])],
                         vector_column=None, description=description)


def per_partition(table: pa.Table, each: PerPartition, call: Call) -> EnrichedStream:
    """``each`` over every partition of ``table`` on its own (its ``_partition`` value kept on its result), usage
    summed and kept per partition, the results one after another."""
    usage, failed = Usage(), FailedRows()
    keys: list[Any] = [None]
    present = PARTITION_COLUMN in table.schema.names
    kind = table.schema.field(PARTITION_COLUMN).type if present else pa.string()
    if (present and table.num_rows) or len(call.partitions) > 1:  # a partition of the run without rows is one too
        found = table.column(PARTITION_COLUMN).to_pylist() if present else []
        keys = sorted({*found, *(k for k in call.partitions if k not in {str(v) for v in found})}, key=str)
    outputs = []
    for key in keys:
        rows = table if key is None else table.filter(pc.equal(table.column(PARTITION_COLUMN), key)) if present \
            else table.slice(0, 0)
        out = each(rows, call)
        result = out.table
        if key is not None and PARTITION_COLUMN not in result.schema.names:
            result = result.add_column(0, PARTITION_COLUMN, pa.array([key] * result.num_rows, kind))
        add_usage(usage, out.usage)
        if key is not None:
            add_usage(usage.group(str(key)), out.usage)
        failed.extend(out.failed)
        outputs.append(result)

    def batches() -> Iterator[pa.RecordBatch]:
        for result in outputs:
            yield from result.combine_chunks().to_batches() or [pa.RecordBatch.from_pylist([], result.schema)]

    return EnrichedStream(batches(), usage, failed)
