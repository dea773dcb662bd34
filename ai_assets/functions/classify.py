"""``classify_text``: zero-shot labels, by embedding similarity to label descriptions or by an LLM.

Both return a struct column ``{label: string, score: float32}``. With an embedder, ``score`` is the softmax over
the cosine similarities to every label (divided by ``temperature``); with an LLM it is the model's stated
confidence. ``score_labels`` is the one label-scoring path shared with image classification.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
import pyarrow as pa
from pydantic import BaseModel, Field, create_model

from ai_assets.functions._execution import Enriched, Progress, append_columns, run_sync
from ai_assets.functions.columns import set_columns
from ai_assets.functions.embed import embed_texts
from ai_assets.functions.prompt import PromptParams, prompt
from ai_assets.functions.templates import column_texts
from ai_assets.providers.protocols import Prompter, RemoteTextEmbedder, TextEmbedder
from ai_assets.runtime.cache import Cache
from ai_assets.runtime.engine import RunOptions
from ai_assets.runtime.errors import ConfigError, NotSupportedError
from ai_assets.runtime.usage import Usage

CLASSIFICATION = pa.struct([pa.field("label", pa.string()), pa.field("score", pa.float32())])
Method = Literal["embedding", "llm"]
Matrix = np.ndarray[Any, np.dtype[np.float32]]


def label_descriptions(labels: Sequence[str] | Mapping[str, str]) -> dict[str, str]:
    """Labels as ``{label: description}`` (a plain list describes each label by its own name)."""
    described = dict(labels) if isinstance(labels, Mapping) else {label: label for label in labels}
    if len(described) < 2:
        raise ConfigError(f"labels: give at least two labels, got {list(described)}")
    return described


def score_labels(vectors: Matrix, label_vectors: Matrix, labels: Sequence[str],
                 temperature: float = 0.05) -> tuple[list[str], list[float]]:
    """Best label per row, with its softmax probability over cosine similarities."""
    def unit(m: Matrix) -> Matrix:
        norms: Matrix = np.clip(np.linalg.norm(m, axis=1, keepdims=True), 1e-12, None)
        return m / norms

    logits = unit(vectors) @ unit(label_vectors).T / temperature
    logits -= logits.max(axis=1, keepdims=True)
    probs = np.exp(logits)
    probs /= probs.sum(axis=1, keepdims=True)
    best = probs.argmax(axis=1)
    return [labels[i] for i in best], [float(probs[r, i]) for r, i in enumerate(best)]


def classify_text(
    table: pa.Table,
    column: str,
    labels: Sequence[str] | Mapping[str, str],
    *,
    provider: TextEmbedder | RemoteTextEmbedder | Prompter,
    method: Method | None = None,
    output_column: str = "classification",
    temperature: float = 0.05,
    options: RunOptions | None = None,
    cache: Cache | None = None,
    progress: Progress | None = None,
) -> Enriched:
    """Label each row of ``column`` with one of ``labels`` (a list, or ``{label: description}``).

    ``method`` defaults to ``"llm"`` for chat providers and ``"embedding"`` for embedders.
    """
    described = label_descriptions(labels)
    options = options or RunOptions()
    if method is None:
        method = "llm" if isinstance(provider, Prompter) else "embedding"
    if method == "llm":
        if not isinstance(provider, Prompter):
            raise NotSupportedError(provider, "classify_text(method='llm')")
        return _classify_llm(table, column, described, provider, output_column, options, cache, progress)
    if not isinstance(provider, (TextEmbedder, RemoteTextEmbedder)):
        raise NotSupportedError(provider, "classify_text(method='embedding')")
    texts, reasons = column_texts(table, column)
    usage = Usage()
    names = list(described)

    async def run() -> tuple[list[Any], list[str | None], list[Any]]:
        rows = await embed_texts(texts, reasons, provider, options, cache, usage, progress)
        label_rows = await embed_texts(list(described.values()), [None] * len(names), provider, options, cache,
                                       Usage())
        return rows.values, rows.errors, label_rows.values

    values, errors, label_values = run_sync(run)
    present = [i for i, v in enumerate(values) if v is not None]
    results: list[dict[str, Any] | None] = [None] * len(values)
    if present:
        best, scores = score_labels(np.asarray([values[i] for i in present], np.float32),
                                    np.asarray(label_values, np.float32), names, temperature)
        for i, label, score in zip(present, best, scores, strict=True):
            results[i] = {"label": label, "score": score}
    return Enriched(append_columns(table, output_column, pa.array(results, CLASSIFICATION), errors), usage)


def _classify_llm(table: pa.Table, column: str, described: dict[str, str], provider: Prompter, output_column: str,
                  options: RunOptions, cache: Cache | None, progress: Progress | None) -> Enriched:
    names = tuple(described)
    label_type: Any = Literal[names]
    choice = create_model(
        "Classification",
        label=(label_type, Field(description="the label that fits the text best")),
        confidence=(float, Field(ge=0, le=1, description="how sure you are, from 0 to 1")),
        __base__=BaseModel,
    )
    legend = "\n".join(f"- {name}: {text}" for name, text in described.items())
    system = f"Classify the text into exactly one of these labels:\n{legend}\nAnswer with the label and confidence."
    out = prompt(table, "{" + column + "}", provider=provider, return_format=choice, system_message=system,
                 output_column=output_column, params=PromptParams(temperature=0.0), options=options, cache=cache,
                 progress=progress)
    raw = out.table.column(output_column).to_pylist()
    column_values = [None if r is None else {"label": r["label"], "score": r["confidence"]} for r in raw]
    return Enriched(set_columns(out.table, {output_column: pa.array(column_values, CLASSIFICATION)}), out.usage)
