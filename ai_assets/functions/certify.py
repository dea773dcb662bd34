"""A certified cascade: the proxy (the cascade's first model, or its ``EmbeddingProxy``) answers every row; a uniform
sample of the rows goes to the oracle (its last model); the threshold on the proxy's confidence that meets the target
with probability 1 - delta is learned from that sample (the statistics and their source, BARGAIN, are in
``ai_assets.runtime.guarantees``); every row the threshold does not trust goes to the oracle.

Every answer, the sample's included, goes through the journal, so a re-run pays nothing. The learned threshold is
journalled too, beside the answers, under a key made of both models' request families (template, system message,
schema, params, provider and model) and the cascade's settings: later runs and new partitions reuse it, and a
change to the prompt, a model or the schema learns it again. The result says what was guaranteed
(``Usage.certificate``).
"""

from __future__ import annotations

import hashlib
import math
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pyarrow as pa

from ai_assets.functions.cascade import Cascade, count_rows, model_column, probability, put_rows
from ai_assets.functions.embedding_proxy import ProxyPass, proxy_prices
from ai_assets.runtime.cache import Cache, Entry, cache_key
from ai_assets.runtime.columns import error_column
from ai_assets.runtime.dead_letter import FailedRows
from ai_assets.runtime.engine import RunOptions
from ai_assets.runtime.guarantees import Accuracy, Certificate, Learned, Precision, learn, sample_rows
from ai_assets.runtime.results import Enriched, EnrichedStream, Source
from ai_assets.runtime.usage import Prices, Usage

KEY_VERSION = "ai_assets/certified-cascade/v1"


Stage = Callable[[Source, str, RunOptions], "Enriched | EnrichedStream"]


def run_certified(source: Source, spec: Cascade, stage: Stage, *, output_column: str, options: RunOptions,
                  skipped: Callable[[pa.RecordBatch], list[bool]], prices_of: Callable[[str], Prices | None],
                  family: Callable[[str], str], cache: Cache | None,
                  group_column: str | None = None) -> Enriched | EnrichedStream:
    """The certified cascade: a table in, a table out; a stream in, a stream out. The proxy's answers are spooled
    to a temporary Arrow file (every score is needed before the threshold can be chosen), so memory holds the
    scores, the sample and one window, not the rows."""
    assert spec.target is not None  # Cascade checked it is certified
    target, proxy, oracle = spec.target, spec.proxy_name, spec.models[-1]
    embedding = None if spec.proxy is None else ProxyPass(
        spec.proxy, str(spec.label_field), str(spec.confidence_field), output_column, oracle, stage, options, cache,
        skipped, group_column, proxy_prices(spec.proxy, spec.prices))
    first = embedding.run(source) if embedding is not None else \
        stage(source, proxy, replace(options, on_error="null", retry_failed_rows=False))
    rows = _Spool(spec, output_column, skipped)
    for batch in first.table.to_batches() if isinstance(first, Enriched) else first:
        rows.write(batch)
    rows.close()
    usage, failed = Usage(), FailedRows()
    usage.absorb(first.usage, proxy, embedding.prices if embedding is not None else prices_of(proxy))
    population = [i for i, skip in enumerate(rows.skips) if not skip]
    trust = [rows.trust[i] for i in population]
    key = cache_key(KEY_VERSION, embedding.family() if embedding is not None else family(proxy), family(oracle),
                    spec.fingerprint())
    stored = cache.get_many([key]).get(key) if cache is not None else None
    draw = [population[at] for at in sample_rows(range(len(population)), spec.label_budget, spec.seed)]
    reused = stored is not None and stored.error is None and isinstance(stored.value, dict)
    if reused and stored is not None:  # the same sample again on the same data (from the journal), none on new data
        learned = Learned.from_entry(stored.value)
        draw = draw if stored.value.get("data") == rows.digest.hexdigest() else []
    sample = _ask(stage, oracle, options, rows.take(draw), output_column) if draw else None
    if sample is not None:
        usage.absorb(sample.usage, oracle, prices_of(oracle))
        failed.extend(sample.failed)
    if not reused:
        answers = _answers(sample, output_column)
        proxies = rows.take(draw).column(output_column).to_pylist() if draw else []
        where = {row: at for at, row in enumerate(population)}
        good = {where[row]: _good(spec, proxies[i], answers[i]) for i, row in enumerate(draw) if i in answers}
        learned = learn(target, trust, good, spec.delta)
        if cache is not None and len(good) == len(draw):  # an oracle failure in the sample: learn again next run
            cache.put_many([Entry(key, {**learned.as_entry(), "data": rows.digest.hexdigest()})])
            cache.flush()
    sampled = set(draw)
    rest = [row for at, row in enumerate(population) if trust[at] < learned.threshold and row not in sampled]
    merge = _Merge(rows, sample, draw, set(rest), output_column, proxy, oracle)

    def windows() -> Iterator[pa.RecordBatch]:
        answered = stage(merge.inputs(), oracle, options) if rest else None
        merge.answers = iter(answered.table.to_batches() if isinstance(answered, Enriched) else answered or [])
        for index in range(rows.batches):
            out = merge.window(index)
            count_rows(usage, pa.Table.from_batches([out]), rows.skips_of(index), output_column, group_column)
            yield out
        if answered is not None:
            usage.absorb(answered.usage, oracle, prices_of(oracle))
            failed.extend(answered.failed)
        usage.certificate = Certificate(target, spec.delta, learned, reused, len(population),
                                        len(sampled) + len(rest), *_costs(usage, oracle, len(population)))
        for part in usage.groups.values():  # each partition's metadata states the call's guarantee
            part.certificate = usage.certificate

    if not isinstance(source, pa.Table):
        return EnrichedStream(windows(), usage, failed)
    out = list(windows())
    if out or not isinstance(first, Enriched):
        return Enriched(pa.Table.from_batches(out), usage, failed)
    return Enriched(first.table.append_column(model_column(output_column), pa.array([], pa.string())), usage, failed)


