"""Model cascades: every row goes to the cheapest model first; the rows it fails, or whose answer the cascade
does not trust, go to the next model, and so on.

A row escalates when its answer failed (invalid after re-asks, refused, empty, out of attempts), when its
``confidence_field`` is below ``min_confidence`` or is no probability at all (missing, not a number, NaN, infinite,
outside [0, 1]), or when ``escalate_when(answer)`` says so or raises (a warning names the rows and the error).
Rows skipped for a null or empty input never escalate. A model's failure is final for that model (a later run does
not send the row to it again, it goes on to the next model, whose answer is in the journal). Each model's answers
go to the journal under that model's own keys, so a re-run pays nothing for either model (and makes the same
escalation decisions from the same answers). The output says which model answered each row
(``<output_column>_model``); usage and cost are summed over the models, each at its own prices (``Usage.models``).
In estimate mode every row is counted for every model (an upper bound: nothing is answered, so nothing is known to
pass).

With a ``target`` (``Recall``, ``Precision`` or ``Accuracy``) the cascade is certified instead: the threshold on
``confidence_field`` is not set by hand but learned from a sample of the oracle's answers so that the target holds
with probability ``1 - delta`` (see ``ai_assets.functions.certify`` and, for the statistics and the published
method they follow, ``ai_assets.runtime.guarantees``).
"""

from __future__ import annotations

import types
import typing
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import pyarrow as pa
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from ai_assets.functions.embedding_proxy import EmbeddingProxy
from ai_assets.runtime.columns import error_column
from ai_assets.runtime.dead_letter import FailedRows
from ai_assets.runtime.engine import RunOptions
from ai_assets.runtime.errors import AIAssetsWarning, ConfigError, bounded
from ai_assets.runtime.guarantees import Accuracy, Precision, Recall, Target
from ai_assets.runtime.results import Enriched, EnrichedStream, Source
from ai_assets.runtime.usage import Prices, Usage

SHOWN_ROWS = 5
"""How many row numbers a warning about a raising ``escalate_when`` names (then a count of the others)."""


def model_column(output_column: str) -> str:
    return f"{output_column}_model"


