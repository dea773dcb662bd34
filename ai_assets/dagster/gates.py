"""Quality gates: asset checks that judge what an enrichment produced, not only its shape.

* ``GoldenSet``: a small table of inputs with expected outputs kept beside the asset. Before a partition is sent,
  the asset's current prompt, model and schema answer the golden inputs (through the journal: an unchanged asset
  pays for them once); below ``min_score`` a blocking gate fails the step before one row of the partition is paid
  for, and the downstream assets do not run.
* ``JudgeCheck``: an LLM judge grades a reproducible sample of ``sample`` answers against a rubric.
* ``DriftCheck`` (embedding assets): the cosine distance of a partition's centroid from the reference partition's
  (each materialization records its centroid as ``ai/centroid``).

The measuring is plain Python (``ai_assets.runtime.quality``); this module turns it into check results.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

import dagster as dg
import pyarrow as pa
from pydantic import BaseModel

from ai_assets.dagster.call import Call, Run
from ai_assets.dagster.checks import per_partition
from ai_assets.dagster.metadata import usage_metadata
from ai_assets.functions.prompt import prompt
from ai_assets.providers.openai_messages import openai_parts
from ai_assets.providers.protocols import with_model
from ai_assets.runtime.columns import error_column
from ai_assets.runtime.engine import RunOptions
from ai_assets.runtime.errors import ConfigError
from ai_assets.runtime.quality import (
    GoldenRow,
    Reservoir,
    VectorStats,
    cosine_distance,
    golden_inputs,
    golden_row,
    matches,
    read_golden_lines,
)
from ai_assets.runtime.usage import Usage
from ai_assets.storage.base import PARTITION_COLUMN

CENTROID = "ai/centroid"
ESTIMATE_OF = "ai/estimate_of"
"""On an estimate's observation: the gate whose rows it prices (a golden set's), not a partition of the asset."""
JUDGE_TEMPLATE = ("Grade the answer against the rubric.\nRubric: {rubric}\nInput: {input}\nAnswer: {answer}\n"
                  "Reply with passed (true or false) and a one-sentence reason.")


class Judgement(BaseModel):
    passed: bool
    reason: str


class GateRun(Protocol):
    """One gate during one execution of the asset."""

    def before(self, run: Run, call: Call) -> dg.AssetCheckResult | Usage | None: ...

    def observe(self, batch: pa.RecordBatch) -> None: ...

    def metadata(self, context: dg.AssetExecutionContext, key: dg.AssetKey, partitions: list[str]) -> None: ...

    def after(self, context: dg.AssetExecutionContext, key: dg.AssetKey, call: Call) -> dg.AssetCheckResult | None:
        ...


class Gate(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def blocking(self) -> bool: ...

    @property
    def description(self) -> str: ...

    def start(self, output_column: str, describe: Callable[[pa.RecordBatch], list[str | None]] | None,
              seed: str) -> GateRun: ...


def start_gates(context: dg.AssetExecutionContext, name: str, key: dg.AssetKey, gates: Sequence[Gate],
                start: Callable[[Gate], GateRun], run: Run, call: Call
                ) -> Generator[dg.AssetCheckResult | dg.AssetCheckEvaluation | dg.AssetObservation, None,
                               list[GateRun]]:
    """Start the gates whose checks the run selected and return them, after yielding the verdicts of those that
    judge before anything is sent (a golden set); a failed blocking one stops the step. Dagster does not execute a
    check left out of a run's selection (``AssetSelection.without_checks()``, a check deselected in the UI), so its
    gate neither pays for golden rows or a judge nor blocks. In an estimate, what a gate would send is an
    observation of its own (``ai/estimate_of``: the gate's name)."""
    selected = set(context.selected_asset_check_keys)
    chosen = [gate for gate in gates if dg.AssetCheckKey(key, gate.name) in selected]
    watching = [start(gate) for gate in chosen]
    for gate, watch in zip(chosen, watching, strict=True):
        verdict = watch.before(run, call)
        if isinstance(verdict, Usage):
            yield dg.AssetObservation(asset_key=key, metadata={**usage_metadata(verdict, call.prices),
                                                               "ai/mode": "estimate", ESTIMATE_OF: gate.name})
            continue
        if verdict is None:
            continue
        yield from per_partition(context, key, verdict, gate.blocking)
        if gate.blocking and not verdict.passed:
            raise dg.Failure(f"{name}: quality gate {gate.name} failed, so no row of the partition was sent",
                             metadata=dict(verdict.metadata or {}))
    return watching


class _Quiet:
    """A gate run that does nothing at a step (each gate overrides the steps it takes part in)."""

    def before(self, run: Run, call: Call) -> dg.AssetCheckResult | Usage | None:
        return None

    def observe(self, batch: pa.RecordBatch) -> None:
        return None

    def metadata(self, context: dg.AssetExecutionContext, key: dg.AssetKey, partitions: list[str]) -> None:
        return None

    def after(self, context: dg.AssetExecutionContext, key: dg.AssetKey, call: Call) -> dg.AssetCheckResult | None:
        return None


@dataclass(frozen=True)
class GoldenSet:
    """Golden inputs and their expected outputs: ``rows`` or a ``path`` (.jsonl, .parquet or .csv) with the
    template's columns and ``expected_column``. A row's expectation constrains only what it names: for a struct
    answer, the fields it gives (nested; in a table, where a struct cannot tell a null field from an absent one, a
    null field constrains nothing); for text, equal without case, surrounding space or Unicode normal form; a boolean
    never equals a number. A CSV cell is read as the text it holds (``1`` is the label "1", ``01234`` keeps its 0).
    The score is the share of golden rows answered as expected; a row that failed is a miss. A row without an
    expectation (an empty cell included), a line that is not a JSON object or gives a name twice, a number beyond a
    double, and more than ``max_rows`` rows are errors naming the file and the line (or row)."""

    rows: pa.Table | None = None
    path: str | None = None
    expected_column: str = "expected"
    min_score: float = 0.9
    blocking: bool = True
    name: str = "golden_set"
    max_rows: int = 1000

    def __post_init__(self) -> None:
        if (self.rows is None) == (self.path is None):
            raise ConfigError("GoldenSet: give rows= or path=, one of them")
        if not 0 <= self.min_score <= 1:
            raise ConfigError(f"GoldenSet.min_score must be within [0, 1], got {self.min_score}")
        if self.max_rows < 1:
            raise ConfigError(f"GoldenSet.max_rows must be >= 1, got {self.max_rows}")

    @property
    def description(self) -> str:
        return (f"the asset's current prompt, model and schema answer at least {self.min_score:.0%} of the golden "
                "set as expected (checked before the partition is sent)")

    @property
    def source(self) -> str:
        return str(self.path) if self.path is not None else "rows"

    def golden(self) -> list[GoldenRow]:
        """The golden rows, each checked (see the class docstring); at least one."""
        path = Path(str(self.path)) if self.path is not None else None
        if path is not None and path.suffix.lower() in (".jsonl", ".json") and path.is_file():
            rows = read_golden_lines(path, self.expected_column, self.max_rows)
        else:
            table = self.rows if self.rows is not None else _read(Path(str(self.path)), self.max_rows)
            if self.expected_column not in table.column_names:
                raise ConfigError(f"golden set {self.source}: no column {self.expected_column!r} "
                                  f"(columns: {table.column_names})")
            if table.num_rows > self.max_rows:
                raise ConfigError(f"golden set {self.source}: more than {self.max_rows} rows (max_rows)")
            rows = [golden_row(row, self.expected_column, f"row {i}", self.source, null_is_absent=True)
                    for i, row in enumerate(table.to_pylist(), start=1)]
        if not rows:
            raise ConfigError(f"golden set {self.source}: no rows")
        return rows

    def start(self, output_column: str, describe: Callable[[pa.RecordBatch], list[str | None]] | None,
              seed: str) -> GateRun:
        return _GoldenRun(self, output_column)


class _GoldenRun(_Quiet):
    def __init__(self, gate: GoldenSet, output_column: str) -> None:
        self.gate = gate
        self.output_column = output_column

    def before(self, run: Run, call: Call) -> dg.AssetCheckResult | Usage | None:
        golden = self.gate.golden()
        inputs = golden_inputs(golden, self.gate.source)
        reader = pa.RecordBatchReader.from_batches(inputs.schema, inputs.to_batches())
        asked = replace(call, group_column=None, on_error="null")  # a golden row that fails is a miss
        try:  # the golden rows are a table of their own: a problem with them names the golden set, not the asset
            stream = run(reader, asked)
            if asked.estimate:  # nothing is sent or judged; what a real run would send for the golden rows is counted
                for _ in stream:
                    pass
                return stream.usage
            answered = stream.read_all()
        except ConfigError as error:
            raise ConfigError(f"golden set {self.gate.source}: {error}") from None
        answers = answered.column(self.output_column).to_pylist() if answered.num_rows else []
        errors = answered.column(error_column(self.output_column)).to_pylist() \
            if error_column(self.output_column) in answered.column_names else [None] * len(answers)
        hits = [matches(a, row.expected) for a, row in zip(answers, golden, strict=True)]
        score = sum(hits) / len(hits)
        misses = [{"where": row.where, "expected": row.expected, "answer": a, "error": e}
                  for a, e, row, hit in zip(answers, errors, golden, hits, strict=True) if not hit][:5]
        return dg.AssetCheckResult(check_name=self.gate.name, passed=score >= self.gate.min_score, metadata={
            "score": score, "min_score": self.gate.min_score, "golden_rows": len(hits),
            "misses": dg.MetadataValue.json(misses)})


@dataclass(frozen=True)
class JudgeCheck:
    """An LLM judge grades ``sample`` answers (a reproducible sample per partition) against ``rubric``; the score
    is the share it passes. ``model``: the judge (default: the asset's model)."""

    rubric: str
    sample: int = 20
    min_score: float = 0.8
    model: str | None = None
    blocking: bool = False
    name: str = "llm_judge"

    def __post_init__(self) -> None:
        if self.sample < 1 or not 0 <= self.min_score <= 1:
            raise ConfigError(f"JudgeCheck: sample >= 1 and min_score within [0, 1], got {self}")

    @property
    def description(self) -> str:
        return (f"an LLM judge passes at least {self.min_score:.0%} of a sample of {self.sample} answers against "
                f"the rubric: {self.rubric}")

    def start(self, output_column: str, describe: Callable[[pa.RecordBatch], list[str | None]] | None,
              seed: str) -> GateRun:
        return _JudgeRun(self, output_column, describe, seed)


class _JudgeRun(_Quiet):
    def __init__(self, gate: JudgeCheck, output_column: str,
                 describe: Callable[[pa.RecordBatch], list[str | None]] | None, seed: str) -> None:
        self.gate, self.output_column, self.describe = gate, output_column, describe
        self.sample = Reservoir(gate.sample, seed)

    def observe(self, batch: pa.RecordBatch) -> None:
        inputs = self.describe(batch) if self.describe else [None] * batch.num_rows
        for text, answer in zip(inputs, batch.column(self.output_column).to_pylist(), strict=True):
            if text is not None and answer is not None:
                self.sample.add((text, answer if isinstance(answer, str) else json.dumps(answer)))

    def after(self, context: dg.AssetExecutionContext, key: dg.AssetKey, call: Call) -> dg.AssetCheckResult:
        rows = self.sample.items
        table = pa.table({"rubric": [self.gate.rubric] * len(rows), "input": [r[0] for r in rows],
                          "answer": [r[1] for r in rows]})
        judged = prompt(table, JUDGE_TEMPLATE, provider=with_model(call.provider, self.gate.model),
                        return_format=Judgement, cache=call.cache, options=RunOptions(on_error="null")).table
        verdicts = [v for v in judged.column("response").to_pylist() if v is not None] if rows else []
        score = sum(v["passed"] for v in verdicts) / len(verdicts) if verdicts else 0.0
        return dg.AssetCheckResult(check_name=self.gate.name, passed=bool(verdicts) and score >= self.gate.min_score,
                                   metadata={"score": score, "min_score": self.gate.min_score,
                                             "sample_size": len(rows), "judged": len(verdicts),
                                             "answers_seen": self.sample.seen,
                                             "failed_reasons": dg.MetadataValue.json(
                                                 [v["reason"] for v in verdicts if not v["passed"]][:5])})


@dataclass(frozen=True)
class DriftCheck:
    """This partition's embedding centroid within ``max_distance`` (cosine) of ``reference_partition``'s.

    The centroid is the mean direction of the usable vectors: a vector with a NaN or an infinity, an all-zero one
    and a null one are left out (counted in ``non_finite_vectors`` / ``zero_vectors``; ``vectors_used`` says how
    many were used). A partition without a usable vector (no rows, every row failed) does not pass: the check
    fails and its ``reason`` says so."""

    reference_partition: str
    max_distance: float = 0.2
    blocking: bool = False
    name: str = "embedding_drift"

    @property
    def description(self) -> str:
        return (f"the partition's embedding centroid is within cosine distance {self.max_distance} of partition "
                f"{self.reference_partition!r}'s")

    def start(self, output_column: str, describe: Callable[[pa.RecordBatch], list[str | None]] | None,
              seed: str) -> GateRun:
        return _DriftRun(self, output_column)


class _DriftRun(_Quiet):
    def __init__(self, gate: DriftCheck, output_column: str) -> None:
        self.gate, self.output_column = gate, output_column
        self.stats: dict[str, VectorStats] = {}

    def observe(self, batch: pa.RecordBatch) -> None:
        if self.output_column not in batch.schema.names:
            return
        if PARTITION_COLUMN not in batch.schema.names:
            self.stats.setdefault("", VectorStats()).update(batch.column(self.output_column))
            return
        keys = batch.column(PARTITION_COLUMN).to_pylist()
        for partition in dict.fromkeys(keys):
            rows = pa.array([k == partition for k in keys])
            self.stats.setdefault(str(partition), VectorStats()).update(
                batch.filter(rows).column(self.output_column))

    def metadata(self, context: dg.AssetExecutionContext, key: dg.AssetKey, partitions: list[str]) -> None:
        for partition, stats in self.stats.items():
            centroid = stats.centroid()
            if centroid is not None:
                context.add_asset_metadata({CENTROID: dg.MetadataValue.json([round(v, 6) for v in centroid])},
                                           asset_key=key, partition_key=partition or None)

    def after(self, context: dg.AssetExecutionContext, key: dg.AssetKey, call: Call) -> dg.AssetCheckResult:
        reference = self.stats[self.gate.reference_partition].centroid() \
            if self.gate.reference_partition in self.stats else _recorded_centroid(context, key,
                                                                                    self.gate.reference_partition)
        if reference is None:
            return dg.AssetCheckResult(check_name=self.gate.name, passed=False, severity=dg.AssetCheckSeverity.WARN,
                                       metadata={"reason": f"partition {self.gate.reference_partition!r} has no "
                                                           "recorded centroid: materialize it first"})
        stats = dict(self.stats)
        if "" not in stats:  # every partition of the run is judged: one without a row has no vector, and says so
            partitioned = context.has_partition_key or context.has_partition_key_range
            for partition in context.partition_keys if partitioned else [""]:
                stats.setdefault(partition, VectorStats())
        distances = {p or "(unpartitioned)": round(cosine_distance(c, reference), 6)
                     for p, s in stats.items() if (c := s.centroid()) is not None}
        blind = [p or "(unpartitioned)" for p, s in stats.items() if s.centroid() is None and not s.usable_vectors]
        cancelled = [p or "(unpartitioned)" for p, s in stats.items() if s.centroid() is None and s.usable_vectors]
        counts: dict[str, Any] = {
            "vectors_used": sum(s.usable_vectors for s in stats.values()),
            "non_finite_vectors": sum(s.non_finite_vectors for s in stats.values()),
            "zero_vectors": sum(s.zero_vectors for s in stats.values()), "max_distance": self.gate.max_distance,
            "reference_partition": self.gate.reference_partition, "distances": dg.MetadataValue.json(distances)}
        if blind or cancelled:  # nothing to compare: not a pass (the check's own severity says how loud)
            reasons = ([f"no usable vector in {', '.join(blind)} (no rows, every row failed, or only NaN, "
                        "infinite, all-zero or mixed-size vectors)"] if blind else []) + (
                [f"the vectors of {', '.join(cancelled)} cancel out or differ in size (no mean direction)"]
                if cancelled else [])
            return dg.AssetCheckResult(check_name=self.gate.name, passed=False, metadata={
                **counts, "reason": "; ".join(reasons) + ": no centroid to compare"})
        worst = max(distances.values())
        return dg.AssetCheckResult(check_name=self.gate.name, passed=worst <= self.gate.max_distance,
                                   metadata={**counts, "max_distance_seen": worst})


def _recorded_centroid(context: dg.AssetExecutionContext, key: dg.AssetKey, partition: str) -> list[float] | None:
    records = context.instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=key, asset_partitions=[partition]), limit=1).records
    if not records or records[0].asset_materialization is None:
        return None
    value = records[0].asset_materialization.metadata.get(CENTROID)
    if value is None or not isinstance(value.value, list):
        return None
    centroid = [float(v) for v in value.value if isinstance(v, int | float)]
    return centroid if len(centroid) == len(value.value) and all(math.isfinite(v) for v in centroid) else None


