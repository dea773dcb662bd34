"""``classify_text``: zero-shot labels, by embedding similarity to label descriptions or by an LLM.

Both return a struct column ``{label: string, score: float32}``. With an embedder, ``score`` is the softmax over
the cosine similarities to every label (divided by ``temperature``); with an LLM it is the model's stated
confidence. ``LabelScorer`` is the one label-scoring path, shared with image classification.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeVar, Unpack

import numpy as np
import pyarrow as pa
from pydantic import BaseModel, Field, create_model

from ai_assets.functions.embed import EmbedTextTask
from ai_assets.functions.prompt import PromptParams, PromptTask
from ai_assets.functions.templates import Part
from ai_assets.providers.protocols import ModelRole, Prompter, RemoteTextEmbedder, TextEmbedder, with_model
from ai_assets.runtime.cache import Cache
from ai_assets.runtime.columns import error_column
from ai_assets.runtime.engine import RunOptions
from ai_assets.runtime.errors import ConfigError, NotSupportedError
from ai_assets.runtime.prices import prices_for
from ai_assets.runtime.results import Enriched, EnrichedStream, Source
from ai_assets.runtime.run import RunArgs, run_task

CLASSIFICATION = pa.struct([pa.field("label", pa.string()), pa.field("score", pa.float32())])
LABELS = pa.list_(CLASSIFICATION)
"""Multi-label output (``top_k`` / ``threshold``): the labels that apply, best first."""
Method = Literal["embedding", "llm"]
Matrix = np.ndarray[Any, np.dtype[np.float32]]


def method_role(method: Method | None) -> ModelRole | Literal["auto"]:
    """Which of a provider's models ``model=`` replaces for a classification ``method`` (None: as the provider
    decides, see ``with_model``)."""
    return "auto" if method is None else "chat" if method == "llm" else "embedding"


def label_descriptions(labels: Sequence[str] | Mapping[str, Any]) -> dict[str, Any]:
    """Labels as ``{label: description}`` (a plain list describes each label by its own name)."""
    described = dict(labels) if isinstance(labels, Mapping) else {label: label for label in labels}
    if len(described) < 2:
        raise ConfigError(f"labels: give at least two labels, got {list(described)}")
    return described


def unit_rows(matrix: Matrix) -> Matrix:
    norms: Matrix = np.clip(np.linalg.norm(matrix, axis=1, keepdims=True), 1e-12, None)
    return matrix / norms


def score_labels(vectors: Matrix, label_vectors: Matrix, labels: Sequence[str],
                 temperature: float = 0.05) -> tuple[list[str], list[float]]:
    """Best label per row, with its softmax probability over cosine similarities."""
    probs = label_probabilities(vectors, label_vectors, temperature)
    best = probs.argmax(axis=1)
    return [labels[i] for i in best], [float(probs[r, i]) for r, i in enumerate(best)]


def label_probabilities(vectors: Matrix, label_vectors: Matrix, temperature: float) -> Matrix:
    logits = unit_rows(vectors) @ unit_rows(label_vectors).T / temperature
    logits -= logits.max(axis=1, keepdims=True)
    probs: Matrix = np.exp(logits)
    probs /= probs.sum(axis=1, keepdims=True)
    return probs


@dataclass(frozen=True)
class MultiLabel:
    """Multi-label output: at most ``top_k`` labels, each scoring at least ``threshold``, best first."""

    top_k: int | None = None
    threshold: float | None = None

    def __post_init__(self) -> None:
        if self.top_k is not None and self.top_k < 1:
            raise ConfigError(f"top_k must be >= 1, got {self.top_k}")
        if self.threshold is not None and not 0 <= self.threshold <= 1:
            raise ConfigError(f"threshold must be between 0 and 1, got {self.threshold}")

    def pick(self, scored: Sequence[tuple[str, float]]) -> list[dict[str, Any]]:
        ordered = sorted(scored, key=lambda pair: (-pair[1], pair[0]))
        kept = [p for p in ordered if self.threshold is None or p[1] >= self.threshold]
        return [{"label": label, "score": score} for label, score in kept[:self.top_k]]


class LabelScorer:
    """Rows of vectors (None for missing) -> the ``{label, score}`` column (or, multi-label, the list of labels
    that apply), against fixed label vectors."""

    def __init__(self, names: Sequence[str], anchors: Matrix, temperature: float,
                 multi: MultiLabel | None = None) -> None:
        self.names = list(names)
        self.anchors = anchors
        self.temperature = temperature
        self.multi = multi

    def column(self, values: Sequence[Any]) -> pa.Array:
        present = [i for i, v in enumerate(values) if v is not None]
        results: list[Any] = [None] * len(values)
        if present:
            matrix = np.asarray([values[i] for i in present], np.float32)
            if self.multi is not None:
                probs = label_probabilities(matrix, self.anchors, self.temperature)
                for row, i in enumerate(present):
                    results[i] = self.multi.pick(list(zip(self.names, map(float, probs[row]), strict=True)))
                return pa.array(results, LABELS)
            best, scores = score_labels(matrix, self.anchors, self.names, self.temperature)
            for i, label, score in zip(present, best, scores, strict=True):
                results[i] = {"label": label, "score": score}
        return pa.array(results, LABELS if self.multi is not None else CLASSIFICATION)


class ClassifyTextTask(EmbedTextTask):
    """Embeddings of the rows, scored against the labels' embeddings; the journal keeps the vectors."""

    scorer: LabelScorer

    def columns(self, values: list[Any], errors: list[str | None], *, final: bool) -> dict[str, pa.Array] | None:
        return {self.output_column: self.scorer.column(values),
                error_column(self.output_column): pa.array(errors, pa.string())}


