"""Model cascades: every row goes to the cheapest model first; the rows it fails, or whose answer the cascade
does not trust, go to the next model, and so on.

A row escalates when its answer failed (invalid after re-asks, refused, empty, out of attempts), when its
``confidence_field`` is below ``min_confidence``, or when ``escalate_when(answer)`` says so. Rows skipped for a
null or empty input never escalate. A model's failure is final for that model (a later run does not send the
row to it again, it goes on to the next model, whose answer is in the journal). Each model's answers go to the
journal under that model's own keys, so a re-run pays nothing for either model (and makes the same escalation
decisions from the same answers). The output says which model answered each row (``<output_column>_model``);
usage and cost are summed over the models, each at its own prices (``Usage.models``). In estimate mode every row
is counted for every model (an upper bound: nothing is answered, so nothing is known to pass).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import pyarrow as pa

from ai_assets.runtime.columns import error_column
from ai_assets.runtime.dead_letter import FailedRows
from ai_assets.runtime.engine import RunOptions
from ai_assets.runtime.errors import ConfigError
from ai_assets.runtime.results import Enriched, EnrichedStream, Source
from ai_assets.runtime.usage import Prices, Usage


def model_column(output_column: str) -> str:
    return f"{output_column}_model"


@dataclass(frozen=True)
class Cascade:
    """``models``, cheapest first (at least two). ``prices``: per model, for the cost (default: the built-in
    table)."""

    models: Sequence[str]
    escalate_when: Callable[[Any], bool] | None = None
    confidence_field: str | None = None
    min_confidence: float = 0.5
    prices: Mapping[str, Prices] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "models", tuple(self.models))
        if len(self.models) < 2 or len(set(self.models)) != len(self.models) or not all(self.models):
            raise ConfigError(f"Cascade needs two or more distinct model names, cheapest first; got {self.models}")

    def escalates(self, value: Any) -> bool:
        """Whether a valid answer is handed to the next model."""
        if self.confidence_field is not None:
            confidence = value.get(self.confidence_field) if isinstance(value, dict) else None
            if not isinstance(confidence, int | float) or confidence < self.min_confidence:
                return True
        return bool(self.escalate_when(value)) if self.escalate_when is not None else False


Stage = Callable[[Source, str, RunOptions], "Enriched | EnrichedStream"]
"""One model's call: the rows, the model, the options (the function's own call with ``model=``)."""


def run_cascade(source: Source, cascade: Cascade, stage: Stage, *, output_column: str, options: RunOptions,
                skipped: Callable[[pa.RecordBatch], list[bool]], prices_of: Callable[[str], Prices | None],
                group_column: str | None = None) -> Enriched | EnrichedStream:
    """The cascade over ``source``: a table in, a table out; a stream in, a stream out (window by window: each
    window's escalated rows go to the next model before the window is given back)."""
    usage = Usage()
    failed = FailedRows()  # the last model's failures: the rows no model answered
    # A failed row goes on to the next model, and stays failed for this model in later runs (its journal entry is
    # final): a re-run takes the next model's answer from the journal instead of paying the first one again.
    trying = replace(options, on_error="null", retry_failed_rows=False)
    first = stage(source, cascade.models[0], trying)
    batches = first.table.to_batches() if isinstance(first, Enriched) else iter(first)

    def windows() -> Iterator[pa.RecordBatch]:
        for batch in batches:
            yield _escalate(batch, cascade, stage, output_column, options, trying, skipped, usage, prices_of,
                            group_column, failed)
        usage.absorb(first.usage, cascade.models[0], prices_of(cascade.models[0]))

    if isinstance(first, Enriched):
        out = list(windows())
        table = pa.Table.from_batches(out) if out else first.table.append_column(
            model_column(output_column), pa.array([], pa.string()))
        return Enriched(table, usage, failed)
    return EnrichedStream(windows(), usage, failed)


def _escalate(batch: pa.RecordBatch, cascade: Cascade, stage: Stage, output_column: str, options: RunOptions,
              trying: RunOptions, skipped: Callable[[pa.RecordBatch], list[bool]], usage: Usage,
              prices_of: Callable[[str], Prices | None], group_column: str | None,
              failed: FailedRows) -> pa.RecordBatch:
    """One window through the models after the first: its rows that escalate, model by model."""
    errors = error_column(output_column)
    table = pa.Table.from_batches([batch])
    models = [cascade.models[0]] * table.num_rows
    skips = skipped(batch)
    for level, model in enumerate(cascade.models[1:], start=1):
        values = table.column(output_column).to_pylist()
        failures = table.column(errors).to_pylist()
        rows = [i for i in range(table.num_rows) if models[i] == cascade.models[level - 1] and not skips[i]
                and (failures[i] is not None or cascade.escalates(values[i]))]
        if not rows:
            break
        last = level == len(cascade.models) - 1
        inputs = table.take(rows).drop_columns([output_column, errors])
        answered = stage(inputs, model, options if last else trying)
        assert isinstance(answered, Enriched)
        usage.absorb(answered.usage, model, prices_of(model))
        if last:
            failed.extend(answered.failed)
        table = _put(table, rows, answered.table.select(table.column_names))
        for i in rows:
            models[i] = model
    column = pa.array([None if skip else m for m, skip in zip(models, skips, strict=True)], pa.string())
    groups = [str(g) for g in table.column(group_column).to_pylist()] \
        if group_column and group_column in table.column_names else None
    for row, (failure, skip) in enumerate(zip(table.column(errors).to_pylist(), skips, strict=True)):
        for counts in (usage, usage.group(groups[row])) if groups else (usage,):
            counts.rows += 1
            counts.skipped += skip
            counts.errors += failure is not None and not skip
            counts.answered += failure is None
    return table.append_column(model_column(output_column), column).combine_chunks().to_batches()[0] \
        if table.num_rows else pa.RecordBatch.from_pylist([], schema=table.schema.append(
            pa.field(model_column(output_column), pa.string())))


def _put(table: pa.Table, rows: list[int], answers: pa.Table) -> pa.Table:
    """``table`` with ``rows`` replaced by ``answers`` (in the same order), row order kept."""
    replaced = set(rows)
    kept = [i for i in range(table.num_rows) if i not in replaced]
    merged = pa.concat_tables([table.take(kept), answers.cast(table.schema)])
    position = {row: at for at, row in enumerate(kept)}
    position.update({row: len(kept) + at for at, row in enumerate(rows)})
    return merged.take([position[i] for i in range(table.num_rows)])
