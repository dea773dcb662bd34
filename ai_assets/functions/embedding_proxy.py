"""An embedding model as the proxy of a certified cascade: each row's answer is the label whose embedding is nearest
the row's, so the proxy costs one embedding per row instead of one chat completion.

LOTUS (``ProxyModel.EMBEDDING_MODEL`` in ``sem_filter``) scores each row by its embedding's similarity to the
filter, and BARGAIN (Zeighami et al., SIGMOD 2026) takes any proxy score that orders rows by how far to trust them.
Here a row's text (``column``) and each label's text are embedded through the same journal as ``embed_text`` (the
same keys: a vector ``embed_text`` already paid for is not paid again, nor one of a label); the answer is the label
of highest cosine similarity and its confidence ``softmax(cosine / temperature)`` at that label. The default
temperature, 0.05, is the scale sentence-transformers' contrastive loss (``MultipleNegativesRankingLoss``,
``scale=20``) trains MiniLM and its kin with, so the softmax is the model's own training-time probability over the
candidates. Calibration is not needed for the guarantee: the threshold is learned from the oracle's sample, and
only the order of the scores matters (for two labels the softmax is a logistic function of the cosine margin,
monotone in it, whatever the temperature).

A row whose embedding failed, is not finite, is a zero vector (cosine undefined), or has another size than the
labels' (the embedder changed between runs) gets no proxy answer: the oracle answers it, and a warning counts such
rows and names the first. A label whose embedding failed or is undefined is left out, with a warning; with fewer
than two usable labels the proxy answers nothing (every row goes to the oracle). Labels that embed identically
are named in a warning: the proxy cannot tell them apart (its confidence there is at most 1/2).
"""

from __future__ import annotations

import hashlib
import math
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pyarrow as pa
from pydantic import BaseModel, TypeAdapter, ValidationError

from ai_assets.functions.arrow_types import to_python
from ai_assets.functions.embed import EmbedTextTask
from ai_assets.functions.nearest_label import same_pairs, score, unit
from ai_assets.functions.templates import column_texts
from ai_assets.providers.protocols import RemoteTextEmbedder, TextEmbedder, with_model
from ai_assets.runtime.cache import Cache, cache_key
from ai_assets.runtime.columns import error_column
from ai_assets.runtime.dead_letter import FailedRows
from ai_assets.runtime.engine import RunOptions
from ai_assets.runtime.errors import AIAssetsWarning, ConfigError, bounded
from ai_assets.runtime.prices import prices_for
from ai_assets.runtime.results import Enriched, EnrichedStream, Source
from ai_assets.runtime.run import RunArgs, run_task
from ai_assets.runtime.usage import Prices, Usage

TEMPERATURE = 0.05
"""The softmax temperature over cosines (sentence-transformers' contrastive scale 20)."""
SAME = 1e-6
"""Two labels whose embeddings' cosine is within this of 1 embed identically."""
SHOWN_ROWS = 5
TEXT, VECTOR = "text", "vector"