class _Spool:
    """The proxy's answered rows in a temporary Arrow file (random access by batch), with each row's skip and
    trust score, and a digest of the content (a re-run on the same rows draws the same sample)."""

    def __init__(self, spec: Cascade, output_column: str, skipped: Callable[[pa.RecordBatch], list[bool]]) -> None:
        self.spec, self.output_column, self.skipped = spec, output_column, skipped
        self.folder = tempfile.TemporaryDirectory(prefix="ai_assets-certify-")
        self.path = Path(self.folder.name) / "rows.arrow"
        self.skips: list[bool] = []
        self.trust: list[float] = []
        self.starts: list[int] = []
        self.digest = hashlib.sha256()
        self._sink: pa.OSFile | None = None
        self._writer: pa.ipc.RecordBatchFileWriter | None = None
        self._reader: pa.ipc.RecordBatchFileReader | None = None

    def write(self, batch: pa.RecordBatch) -> None:
        if self._writer is None:
            self._sink = pa.OSFile(str(self.path), "wb")
            self._writer = pa.ipc.new_file(self._sink, batch.schema)
        self._writer.write_batch(batch)
        self.digest.update(batch.serialize())
        self.starts.append(len(self.skips))
        values = batch.column(self.output_column).to_pylist()
        errors = batch.column(error_column(self.output_column)).to_pylist()
        self.skips += self.skipped(batch)
        self.trust += [_trust(self.spec, v if e is None else None) for v, e in zip(values, errors, strict=True)]

    def close(self) -> None:
        if self._writer is not None and self._sink is not None:
            self._writer.close()
            self._sink.close()
            self._reader = pa.ipc.open_file(pa.memory_map(str(self.path)))

    @property
    def batches(self) -> int:
        return len(self.starts)

    def batch(self, index: int) -> pa.RecordBatch:
        assert self._reader is not None
        return self._reader.get_batch(index)

    def reader(self) -> pa.ipc.RecordBatchFileReader:
        """A reader of its own (for the oracle's input, read on the pipeline's thread)."""
        return pa.ipc.open_file(pa.memory_map(str(self.path)))

    def skips_of(self, index: int) -> list[bool]:
        end = self.starts[index + 1] if index + 1 < len(self.starts) else len(self.skips)
        return self.skips[self.starts[index]:end]

    def take(self, rows: list[int]) -> pa.Table:
        """Rows by their number in the whole input (ascending)."""
        parts = []
        for index, start in enumerate(self.starts):
            batch = self.batch(index)
            local = [r - start for r in rows if start <= r < start + batch.num_rows]
            if local:
                parts.append(pa.Table.from_batches([batch]).take(pa.array(local, pa.int64())))
        return pa.concat_tables(parts)