class ClassifyLLMTask(PromptTask):
    """A ``Literal`` label and a confidence from a chat model, as ``{label, score}`` (multi-label: a score for
    each label that applies, as the list of those kept)."""

    multi: MultiLabel | None = None

    def columns(self, values: list[Any], errors: list[str | None], *, final: bool) -> dict[str, pa.Array]:
        if self.multi is not None:
            multi = self.multi
            picked = [None if v is None else multi.pick([(x["label"], float(x["score"])) for x in v["labels"]])
                      for v in values]
            column = pa.array(picked, LABELS)
        else:
            column = pa.array([None if v is None else {"label": v["label"], "score": v["confidence"]}
                               for v in values], CLASSIFICATION)
        return {self.output_column: column, error_column(self.output_column): pa.array(errors, pa.string())}


LLMTask = TypeVar("LLMTask", bound=ClassifyLLMTask)


def classify_text(
    table: Source,
    column: str,
    labels: Sequence[str] | Mapping[str, str],
    *,
    provider: TextEmbedder | RemoteTextEmbedder | Prompter,
    method: Method | None = None,
    output_column: str = "classification",
    temperature: float = 0.05,
    top_k: int | None = None,
    threshold: float | None = None,
    params: PromptParams | None = None,
    **run: Unpack[RunArgs],
) -> Enriched | EnrichedStream:
    """Label each row of ``column`` with one of ``labels`` (a list, or ``{label: description}``): a
    ``{label, score}`` struct column. With ``top_k`` and/or ``threshold`` it is multi-label: a list of the labels
    that apply, best first (at most ``top_k``, each scoring at least ``threshold``). ``params`` are the LLM's
    sampling settings (default: temperature 0); an embedder takes none.

    ``method`` defaults to ``"llm"`` for chat providers and ``"embedding"`` for embedders. With an embedder a
    score is the softmax over the cosine similarities to the labels; with an LLM it is the model's confidence. A
    table gives a table back, a reader a stream (see ``prompt``); ``run`` as for every AI function (``RunArgs``).
    """
    described = label_descriptions(labels)
    multi = MultiLabel(top_k, threshold) if top_k is not None or threshold is not None else None
    provider = with_model(provider, run.get("model"), method_role(method))
    options = run.get("options") or RunOptions()
    prices = run.get("prices")
    if method is None:
        method = "llm" if isinstance(provider, Prompter) else "embedding"
    task: ClassifyTextTask | ClassifyLLMTask
    if method == "llm":
        if not isinstance(provider, Prompter):
            raise NotSupportedError(provider, "classify_text(method='llm')")
        task = llm_classifier("{" + column + "}", "text", described, provider, output_column, multi, params, options,
                              ClassifyLLMTask)
        chosen = prices or prices_for(provider)
    else:
        if not isinstance(provider, (TextEmbedder, RemoteTextEmbedder)):
            raise NotSupportedError(provider, "classify_text(method='embedding')")
        if params is not None:
            raise ConfigError("classify_text: params are an LLM's sampling settings; method='embedding' takes none")
        task = ClassifyTextTask(column, provider, output_column, options)
        task.scorer = LabelScorer(list(described), _embed_labels(described, provider, options, run.get("cache")),
                                  temperature, multi)
        chosen = prices or prices_for(provider, embeddings=not task.local)
    return run_task(table, task, options, run, prices=chosen)


def _embed_labels(described: Mapping[str, str], provider: TextEmbedder | RemoteTextEmbedder, options: RunOptions,
                  cache: Cache | None) -> Matrix:
    from ai_assets.functions.embed import embed_text

    labels = pa.table({"description": list(described.values())})
    out = embed_text(labels, "description", provider=provider, options=options, cache=cache)
    return np.asarray(out.table.column("embedding").to_pylist(), dtype=np.float32)


def llm_classifier(template: str | Sequence[Part], subject: str, described: Mapping[str, str], provider: Prompter,
                   output_column: str, multi: MultiLabel | None, params: PromptParams | None, options: RunOptions,
                   kind: type[LLMTask]) -> LLMTask:
    """The LLM path of a classification: a ``Literal`` label (or every label that applies) and a confidence for
    each row's rendered ``template`` (text, or an image part for ``classify_image``, whose ``kind`` of task checks
    the images first)."""
    choice = _choice_model(tuple(described)) if multi is None else _multi_model(tuple(described))
    task = kind(template, provider, choice, _llm_system_message(described, multi, subject), output_column,
                params or PromptParams(temperature=0.0), options)
    task.multi = multi
    return task


def _choice_model(names: tuple[str, ...]) -> type[BaseModel]:
    label_type: Any = Literal[names]
    return create_model(
        "Classification",
        label=(label_type, Field(description="the label that fits the text best")),
        confidence=(float, Field(ge=0, le=1, description="how sure you are, from 0 to 1")),
        __base__=BaseModel,
    )


def _multi_model(names: tuple[str, ...]) -> type[BaseModel]:
    label_type: Any = Literal[names]
    scored = create_model("LabelScore", label=(label_type, ...),
                          score=(float, Field(ge=0, le=1, description="how well the label fits, from 0 to 1")),
                          __base__=BaseModel)
    return create_model("Labels", labels=(list[scored], Field(description="every label that applies")),  # type: ignore[valid-type]
                        __base__=BaseModel)


def _llm_system_message(described: Mapping[str, str], multi: MultiLabel | None = None, subject: str = "text") -> str:
    legend = "\n".join(f"- {name}: {text}" for name, text in described.items())
    if multi is not None:
        return (f"Which of these labels apply to the {subject}?\n{legend}\nList every label that applies, each "
                "with a score from 0 to 1 for how well it fits.")
    return (f"Classify the {subject} into exactly one of these labels:\n{legend}\nAnswer with the label and "
            "confidence.")