@dataclass(frozen=True)
class EmbeddingProxy:
    """The proxy of a certified cascade (``Cascade(["gpt-4o"], proxy=EmbeddingProxy(...), target=...)``).

    ``embedder``: a local (``SentenceTransformersProvider``) or remote (``OpenAICompatibleProvider``) text embedder;
    ``model``: its embedding model for this proxy (default: the provider's). ``column``: the text each row embeds.
    ``labels``: the answers it can give, two or more: a list of label strings (each embedded as it is) or a mapping
    of label to the text embedded for it (``{True: "a review about cats", False: "a review about something
    else"}`` for a bool field). ``temperature``: of the softmax over cosines that gives the confidence."""

    embedder: TextEmbedder | RemoteTextEmbedder
    column: str
    labels: Mapping[Any, str] | Sequence[str]
    model: str | None = None
    temperature: float = TEMPERATURE
    choices: tuple[tuple[Any, str], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.embedder, TextEmbedder | RemoteTextEmbedder):
            raise ConfigError(f"EmbeddingProxy(embedder={type(self.embedder).__name__}): give a text embedder (a "
                              "SentenceTransformersProvider, an OpenAICompatibleProvider, ...)")
        if self.model is not None:
            object.__setattr__(self, "embedder", with_model(self.embedder, self.model, "embedding"))
        if not isinstance(self.column, str) or not self.column:
            raise ConfigError(f"EmbeddingProxy(column={self.column!r}): give the name of the text column each row "
                              "embeds")
        if isinstance(self.temperature, bool) or not isinstance(self.temperature, int | float) \
                or not math.isfinite(self.temperature) or self.temperature <= 0:
            raise ConfigError(f"EmbeddingProxy(temperature={self.temperature!r}): give a number > 0")
        object.__setattr__(self, "choices", _choices(self.labels))

    @property
    def remote(self) -> bool:
        return not isinstance(self.embedder, TextEmbedder)

    def identity(self) -> Mapping[str, Any]:
        embedder = self.embedder
        return embedder.embedding_identity() if isinstance(embedder, RemoteTextEmbedder) else embedder.identity()

    @property
    def name(self) -> str:
        """The proxy's name in ``<output_column>_model`` and the usage per model."""
        return str(self.identity().get("model") or type(self.embedder).__name__)

    def describe(self) -> dict[str, Any]:
        """What decides the proxy's answers (part of the cascade's fingerprint and code version)."""
        return {"embedder": dict(self.identity()), "column": self.column, "temperature": self.temperature,
                "labels": [[repr(value), text] for value, text in self.choices]}

    def check(self, return_format: type[BaseModel] | None, label_field: str | None) -> None:
        """Raise ``ConfigError`` when a label is not a value of ``return_format``'s ``label_field``."""
        info = return_format.model_fields.get(label_field) if return_format and label_field else None
        if info is None:
            return  # the cascade names the missing field
        adapter: TypeAdapter[Any] = TypeAdapter(info.annotation if info.annotation is not None else Any)
        for value, _ in self.choices:
            try:
                valid = to_python(adapter.validate_python(value))
            except ValidationError:
                valid = _invalid
            if type(valid) is not type(to_python(value)) or valid != to_python(value):  # no 1 for True, no "1" for 1
                raise ConfigError(f"EmbeddingProxy(labels=...): label {value!r} is not a value of "
                                  f"{return_format.__name__ if return_format else ''}.{label_field} "
                                  f"({_name(info.annotation)}); the proxy's answer "
                                  "would not be one the oracle could give")


_invalid = object()


def _name(kind: Any) -> str:
    return kind.__name__ if isinstance(kind, type) else str(kind)


def _choices(labels: Mapping[Any, str] | Sequence[str]) -> tuple[tuple[Any, str], ...]:
    if isinstance(labels, str | bytes):
        raise ConfigError(f"EmbeddingProxy(labels={labels!r}): give a list of two or more labels, or a mapping of "
                          "label to the text embedded for it, not one string")
    pairs = list(labels.items()) if isinstance(labels, Mapping) else [(label, label) for label in labels]
    for value, text in pairs:
        if not isinstance(text, str) or not text.strip():
            raise ConfigError(f"EmbeddingProxy(labels=...): label {value!r} has text {text!r}; give the non-empty "
                              "text embedded for it")
    if len(pairs) < 2:
        raise ConfigError(f"EmbeddingProxy(labels={labels!r}): the proxy answers with the nearest of its labels, "
                          "so it needs two or more (one label is no choice: every row would get it)")
    seen: dict[str, Any] = {}
    for value, text in pairs:
        if text in seen:
            raise ConfigError(f"EmbeddingProxy(labels=...): labels {seen[text]!r} and {value!r} have the same "
                              f"text {text!r}, so they embed identically; give each its own text")
        seen[text] = value
    return tuple(pairs)


class VectorsTask(EmbedTextTask):
    """``embed_text``'s task (the same journal keys and codec) whose vectors may differ in size: a proxy compares
    each row with the labels itself and makes a size change one row's error, not the call's."""

    def vector_column(self, values: list[Any], *, final: bool) -> pa.Array | None:
        return pa.array([None if v is None else np.asarray(v, np.float32) for v in values], pa.list_(pa.float32()))


def rows_named(rows: Sequence[int]) -> str:
    shown = ", ".join(str(r) for r in rows[:SHOWN_ROWS])
    return shown + (f" and {len(rows) - SHOWN_ROWS} more" if len(rows) > SHOWN_ROWS else "")


