"""What an enrichment asset hands its plain-Python function: the provider, journal, progress and run context."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import dagster as dg
import pyarrow as pa

from ai_assets.dagster.modes import estimating
from ai_assets.runtime.cache import Cache
from ai_assets.runtime.engine import RunOptions
from ai_assets.runtime.options import OnError
from ai_assets.runtime.results import EnrichedStream
from ai_assets.runtime.task import Progress
from ai_assets.runtime.usage import Prices

Upstream = dg.AssetsDefinition | dg.AssetKey | str


@dataclass
class Call:
    """What the asset hands the plain-Python function besides the data."""

    provider: Any
    cache: Cache | None
    progress: Progress
    run_id: str
    group_column: str | None
    on_error: OnError | None = None
    """Overrides the options' ``on_error`` for this call (a golden set's: a row that fails is a miss)."""
    prices: Prices | None = None
    """The asset's prices, for an estimate of what a gate would send (a golden set's rows)."""
    partitions: tuple[str, ...] = ()
    """The run's partition keys (several in a single-run backfill), also those without a row."""
    mode: Literal["live", "batch", "estimate"] | None = field(default=None, init=False)
    """The mode ``common`` gave the function (None until it has): an ``"estimate"`` has no value to store."""

    def common(self, options: RunOptions | None, default: RunOptions | None = None) -> dict[str, Any]:
        """The keyword arguments every function takes from the asset: options (in estimate mode while
        ``python -m ai_assets.dagster.estimate`` runs the asset), journal, progress, run id and group column."""
        chosen = options or default or RunOptions()
        chosen = replace(chosen, mode="estimate") if estimating() else chosen
        chosen = replace(chosen, on_error=self.on_error) if self.on_error is not None else chosen
        self.mode = chosen.mode
        return {"options": chosen, "cache": self.cache, "progress": self.progress, "run_id": self.run_id,
                "group_column": self.group_column}

    @property
    def estimate(self) -> bool:
        return self.mode == "estimate"


Run = Callable[[pa.RecordBatchReader, Call], EnrichedStream]
PriceOf = Callable[[Any], Prices | None]
