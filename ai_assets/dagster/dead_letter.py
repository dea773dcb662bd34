"""The Dagster side of dead letters: an enrichment with ``dead_letter=True`` is a multi-asset that writes, after its
output, the rows that used up their attempts to ``<name>_dead_letter`` (see ``ai_assets.runtime.dead_letter``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import dagster as dg

from ai_assets.dagster.call import Upstream
from ai_assets.dagster.common import upstream_key


def output_name(key: dg.AssetKey, letters: dg.AssetKey | None) -> str:
    """The op output of the enrichment: ``result`` for a plain asset, the key's identifier in a multi-asset."""
    return "result" if letters is None else key.to_python_identifier()


def enrichment_decorator(key: dg.AssetKey, letters: dg.AssetKey | None, upstream: Upstream, code_version: str,
               resource_keys: set[str], checks: list[dg.AssetCheckSpec], metadata: dict[str, Any],
               kwargs: dict[str, Any]) -> Callable[[Callable[..., Any]], dg.AssetsDefinition]:
    """``@dg.asset`` for the enrichment alone; with ``letters``, a multi-asset that also writes its dead letters
    (partitioned like it, through the same IO manager)."""
    ins = {"upstream": dg.AssetIn(upstream_key(upstream))}
    if letters is None:
        return dg.asset(key=key, ins=ins, code_version=code_version, required_resource_keys=resource_keys,
                        check_specs=checks, metadata=metadata, kinds={"ai"}, **kwargs)
    shared = {k: kwargs[k] for k in ("group_name", "tags") if k in kwargs}
    io_manager = kwargs.get("io_manager_key", "io_manager")
    specs = [dg.AssetSpec(key, code_version=code_version, metadata=metadata, kinds={"ai"},
                          description=kwargs.get("description"), deps=[upstream_key(upstream)],
                          **shared).with_io_manager_key(io_manager),
             dg.AssetSpec(letters, code_version=code_version, kinds={"ai"}, deps=[key],
                          description=f"Rows of {key.to_user_string()} that used up their attempts: input, error, "
                                      "attempts, model. Materialize the enrichment again to re-drive them.",
                          **shared).with_io_manager_key(io_manager)]
    op_args = {k: kwargs[k] for k in ("op_tags", "retry_policy", "pool", "backfill_policy", "partitions_def")
               if k in kwargs}
    return dg.multi_asset(name=key.to_python_identifier(), specs=specs, ins=ins,
                          required_resource_keys=resource_keys, check_specs=checks, **op_args)