Stage = Callable[[Source, str, RunOptions], "Enriched | EnrichedStream"]


@dataclass
class ProxyPass:
    """The embedding proxy over the rows, answered as a chat proxy's stage would answer them: the input columns,
    ``output_column`` (the return_format's struct: the label and the confidence, other fields null) and its error
    column. The oracle's stage gives the struct type and the skip reason of rows whose prompt is empty (it sends
    nothing for them)."""

    proxy: EmbeddingProxy
    label_field: str
    confidence_field: str
    output_column: str
    oracle: str
    stage: Stage
    options: RunOptions
    cache: Cache | None
    skipped: Callable[[pa.RecordBatch], list[bool]]
    group_column: str | None
    prices: Prices | None
    usage: Usage = field(default_factory=Usage)
    labels: np.ndarray | None = None
    """The usable labels' unit vectors (None: fewer than two, the proxy answers nothing)."""
    usable: list[int] = field(default_factory=list)
    reason: str | None = None
    digest: str = ""
    unanswered: list[int] = field(default_factory=list)
    first_why: str | None = None
    offset: int = 0
    _schema: pa.Schema | None = None

    def run(self, source: Source) -> Enriched | EnrichedStream:
        self._embed_labels()
        if isinstance(source, pa.Table):
            out = self._answer(source)
            self._warn()
            return Enriched(out, self.usage, FailedRows())

        def windows() -> Iterator[pa.RecordBatch]:
            for batch in source:
                yield from self._answer(pa.Table.from_batches([batch])).to_batches()
            self._warn()
        return EnrichedStream(windows(), self.usage, FailedRows())

    def family(self) -> str:
        """What a learned threshold is kept under for this proxy: its settings and its labels' vectors (a changed
        model or embedding size learns the threshold again)."""
        return cache_key("ai_assets/embedding-proxy/v1", self.proxy.describe(), self.digest)

    def _embed(self, texts: list[str | None], groups: pa.Array | None, options: RunOptions) -> pa.Table:
        columns: dict[str, Any] = {TEXT: pa.array(texts, pa.string())}
        run: RunArgs = {"cache": self.cache, "options": options}
        if groups is not None and self.group_column is not None:
            columns[self.group_column] = groups
            run["group_column"] = self.group_column
        task = VectorsTask(TEXT, self.proxy.embedder, VECTOR, options)
        out = run_task(pa.table(columns), task, options, run, prices=self.prices, model=self.proxy.name)
        assert isinstance(out, Enriched)
        self.usage.absorb(out.usage, self.proxy.name, self.prices)
        return out.table

    def _embed_labels(self) -> None:
        choices = self.proxy.choices
        table = self._embed([text for _, text in choices], None, replace(self.options, on_error="null"))
        vectors = table.column(VECTOR).to_pylist()
        errors = table.column(error_column(VECTOR)).to_pylist()
        problems: list[str] = []
        usable: list[int] = []
        for i, (vector, error) in enumerate(zip(vectors, errors, strict=True)):
            array = None if vector is None else np.asarray(vector, np.float64)
            why = bounded(str(error)) if error is not None or array is None else \
                "not finite (NaN or infinite)" if not np.all(np.isfinite(array)) else \
                "a zero vector" if not np.any(array) else None
            if why is None:
                usable.append(i)
            else:
                problems.append(f"{choices[i][0]!r}: {why}")
        sizes = {len(vectors[i]) for i in usable}
        if len(sizes) > 1:
            problems.append("the labels' embeddings differ in size (" + ", ".join(
                f"{choices[i][0]!r}: {len(vectors[i])}" for i in usable) + "): the embedder changed between runs")
            usable = []
        name = f"EmbeddingProxy({self.proxy.name!r})"
        if problems:
            warnings.warn(f"{name}: left out label(s) it cannot compare with: {'; '.join(problems)}",
                          AIAssetsWarning, stacklevel=2)
        if len(usable) < 2:
            self.reason = f"it has {len(usable)} usable label(s), and needs two to choose between"
            return
        matrix = unit(np.asarray([vectors[i] for i in usable], np.float64))
        self.labels, self.usable = matrix, usable
        self.digest = hashlib.sha256(matrix.astype("<f4").tobytes() + repr(usable).encode()).hexdigest()
        count, shown = same_pairs(matrix, SAME)
        pairs = [f"{bounded(repr(choices[usable[a]][0]), limit=80)} and "
                 f"{bounded(repr(choices[usable[b]][0]), limit=80)}" for a, b in shown]
        if count:
            more = f" and {count - len(shown):,} more ({count:,} pairs in all)" if count > len(shown) else ""
            warnings.warn(f"{name}: labels {', '.join(pairs)}{more} embed identically, so the proxy cannot tell them "
                          "apart (its confidence between them is at most 1/2; the threshold decides whether to keep "
                          "it)",
                          AIAssetsWarning, stacklevel=2)

    def _answer(self, table: pa.Table) -> pa.Table:
        if self.proxy.column not in table.column_names:
            raise ConfigError(f"EmbeddingProxy(column={self.proxy.column!r}) is not in the table (columns: "
                              f"{table.column_names})")
        batch = table.combine_chunks().to_batches()
        skips = self.skipped(batch[0]) if batch else []
        answered_by_oracle = self._oracle_view(table, skips)
        schema = answered_by_oracle.schema
        if self.labels is None:
            why: list[str | None] = [self.reason] * table.num_rows
            nearest, confidence = [-1] * table.num_rows, [0.0] * table.num_rows
        else:
            try:
                given = column_texts(table, self.proxy.column)[0]
            except ConfigError as error:
                raise ConfigError(f"EmbeddingProxy(column={self.proxy.column!r}): {error}") from error
            texts = [None if skip else text for skip, text in zip(skips, given, strict=True)]
            groups = table.column(self.group_column) if self.group_column in table.column_names else None
            embedded = self._embed(texts, groups, replace(self.options, on_error="null", retry_failed_rows=False))
            nearest, confidence, why = score(embedded.column(VECTOR),
                                             embedded.column(error_column(VECTOR)).to_pylist(), self.labels,
                                             self.proxy.temperature)
        values: list[Any] = []
        errors: list[str | None] = []
        skip_errors = iter(answered_by_oracle.column(error_column(self.output_column)).to_pylist())
        for i, skip in enumerate(skips):
            if skip:
                values.append(None)
                errors.append(next(skip_errors))
            elif why[i] is not None:
                values.append(None)
                errors.append(f"proxy {self.proxy.name!r} gave no answer: {why[i]}")
                self.unanswered.append(self.offset + i)
                self.first_why = self.first_why or why[i]
            else:
                label = self.proxy.choices[self.usable[nearest[i]]][0]
                values.append({self.label_field: to_python(label), self.confidence_field: confidence[i]})
                errors.append(None)
        self.offset += table.num_rows
        struct = schema.field(self.output_column).type
        out = table.append_column(schema.field(self.output_column), pa.array(values, struct)).append_column(
            schema.field(error_column(self.output_column)), pa.array(errors, pa.string()))
        return out.select(schema.names).cast(schema)

    def _oracle_view(self, table: pa.Table, skips: list[bool]) -> pa.Table:
        """The oracle's output for the rows it would skip (nothing is sent): their skip reasons, and its schema."""
        rows = [i for i, skip in enumerate(skips) if skip]
        if not rows and self._schema is not None:
            return self._schema.empty_table()
        view = self.stage(table.take(pa.array(rows, pa.int64())), self.oracle,
                          replace(self.options, on_error="null", retry_failed_rows=False))
        assert isinstance(view, Enriched)
        self._schema = view.table.schema
        return view.table

    def _warn(self) -> None:
        if self.unanswered:
            warnings.warn(f"EmbeddingProxy({self.proxy.name!r}) gave no answer to {len(self.unanswered)} row(s), "
                          f"so the oracle answers them (input rows {rows_named(self.unanswered)}); first reason: "
                          f"{self.first_why}", AIAssetsWarning, stacklevel=2)


def proxy_prices(proxy: EmbeddingProxy, prices: Mapping[str, Prices]) -> Prices | None:
    """The proxy's prices: the cascade's for its name, else the embedder's own or the built-in table's."""
    return prices.get(proxy.name) or prices_for(proxy.embedder, embeddings=proxy.remote)