@dataclass
class _Merge:
    """Each spooled window with the oracle's answers put in: the sample's, and the untrusted rows' (their answers
    come back in input order from one oracle stream)."""

    rows: _Spool
    sample: Enriched | None
    draw: list[int]
    rest: set[int]
    output_column: str
    proxy: str
    oracle: str
    answers: Iterator[pa.RecordBatch] = field(default_factory=lambda: iter(()))
    _buffer: pa.Table | None = None

    def inputs(self) -> Iterator[pa.RecordBatch]:
        """The untrusted rows' inputs, window by window."""
        reader = self.rows.reader()
        for index, start in enumerate(self.rows.starts):
            batch = reader.get_batch(index)
            local = [i for i in range(batch.num_rows) if start + i in self.rest]
            if local:
                yield batch.take(pa.array(local, pa.int64())).drop_columns(
                    [self.output_column, error_column(self.output_column)])

    def window(self, index: int) -> pa.RecordBatch:
        start, batch = self.rows.starts[index], self.rows.batch(index)
        table = pa.Table.from_batches([batch])
        skips = self.rows.skips_of(index)
        models = [None if skip else self.proxy for skip in skips]
        drawn = [(i, at) for at, row in enumerate(self.draw) if 0 <= (i := row - start) < batch.num_rows]
        if drawn and self.sample is not None:
            table = put_rows(table, [i for i, _ in drawn], self.sample.table.take(
                pa.array([at for _, at in drawn], pa.int64())).select(table.column_names))
        local = [i for i in range(batch.num_rows) if start + i in self.rest]
        if local:
            table = put_rows(table, local, self._next(len(local)).select(table.column_names))
        for i in [i for i, _ in drawn] + local:
            models[i] = self.oracle
        return table.append_column(model_column(self.output_column), pa.array(models, pa.string())) \
            .combine_chunks().to_batches(max_chunksize=max(batch.num_rows, 1))[0] if batch.num_rows else \
            pa.RecordBatch.from_pylist([], schema=table.schema.append(pa.field(model_column(self.output_column),
                                                                               pa.string())))

    def _next(self, count: int) -> pa.Table:
        """The oracle's next ``count`` answers, in input order."""
        buffer = self._buffer
        while buffer is None or buffer.num_rows < count:
            got = pa.Table.from_batches([next(self.answers)])
            buffer = got if buffer is None else pa.concat_tables([buffer, got.cast(buffer.schema)])
        self._buffer = buffer.slice(count)
        return buffer.slice(0, count)


def _ask(stage: Stage, model: str, options: RunOptions, rows: pa.Table, output_column: str) -> Enriched:
    answered = stage(rows.drop_columns([output_column, error_column(output_column)]), model, options)
    assert isinstance(answered, Enriched)
    return answered


def _answers(sample: Enriched | None, output_column: str) -> dict[int, Any]:
    """The sample's oracle answers by position in the sample (failures left out)."""
    if sample is None:
        return {}
    errors = sample.table.column(error_column(output_column)).to_pylist()
    values = sample.table.column(output_column).to_pylist()
    return {at: value for at, (value, error) in enumerate(zip(values, errors, strict=True)) if error is None}


def _trust(spec: Cascade, value: Any) -> float:
    """How sure the proxy is of the answer the target lets it keep (``-inf``: never keep it)."""
    if not isinstance(value, dict):
        return -math.inf
    confidence = probability(value.get(spec.confidence_field))
    label = value.get(spec.label_field)
    if confidence is None or label is None:
        return -math.inf
    if isinstance(spec.target, Accuracy):
        return confidence
    keeps = isinstance(spec.target, Precision)  # precision keeps positives, recall keeps negatives
    return confidence if label is keeps else -math.inf


def _good(spec: Cascade, proxy: Any, oracle: Any) -> bool:
    """What a sampled row says for the target: the proxy agreed with the oracle (accuracy) or the oracle said True
    (precision and recall)."""
    truth = oracle.get(spec.label_field) if isinstance(oracle, dict) else None
    if isinstance(spec.target, Accuracy):
        return isinstance(proxy, dict) and proxy.get(spec.label_field) == truth
    return truth is True


def _costs(usage: Usage, oracle: str, rows: int) -> tuple[float | None, float | None]:
    if not any(usage.model_prices.values()):
        return None, None
    spent = round(usage.cost(None), 6)
    part = usage.models.get(oracle)
    prices = usage.model_prices.get(oracle)
    if part is None or prices is None or part.sent_rows == 0:
        return spent, None
    return spent, round(part.cost(prices) / part.sent_rows * rows, 6)