def _read(path: Path, max_rows: int) -> pa.Table:
    """A .parquet or .csv golden file (JSON Lines are read line by line, ``read_golden_lines``), at most
    ``max_rows`` rows read; a file that cannot be read is an error naming it."""
    if not path.is_file():
        raise ConfigError(f"golden set {path}: no such file")
    suffix = path.suffix.lower()
    if suffix not in (".parquet", ".csv"):
        raise ConfigError(f"golden set {path}: a .jsonl, .parquet or .csv file, got {path.suffix!r}")
    try:
        if suffix == ".parquet":
            import pyarrow.parquet

            parquet = pyarrow.parquet.ParquetFile(path)
            if parquet.metadata.num_rows > max_rows:
                raise ConfigError(f"golden set {path}: more than {max_rows} rows (max_rows)")
            return parquet.read()
        import pyarrow.csv

        # Every cell as the text it is (RFC 4180: a CSV field is text): type inference would read an expected label
        # "1" as the number 1, which no text answer matches, and a zip code "01234" as 1234.
        with pyarrow.csv.open_csv(path) as header:
            names = header.schema.names
        text = pyarrow.csv.ConvertOptions(column_types=dict.fromkeys(names, pa.string()))
        batches = []
        with pyarrow.csv.open_csv(path, convert_options=text) as reader:
            for batch in reader:
                batches.append(batch)
                if sum(b.num_rows for b in batches) > max_rows:
                    raise ConfigError(f"golden set {path}: more than {max_rows} rows (max_rows)")
            return pa.Table.from_batches(batches, schema=reader.schema)
    except (pa.ArrowException, OSError) as error:
        raise ConfigError(f"golden set {path}: cannot read it as {suffix[1:]}: {str(error)[:200]}") from None


def as_texts(contents: Sequence[Any]) -> list[str | None]:
    """Rendered prompts as text (a multimodal message as its JSON parts, cut at 4,000 characters), for a judge."""
    return [c if c is None or isinstance(c, str) else json.dumps(openai_parts(c))[:4000] for c in contents]
