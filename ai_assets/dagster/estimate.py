"""``python -m ai_assets.dagster.estimate -f definitions.py --select ASSET --partition KEY [...]``: what a run would
send and cost, without calling any model.

The selected assets and everything upstream of them are materialized in a throwaway instance, with every IO
manager replaced by Parquet in a temporary folder (the real tables and the real instance are not touched), and the
enrichment assets in estimate mode (``ai_assets.runtime.estimate``): they read their inputs, count the rows the
journal already answers, and estimate tokens and cost for the rest, live and through the Batch API. Upstream steps
(ingest, preprocess) really run, since the estimate is of their output. Prints a table, or JSON with ``--json``.

An enrichment in estimate mode (here, or ``RunOptions(mode="estimate")`` in a real run) stores nothing and
materializes nothing: it has no new value. It reports the estimate as an ``AssetObservation`` of the asset (one per
partition, ``ai/mode: estimate``) and yields no output, so Dagster skips the assets downstream of it (an enrichment
that reads another one's answers is not estimated; the command names it). A golden set's rows, which a real run
sends before the partition's (once: then the journal answers them), are a row of their own, ``(golden_set)``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import dagster as dg

from ai_assets.dagster.io_managers import ArrowIOManager, ParquetIOManager
from ai_assets.dagster.metadata import usage_metadata
from ai_assets.dagster.modes import set_estimating
from ai_assets.runtime.results import EnrichedStream
from ai_assets.runtime.usage import Prices, Usage

COLUMNS = (("rows", "ai/rows_in"), ("in journal", "ai/rows_from_cache"), ("to send", "ai/rows_sent"),
           ("tokens in", "ai/tokens_in"), ("tokens out", "ai/tokens_out"), ("live $", "ai/estimated_cost_usd"),
           ("batch $", "ai/estimated_cost_batch_usd"))


def load_definitions(path: str | Path) -> dg.Definitions:
    """The ``dg.Definitions`` object of a Python file (the one named ``defs``, else the only one)."""
    spec = importlib.util.spec_from_file_location("_ai_assets_estimated_definitions", path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(Path(path).resolve().parent))
    # Registered before it runs, as importlib's "importing a source file directly" recipe does: a Pydantic model
    # there with postponed annotations (PEP 563) resolves its names through sys.modules[cls.__module__].
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    found = [v for v in vars(module).values() if isinstance(v, dg.Definitions)]
    named = getattr(module, "defs", None)
    if isinstance(named, dg.Definitions):
        return named
    if len(found) != 1:
        raise SystemExit(f"{path}: expected one dg.Definitions (or one named defs), found {len(found)}")
    return found[0]


def observe_estimate(context: dg.AssetExecutionContext, name: str, key: dg.AssetKey, stream: EnrichedStream,
                     prices: Prices | None, partitions: Sequence[str]) -> Iterator[dg.AssetObservation]:
    """An enrichment asset in estimate mode: read ``stream`` to its end (rows are counted and priced, none is sent,
    and each batch is dropped once counted), then report the estimate as an observation of each partition. No
    output: the stored table and the asset's materializations stay as they were."""
    for _ in stream:
        pass
    usage = stream.usage
    summary = usage.summary()
    context.log.info(f"{name}: estimate only, nothing sent, stored or materialized: {summary['rows']} rows, "
                     f"{summary['cache_hits']} in the journal, {summary['sent_rows']} to send, "
                     f"{summary['prompt_tokens']} tokens in and {summary['completion_tokens']} out (estimated)")
    keys: list[str | None] = [*partitions] or [None]
    for partition in keys:
        part = usage if partition is None else usage.groups.get(partition, Usage(estimated=True))
        yield dg.AssetObservation(asset_key=key, partition=partition,
                                  metadata={**usage_metadata(part, prices), "ai/mode": "estimate"})


def estimate(defs: dg.Definitions, select: Sequence[str], partitions: Sequence[str | None]) -> list[dict[str, Any]]:
    """One row per enrichment asset and partition: rows, rows the journal answers, rows to send, tokens, cost."""
    assets = [a for a in defs.assets or [] if isinstance(a, dg.AssetsDefinition)]
    selection = dg.AssetSelection.assets(*[dg.AssetKey.from_user_string(s) for s in select]).upstream()
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="ai_assets-estimate-") as folder:
        resources = {key: (ParquetIOManager(root=folder) if isinstance(value, (ArrowIOManager, dg.IOManager,
                                                                                dg.IOManagerDefinition)) else value)
                     for key, value in (defs.resources or {}).items()}
        resources["io_manager"] = ParquetIOManager(root=folder)
        set_estimating(True)
        try:
            for partition in partitions:
                result = dg.materialize(assets, selection=selection, partition_key=partition, resources=resources,
                                        instance=dg.DagsterInstance.ephemeral(), raise_on_error=True)
                for event in result.get_asset_observation_events():
                    observation = event.asset_observation_data.asset_observation
                    metadata = {k: v.value for k, v in observation.metadata.items()}
                    if metadata.get("ai/mode") != "estimate":
                        continue
                    gate = metadata.get("ai/estimate_of")  # a golden set's rows: paid once, then in the journal
                    if gate and any(r["asset"] == observation.asset_key.to_user_string()
                                    and r["partition"] == f"({gate})" for r in rows):
                        continue
                    rows.append({"asset": observation.asset_key.to_user_string(),
                                 "partition": f"({gate})" if gate else observation.partition,
                                 **{label: metadata.get(key) for label, key in COLUMNS}})
                skipped = sorted(e.step_key or "" for e in result.all_events
                                 if e.event_type == dg.DagsterEventType.STEP_SKIPPED)
                if skipped:
                    print(f"not estimated (they read the answers of an enrichment that was only estimated): "
                          f"{', '.join(skipped)}", file=sys.stderr, flush=True)
        finally:
            set_estimating(False)
    return rows


def render(rows: Sequence[dict[str, Any]]) -> str:
    headers = ["asset", "partition", *(label for label, _ in COLUMNS)]
    totals: dict[str, Any] = {"asset": "total", "partition": ""}
    for label, _ in COLUMNS:
        values = [r[label] for r in rows if r.get(label) is not None]
        totals[label] = sum(values) if values else None
    table = [*rows, totals]

    def cell(value: Any) -> str:
        if value is None:
            return "-"
        if isinstance(value, float):
            return f"{value:,.4f}"
        return f"{value:,}" if isinstance(value, int) else str(value)

    widths = [max(len(h), *(len(cell(r.get(h))) for r in table)) for h in headers]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))]
    lines += ["  ".join(cell(r.get(h)).ljust(w) for h, w in zip(headers, widths, strict=True)) for r in table]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m ai_assets.dagster.estimate", description=__doc__.split("\n")[0])
    parser.add_argument("-f", "--file", required=True, help="the Python file with the dg.Definitions")
    parser.add_argument("--select", action="append", required=True, help="an asset key (repeat for several)")
    parser.add_argument("--partition", action="append", default=None, help="a partition key (repeat for several)")
    parser.add_argument("--json", action="store_true", help="print JSON rows instead of a table")
    args = parser.parse_args(argv)
    rows = estimate(load_definitions(args.file), args.select, args.partition or [None])
    print(json.dumps(rows) if args.json else render(rows), flush=True)
    os._exit(0)  # deltalake can abort at interpreter exit after reads (delta-rs #2184)


if __name__ == "__main__":
    main()