def probability(value: Any) -> float | None:
    """``value`` as a confidence, or None when it is none: not a number (a bool, a string, null), NaN, infinite
    or outside [0, 1]."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if 0.0 <= value <= 1.0 else None  # NaN fails both comparisons


@dataclass(frozen=True)
class Cascade:
    """``models``, cheapest first (at least two). ``confidence_field``: a number field of the ``return_format``,
    a probability in [0, 1]; an answer under ``min_confidence`` (or with no valid confidence) goes on.
    ``escalate_when(answer)``: True hands a valid answer on (so does raising). ``prices``: per model, for the
    cost (default: the built-in table).

    Certified (``target=Recall(0.95)``, ``Precision(0.9)`` or ``Accuracy(0.9)``): two models, the proxy and the
    oracle. The proxy answers every row; ``label_budget`` rows drawn uniformly (seeded by ``seed``) go to the
    oracle; the threshold on ``confidence_field`` (the proxy's confidence in its ``label_field``, a bool for recall
    and precision) is learned from them so that the target holds with probability >= 1 - ``delta``; the rows it
    does not trust go to the oracle. ``min_confidence`` and ``escalate_when`` do not apply. ``proxy``: an
    ``EmbeddingProxy`` instead of a chat model as the proxy; ``models`` then names the oracle alone."""

    models: Sequence[str]
    escalate_when: Callable[[Any], bool] | None = None
    confidence_field: str | None = None
    min_confidence: float = 0.5
    prices: Mapping[str, Prices] = field(default_factory=dict)
    target: Target | None = None
    delta: float = 0.05
    label_budget: int = 200
    label_field: str | None = None
    seed: int = 0
    proxy: EmbeddingProxy | None = None

    def __post_init__(self) -> None:
        if isinstance(self.models, str | bytes):  # a str is a Sequence too: "gpt4" would be models g, p, t, 4
            raise ConfigError(f"Cascade(models={self.models!r}): give a list of two or more model names, cheapest "
                              "first, not one string")
        object.__setattr__(self, "models", tuple(self.models))
        if self.proxy is not None:
            self._check_proxy()
        elif len(self.models) < 2 or len(set(self.models)) != len(self.models) or not all(self.models):
            raise ConfigError(f"Cascade needs two or more distinct model names, cheapest first; got {self.models}")
        if probability(self.min_confidence) is None:
            raise ConfigError(f"Cascade(min_confidence={self.min_confidence!r}): a confidence is a probability, "
                              "give a number in [0, 1]")
        if self.confidence_field is not None and (not isinstance(self.confidence_field, str)
                                                  or not self.confidence_field):
            raise ConfigError(f"Cascade(confidence_field={self.confidence_field!r}): give a field name of the "
                              "return_format")
        if self.escalate_when is not None and not callable(self.escalate_when):
            raise ConfigError(f"Cascade(escalate_when={self.escalate_when!r}) is not callable: give a function of "
                              "the answer that returns True to hand it to the next model")
        if self.target is not None:
            self._check_certified()

    def _check_certified(self) -> None:
        setting = f"Cascade(target={self.target!r})"
        if not isinstance(self.target, Recall | Precision | Accuracy):
            raise ConfigError(f"{setting}: give Recall(x), Precision(x) or Accuracy(x)")
        if len(self.models) != 2 and self.proxy is None:
            raise ConfigError(f"{setting} has one proxy and one oracle: give two models, got {len(self.models)}")
        if isinstance(self.delta, bool) or not isinstance(self.delta, int | float) or not 0.0 < self.delta < 1.0:
            raise ConfigError(f"Cascade(delta={self.delta!r}): the failure probability is a number in (0, 1)")
        if isinstance(self.label_budget, bool) or not isinstance(self.label_budget, int) or self.label_budget < 1:
            raise ConfigError(f"Cascade(label_budget={self.label_budget!r}): give how many rows the oracle labels "
                              "to learn the threshold (an int >= 1)")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ConfigError(f"Cascade(seed={self.seed!r}): give an int")
        if not self.label_field or not self.confidence_field:
            raise ConfigError(f"{setting} needs label_field= (the answer's label) and confidence_field= (the "
                              "proxy's confidence in it, a probability) of the return_format")
        if self.escalate_when is not None:
            raise ConfigError(f"{setting} learns when to escalate: give escalate_when= or target=, not both")

    def _check_proxy(self) -> None:
        if not isinstance(self.proxy, EmbeddingProxy):
            raise ConfigError(f"Cascade(proxy={self.proxy!r}): give an EmbeddingProxy (a chat model as the proxy is "
                              "the first of models=)")
        if self.target is None:
            raise ConfigError("Cascade(proxy=EmbeddingProxy(...)) is a certified cascade's proxy: give target= "
                              "(Recall, Precision or Accuracy) too")
        if len(self.models) != 1 or not self.models[0]:
            raise ConfigError(f"Cascade(proxy=EmbeddingProxy(...)): models= names the oracle alone (the proxy is "
                              f"the embedding model); got {self.models}")

    @property
    def proxy_name(self) -> str:
        """The proxy's name: the embedding proxy's model, else the first model."""
        return self.proxy.name if self.proxy is not None else self.models[0]

    def check(self, return_format: type[BaseModel] | None) -> None:
        """Raise ``ConfigError`` when answers of ``return_format`` cannot carry ``confidence_field`` (so every row
        would be paid for twice): called before anything is sent."""
        if self.target is not None and self.label_field is not None:
            self._check_label(return_format, self.label_field)
        if self.proxy is not None:
            self.proxy.check(return_format, self.label_field)
        name = self.confidence_field
        if name is None:
            return
        setting = f"Cascade(confidence_field={name!r})"
        if return_format is None:
            raise ConfigError(f"{setting} needs a return_format with that field: free-text answers carry no "
                              "confidence")
        info = return_format.model_fields.get(name)
        if info is None:
            raise ConfigError(f"{setting}: return_format {return_format.__name__} has no field {name!r} (its "
                              f"fields: {', '.join(return_format.model_fields) or 'none'}); every row would go to "
                              "every model")
        if not _numeric(info.annotation):
            raise ConfigError(f"{setting}: {return_format.__name__}.{name} is {_name(info.annotation)}, not a "
                              "number; a confidence is a probability in [0, 1]")
        low, high = _declared_range(info)
        if low < 0.0 or high > 1.0:
            raise ConfigError(f"{setting}: {return_format.__name__}.{name} is declared on [{low}, {high}]; a "
                              "cascade's confidence is a probability in [0, 1] (rescale it, or use escalate_when)")

    def _check_label(self, return_format: type[BaseModel] | None, name: str) -> None:
        setting = f"Cascade(label_field={name!r})"
        info = return_format.model_fields.get(name) if return_format is not None else None
        if return_format is None or info is None:
            raise ConfigError(f"{setting}: the return_format has no such field; a certified cascade compares the "
                              "proxy's and the oracle's label there")
        if isinstance(self.target, Recall | Precision) and not _boolean(info.annotation):
            raise ConfigError(f"{setting}: {return_format.__name__}.{name} is {_name(info.annotation)}; "
                              f"{self.target.kind} is a target for a bool label (use Accuracy for other labels)")

    def fingerprint(self) -> dict[str, Any]:
        """The settings that decide the answers (a code version's part): a certified cascade's target, delta,
        label, budget and seed too, so a change learns its threshold again."""
        out = {"models": list(self.models), "confidence": self.confidence_field, "min": self.min_confidence,
               "when": getattr(self.escalate_when, "__qualname__", None)}
        if self.target is not None:
            out.update(target=str(self.target), delta=self.delta, label=self.label_field, budget=self.label_budget,
                       seed=self.seed)
        if self.proxy is not None:
            out.update(proxy=self.proxy.describe())
        return out

    def escalates(self, value: Any) -> bool:
        """Whether a valid answer is handed to the next model (raises what ``escalate_when`` raises)."""
        if self.confidence_field is not None:
            confidence = probability(value.get(self.confidence_field) if isinstance(value, dict) else None)
            if confidence is None or confidence < self.min_confidence:
                return True
        return bool(self.escalate_when(value)) if self.escalate_when is not None else False


def _numeric(kind: Any) -> bool:
    """Whether a field annotation holds numbers only (``float``, ``int``, ``float | None``, ``Annotated[...]``)."""
    if kind in (int, float):
        return True
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin is typing.Annotated:
        return _numeric(args[0])
    if origin is typing.Literal:
        return all(isinstance(a, int | float) and not isinstance(a, bool) for a in args)
    if origin in (typing.Union, types.UnionType):
        present = [a for a in args if a is not type(None)]
        return bool(present) and all(_numeric(a) for a in present)
    return False


def _boolean(kind: Any) -> bool:
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin is typing.Annotated:
        return _boolean(args[0])
    if origin in (typing.Union, types.UnionType):
        return [a for a in args if a is not type(None)] == [bool]
    return kind is bool


def _declared_range(info: FieldInfo) -> tuple[float, float]:
    """The bounds a field declares (``Field(ge=..., le=...)``), as far as it declares them."""
    low, high = 0.0, 1.0
    for constraint in info.metadata:
        for name in ("ge", "gt"):
            bound = getattr(constraint, name, None)
            low = min(low, float(bound)) if isinstance(bound, int | float) else low
        for name in ("le", "lt"):
            bound = getattr(constraint, name, None)
            high = max(high, float(bound)) if isinstance(bound, int | float) else high
    return low, high


def _name(kind: Any) -> str:
    return kind.__name__ if isinstance(kind, type) else str(kind)


Stage = Callable[[Source, str, RunOptions], "Enriched | EnrichedStream"]
"""One model's call: the rows, the model, the options (the function's own call with ``model=``)."""


def run_cascade(source: Source, cascade: Cascade, stage: Stage, *, output_column: str, options: RunOptions,
                skipped: Callable[[pa.RecordBatch], list[bool]], prices_of: Callable[[str], Prices | None],
                group_column: str | None = None) -> Enriched | EnrichedStream:
    """The cascade over ``source``: a table in, a table out; a stream in, a stream out (window by window: each
    window's escalated rows go to the next model before the window is given back)."""
    # A failed row goes on to the next model, and stays failed for this model in later runs (its journal entry is
    # final): a re-run takes the next model's answer from the journal instead of paying the first one again.
    trying = replace(options, on_error="null", retry_failed_rows=False)
    ladder = _Ladder(cascade, stage, output_column, options, trying, skipped, prices_of, group_column)
    first = stage(source, cascade.models[0], trying)
    batches = first.table.to_batches() if isinstance(first, Enriched) else iter(first)

    def windows() -> Iterator[pa.RecordBatch]:
        for batch in batches:
            yield ladder.window(batch)
        ladder.usage.absorb(first.usage, cascade.models[0], prices_of(cascade.models[0]))

    if isinstance(first, Enriched):
        out = list(windows())
        table = pa.Table.from_batches(out) if out else first.table.append_column(
            model_column(output_column), pa.array([], pa.string()))
        return Enriched(table, ladder.usage, ladder.failed)
    return EnrichedStream(windows(), ladder.usage, ladder.failed)


@dataclass
class _Ladder:
    """Each window's rows that escalate, through the models after the first."""

    cascade: Cascade
    stage: Stage
    output_column: str
    options: RunOptions
    trying: RunOptions
    skipped: Callable[[pa.RecordBatch], list[bool]]
    prices_of: Callable[[str], Prices | None]
    group_column: str | None
    usage: Usage = field(default_factory=Usage)
    failed: FailedRows = field(default_factory=FailedRows)
    """The last model's failures: the rows no model answered."""
    offset: int = 0
    """The input row number of the window's first row."""

    def window(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        cascade, output_column = self.cascade, self.output_column
        errors = error_column(output_column)
        table = pa.Table.from_batches([batch])
        models = [cascade.models[0]] * table.num_rows
        skips = self.skipped(batch)
        for level, model in enumerate(cascade.models[1:], start=1):
            rows = self._escalating(table, [m == cascade.models[level - 1] and not s for m, s in zip(
                models, skips, strict=True)], cascade.models[level - 1], model)
            if not rows:
                break
            last = level == len(cascade.models) - 1
            inputs = table.take(pa.array(rows, pa.int64())).drop_columns([output_column, errors])
            answered = self.stage(inputs, model, self.options if last else self.trying)
            assert isinstance(answered, Enriched)
            self.usage.absorb(answered.usage, model, self.prices_of(model))
            if last:
                self.failed.extend(answered.failed)
            table = put_rows(table, rows, answered.table.select(table.column_names))
            for i in rows:
                models[i] = model
        count_rows(self.usage, table, skips, self.output_column, self.group_column)
        self.offset += table.num_rows
        column = pa.array([None if skip else m for m, skip in zip(models, skips, strict=True)], pa.string())
        return table.append_column(model_column(output_column), column).combine_chunks().to_batches()[0] \
            if table.num_rows else pa.RecordBatch.from_pylist([], schema=table.schema.append(
                pa.field(model_column(output_column), pa.string())))

    def _escalating(self, table: pa.Table, candidates: list[bool], model: str, to: str) -> list[int]:
        """The rows ``model`` answered that go on to ``to``: its failures, and answers the cascade does not trust.
        An ``escalate_when`` that raises hands the row on too, and a warning names the rows and the error."""
        values = table.column(self.output_column).to_pylist()
        failures = table.column(error_column(self.output_column)).to_pylist()
        rows: list[int] = []
        raised: list[int] = []
        error: Exception | None = None
        for i, candidate in enumerate(candidates):
            if not candidate:
                continue
            if failures[i] is not None:
                rows.append(i)
                continue
            try:
                escalates = self.cascade.escalates(values[i])
            except Exception as exc:  # the user's predicate: one row's problem, never the whole call
                escalates, error = True, error or exc
                raised.append(self.offset + i)
            if escalates:
                rows.append(i)
        if error is not None:
            shown = ", ".join(str(r) for r in raised[:SHOWN_ROWS])
            more = f" and {len(raised) - SHOWN_ROWS} more" if len(raised) > SHOWN_ROWS else ""
            warnings.warn(f"Cascade(escalate_when=...) raised on {len(raised)} answer(s) of {model!r}, so they went "
                          f"on to {to!r} (input rows {shown}{more}); first error: {type(error).__name__}: "
                          f"{bounded(str(error))}", AIAssetsWarning, stacklevel=2)
        return rows



def count_rows(usage: Usage, table: pa.Table, skips: list[bool], output_column: str,
               group_column: str | None) -> None:
    """A cascade's own row counts (rows, skips, errors, answers), from its output, also per group."""
    groups = [str(g) for g in table.column(group_column).to_pylist()] \
        if group_column and group_column in table.column_names else None
    failures = table.column(error_column(output_column)).to_pylist()
    for row, (failure, skip) in enumerate(zip(failures, skips, strict=True)):
        for counts in (usage, usage.group(groups[row])) if groups else (usage,):
            counts.rows += 1
            counts.skipped += skip
            counts.errors += failure is not None and not skip
            counts.answered += failure is None


def put_rows(table: pa.Table, rows: list[int], answers: pa.Table) -> pa.Table:
    """``table`` with ``rows`` replaced by ``answers`` (in the same order), row order kept. Indices are typed:
    an empty Python list becomes a null-typed array, which ``take`` has no kernel for (every row escalated)."""
    replaced = set(rows)
    kept = [i for i in range(table.num_rows) if i not in replaced]
    merged = pa.concat_tables([table.take(pa.array(kept, pa.int64())), answers.cast(table.schema)])
    position = {row: at for at, row in enumerate(kept)}
    position.update({row: len(kept) + at for at, row in enumerate(rows)})
    return merged.take(pa.array([position[i] for i in range(table.num_rows)], pa.int64()))
