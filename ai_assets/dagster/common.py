"""What every asset factory accepts, and the translation of partitions into plain values."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any, TypedDict

import dagster as dg

from ai_assets.runtime.engine import RunOptions
from ai_assets.runtime.usage import Prices


class AssetArgs(TypedDict, total=False):
    """Keyword arguments every factory accepts and passes on to ``@dg.asset`` (to every asset it makes: an
    enrichment's dead letters are requested with it)."""

    partitions_def: dg.PartitionsDefinition[Any] | None
    io_manager_key: str
    group_name: str | None
    key_prefix: Sequence[str] | None
    tags: Mapping[str, str] | None
    op_tags: Mapping[str, Any] | None
    """Tags of the step: e.g. ``gpu_tags()`` to run it on a GPU node (Kubernetes) or GPU queue (Celery)."""
    retry_policy: dg.RetryPolicy | None
    pool: str | None
    backfill_policy: dg.BackfillPolicy | None
    description: str | None
    metadata: Mapping[str, Any] | None
    automation_condition: dg.AutomationCondition[Any] | None
    """Declarative Automation: e.g. ``dg.AutomationCondition.eager()`` downstream of an ingest, ``on_cron(...)``
    for daily partitions, ``code_version_changed()`` (the journal makes the run pay only for changed requests)."""
    freshness_policy: dg.FreshnessPolicy | None
    owners: Sequence[str] | None
    kinds: set[str] | None
    """Kinds shown in the UI, besides the ones the factory gives (``ai`` for enrichments)."""


class EnrichArgs(AssetArgs, total=False):
    """What every enrichment factory (``prompt_asset``, ``embed_asset``, ``classify_asset``, the task factories,
    ...) takes besides its own settings, written once here. Defaults differ by factory where said."""

    options: RunOptions | None
    """Concurrency, limits, retries, spending caps and the mode, as for the plain functions (``RunOptions``)."""
    provider_key: str
    """The resource that answers: ``llm`` for prompting factories, ``embedder`` for embedding ones."""
    cache_key: str | None
    """The journal's resource (default ``ai_cache``); None: no journal, every run pays again."""
    model: str | None
    """The model instead of the resource's own; it enters the journal keys and the code version."""
    prices: Prices | None
    """Prices for the cost metadata and ``max_cost``, instead of the built-in table."""
    max_error_rate: float
    """The error-rate check's bound (0.05 for LLM factories, 0 for embeddings)."""
    dead_letter: bool
    """Also write the rows that used up their attempts to ``<name>_dead_letter`` (default False)."""


ENRICH_ONLY = frozenset(EnrichArgs.__annotations__) - frozenset(AssetArgs.__annotations__)


def asset_kwargs(args: AssetArgs) -> dict[str, Any]:
    """The ``@dg.asset`` keywords of ``args`` (an enrichment's own settings left out)."""
    return {k: v for k, v in args.items() if v is not None and k not in ENRICH_ONLY}


def upstream_key(upstream: dg.AssetsDefinition | dg.AssetKey | str) -> dg.AssetKey:
    if isinstance(upstream, dg.AssetsDefinition):
        return upstream.key
    if isinstance(upstream, dg.AssetKey):
        return upstream
    return dg.AssetKey.from_user_string(upstream)


def partition_fields(context: dg.AssetExecutionContext) -> list[tuple[str, dict[str, str]]]:
    """Each partition of the run with the fields a path template may name: ``partition`` and, for
    multi-partitions, one per dimension."""
    if not context.has_partition_key_range and not context.has_partition_key:
        return []
    partitions_def = context.assets_def.partitions_def
    out = []
    for key in context.partition_keys:
        fields = {"partition": str(key)}
        if isinstance(partitions_def, dg.MultiPartitionsDefinition):
            multi = partitions_def.get_partition_key_from_str(str(key))
            fields.update(multi.keys_by_dimension)
        out.append((str(key), fields))
    return out


def fingerprint(**parts: Any) -> str:
    """A short stable hash: the code_version of an asset whose output these parts decide."""
    blob = json.dumps(parts, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]
