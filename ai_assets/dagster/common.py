"""What every asset factory accepts, and the translation of partitions into plain values."""

from __future__ import annotations

import functools
import hashlib
import json
import typing
from collections.abc import Mapping, Sequence
from typing import Any, TypedDict

import dagster as dg
from pydantic import ConfigDict, TypeAdapter, ValidationError

from ai_assets.runtime.engine import RunOptions
from ai_assets.runtime.errors import ConfigError
from ai_assets.runtime.usage import Prices


class AssetArgs(TypedDict, total=False):
    """Keyword arguments every factory accepts and passes on to ``@dg.asset`` (to every asset it makes: an
    enrichment's dead letters are requested with it)."""

    partitions_def: dg.PartitionsDefinition[Any] | None
    io_manager_key: str
    group_name: str | None
    key_prefix: str | Sequence[str] | None
    """As for ``@dg.asset``: a string is a one-part prefix."""
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


@functools.cache
def _adapter(spec: type, key: str) -> TypeAdapter[Any]:
    hint = typing.get_type_hints(spec)[key]
    return TypeAdapter(hint, config=ConfigDict(strict=True, arbitrary_types_allowed=True))


def check_types(args: Mapping[str, Any], spec: type, owner: str) -> None:
    """Each of ``args`` of the type ``spec`` (a TypedDict: ``AssetArgs``, ``EnrichArgs``) declares, checked now
    (strict: ``"0.1"`` is no float, ``None`` no ``str``); an error names every wrong one. Untyped callers otherwise
    meet a Dagster ``CheckError``, or nothing until the daemon runs the asset."""
    wrong = []
    for key, value in args.items():
        try:
            _adapter(spec, key).validate_python(value)
        except ValidationError:
            hint = typing.get_type_hints(spec)[key]
            spelled = hint.__name__ if isinstance(hint, type) else str(hint)
            wrong.append(f"{key} must be {spelled}, got {type(value).__name__} {value!r:.60}"
                         .replace("typing.", "").replace("collections.abc.", ""))
        except KeyError:  # not a key of ``spec``: refused by name elsewhere (with_defaults)
            continue
    if wrong:
        raise ConfigError(f"{owner}: " + "; ".join(wrong))


def check_enrich_args(args: Mapping[str, Any]) -> None:
    """``args`` of an enrichment factory of the types ``EnrichArgs`` says, ``max_error_rate`` a share."""
    check_types(args, EnrichArgs, "an enrichment factory")
    rate = args.get("max_error_rate", 0.0)
    if not 0 <= rate <= 1:  # NaN too: no error rate is > NaN, so the check would never fail
        raise ConfigError(f"max_error_rate must be a share from 0 to 1, got {rate!r}")


def asset_kwargs(args: AssetArgs) -> dict[str, Any]:
    """The ``@dg.asset`` keywords of ``args`` (an enrichment's own settings left out; a one-string
    ``key_prefix`` made a one-part list, as Dagster reads it)."""
    out = {k: v for k, v in args.items() if v is not None and k not in ENRICH_ONLY}
    if isinstance(out.get("key_prefix"), str):
        out["key_prefix"] = [out["key_prefix"]]
    return out


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
