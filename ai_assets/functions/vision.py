"""``embed_image`` and ``classify_image``: image columns (encoded bytes) through a local image embedder.

Images are decoded on the model's worker thread, a batch at a time, so a stream of many images holds only a
window of encoded bytes and one batch of decoded pixels. An image that does not decode fails alone, with the same
error text by embedding and by LLM (``images.decode_or_error``); by LLM it is refused before anything is sent.
``classify_image`` scores each image against label vectors with the ``LabelScorer`` that ``classify_text`` uses. A
label is described by a text prompt (CLIP-class models embed text and images into one space) or by example images
(any image embedder, e.g. EfficientNet-Lite0): their mean embedding is the label's vector.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, Unpack

import numpy as np
import pyarrow as pa

from ai_assets.functions.classify import (
    ClassifyLLMTask,
    LabelScorer,
    Method,
    label_descriptions,
    llm_classifier,
    method_role,
)
from ai_assets.functions.embed import VectorTask
from ai_assets.functions.images import MAX_PIXELS, decode_or_error, open_image, require_pillow
from ai_assets.functions.prompt import PromptParams
from ai_assets.functions.templates import ImageColumn, Part, check_output_column
from ai_assets.providers.protocols import (
    ImageEmbedder,
    Prompter,
    TextEmbedder,
    dimension_of,
    with_batch_size,
    with_model,
)
from ai_assets.runtime.cache import cache_key
from ai_assets.runtime.columns import error_column
from ai_assets.runtime.engine import Connection, Job, RunOptions
from ai_assets.runtime.errors import ConfigError, NotSupportedError, Skip, SkipKind
from ai_assets.runtime.local import INPUTS, ItemError, local_connection
from ai_assets.runtime.prices import prices_for
from ai_assets.runtime.ratelimit import RateLimit
from ai_assets.runtime.results import Enriched, EnrichedStream, Source
from ai_assets.runtime.run import RunArgs, run_task
from ai_assets.runtime.task import Plan

LabelSpec = str | bytes | Sequence[bytes]
JOB_BATCHES = 4  # provider batches per model call


class EmbedImageTask(VectorTask):
    max_concurrency: int | None = 1
    account: tuple[RateLimit, str] | None = None

    def __init__(self, column: str, provider: ImageEmbedder, output_column: str, max_pixels: int) -> None:
        if not isinstance(provider, ImageEmbedder):
            raise NotSupportedError(provider, "embed_image")
        require_pillow()
        self.column = column
        self.provider = provider
        check_output_column(output_column, [column], type(self).__name__)
        self.output_column = output_column
        self.max_pixels = max_pixels
        self.identity = provider.identity()
        self.dim = dimension_of(provider)
        self.job_size = max(1, int(getattr(provider, "batch_size", 32)) * JOB_BATCHES)

    def plan(self, batch: pa.RecordBatch) -> Plan:
        if self.column not in batch.column_names:
            raise ConfigError(f"column {self.column!r} is not in the table (columns: {batch.column_names})")
        keys: list[str | None] = []
        skips: list[Skip | None] = []
        payloads: dict[str, Any] = {}
        for value in batch.column(self.column).to_pylist():
            if not value:
                keys.append(None)
                skips.append(Skip(SkipKind.NULL, self.column))
                continue
            key = cache_key(self.identity, hashlib.sha256(value).hexdigest())
            payloads[key] = value
            keys.append(key)
            skips.append(None)
        return Plan(keys, skips, payloads)

    def jobs(self, keys: Sequence[str], payloads: Mapping[str, Any]) -> list[Job]:
        return [Job(part[0], {INPUTS: [payloads[k] for k in part]}, keys=tuple(part))
                for part in (keys[i:i + self.job_size] for i in range(0, len(keys), self.job_size))]

    def _embed(self, blobs: list[bytes]) -> list[Any]:
        """Decode then embed one batch on the worker thread; an image that does not decode fails alone."""
        images: list[Any] = []
        results: list[Any] = []
        for blob in blobs:
            decoded = decode_or_error(blob, self.max_pixels)
            if isinstance(decoded, str):
                results.append(ItemError(decoded))
            else:
                images.append(decoded)
                results.append(None)
        vectors: Iterator[Any] = iter(self.provider.embed_image(images) if images else [])
        return [next(vectors) if r is None else r for r in results]

    def connect(self) -> AbstractAsyncContextManager[Connection]:
        return local_connection(self._embed, self.provider)


class ClassifyImageLLMTask(ClassifyLLMTask):
    """``classify_image(method="llm")``: an image that does not decode (or is over ``max_pixels``) is refused
    before its request is sent, with the error the embedding methods give it. Sent, it would cost its upload, a
    request and a rate-limit slot (and its tokens, where a provider meters what it received) for an answer that can
    only be an error: OpenAI's vision input takes PNG, JPEG, WEBP and non-animated GIF ("Images and vision")."""

    image_column: str
    max_pixels: int

    def plan(self, batch: pa.RecordBatch) -> Plan:
        if self.image_column not in batch.column_names:
            raise ConfigError(f"column {self.image_column!r} is not in the table (columns: {batch.column_names})")
        values = batch.column(self.image_column).to_pylist()
        checked: dict[bytes, str | None] = {}  # each distinct image is decoded once
        problems: dict[int, str] = {}
        for row, value in enumerate(values):
            if not value or not isinstance(value, bytes):
                continue  # null or empty: skipped by the template, which also refuses a column of the wrong type
            if value not in checked:
                decoded = decode_or_error(value, self.max_pixels)
                checked[value] = decoded if isinstance(decoded, str) else None
            problem = checked[value]
            if problem is not None:
                problems[row] = problem
        if problems:  # rendered as null images (nothing encoded, nothing sent), then given their own reason
            index = batch.schema.get_field_index(self.image_column)
            kept = pa.array([None if row in problems else v for row, v in enumerate(values)],
                            batch.schema.field(index).type)
            batch = batch.set_column(index, batch.schema.field(index), kept)
        plan = super().plan(batch)
        for row, problem in problems.items():
            plan.skips[row] = Skip(SkipKind.UNREADABLE, self.image_column, problem)
        return plan


class ClassifyImageTask(EmbedImageTask):
    scorer: LabelScorer

    def columns(self, values: list[Any], errors: list[str | None], *, final: bool) -> dict[str, pa.Array] | None:
        return {self.output_column: self.scorer.column(values),
                error_column(self.output_column): pa.array(errors, pa.string())}


def embed_image(
    table: Source,
    column: str,
    *,
    provider: ImageEmbedder,
    output_column: str = "image_embedding",
    max_pixels: int = MAX_PIXELS,
    **run: Unpack[RunArgs],
) -> Enriched | EnrichedStream:
    """Embed the encoded images in ``column``; undecodable images get a null vector and an error.
    A table gives a table back, a reader a stream (see ``prompt``); ``run`` as for every AI function (``RunArgs``;
    ``options`` default to ``on_error="null"``)."""
    options = run.get("options") or RunOptions(on_error="null")
    provider = with_batch_size(with_model(provider, run.get("model"), "embedding"), options.batch_size)
    task = EmbedImageTask(column, provider, output_column, max_pixels)
    return run_task(table, task, options, run, prices=run.get("prices"))


def label_vectors(labels: Mapping[str, LabelSpec], provider: ImageEmbedder,
                  max_pixels: int = MAX_PIXELS) -> np.ndarray[Any, np.dtype[np.float32]]:
    """One unit vector per label: its text prompt embedded, or the mean of its example images."""
    vectors = []
    for name, spec in labels.items():
        if isinstance(spec, str):
            if not isinstance(provider, TextEmbedder):
                raise NotSupportedError(provider, f"text label prompts (label {name!r}); give example images")
            vector = provider.embed_text([spec])[0]
        else:
            examples = [spec] if isinstance(spec, bytes) else list(spec)
            if not examples:
                raise ConfigError(f"label {name!r} has no example images")
            vector = provider.embed_image([open_image(e, max_pixels) for e in examples]).mean(axis=0)
        vectors.append(vector / max(float(np.linalg.norm(vector)), 1e-12))
    return np.asarray(vectors, dtype=np.float32)


def classify_image(
    table: Source,
    column: str,
    labels: Sequence[str] | Mapping[str, LabelSpec],
    *,
    provider: ImageEmbedder | Prompter,
    method: Method | None = None,
    output_column: str = "image_class",
    temperature: float = 0.05,
    max_pixels: int = MAX_PIXELS,
    params: PromptParams | None = None,
    **run: Unpack[RunArgs],
) -> Enriched | EnrichedStream:
    """Label each image with one of ``labels``: ``["a phone", ...]``, ``{"phone": "a photo of a phone"}`` or
    ``{"phone": [example image bytes, ...]}``. Adds a ``{label, score}`` struct column.

    ``method="llm"`` (the default for a chat provider) asks a vision LLM instead, the image as an image part and
    the labels (names or descriptions) as a ``Literal`` choice with a confidence, for labels that embeddings do not
    separate; ``params`` are its sampling settings (default temperature 0), ``prices`` its cost. With either
    method an image that does not decode, or has more than ``max_pixels`` pixels, is that row's error (counted in
    ``errors`` and the dead letters): by LLM it is refused before its request is sent, so it costs nothing.
    ``run`` as for every AI function (``RunArgs``; ``options`` default to ``on_error="null"``)."""
    provider = with_model(provider, run.get("model"), method_role(method))
    options = run.get("options") or RunOptions(on_error="null")
    described: dict[str, LabelSpec] = label_descriptions(labels)
    if method is None:
        method = "llm" if isinstance(provider, Prompter) and not isinstance(provider, ImageEmbedder) else "embedding"
    if method == "llm":
        return _classify_by_llm(table, column, described, provider, output_column, params, options, run, max_pixels)
    if not isinstance(provider, ImageEmbedder):
        raise NotSupportedError(provider, "classify_image(method='embedding')")
    if params is not None:
        raise ConfigError("classify_image: params are an LLM's sampling settings; method='embedding' takes none")
    task = ClassifyImageTask(column, provider, output_column, max_pixels)
    task.scorer = LabelScorer(list(described), label_vectors(described, provider, max_pixels), temperature)
    return run_task(table, task, options, run, prices=run.get("prices"))


def _classify_by_llm(table: Source, column: str, described: Mapping[str, LabelSpec], provider: Any,
                     output_column: str, params: PromptParams | None, options: RunOptions, run: RunArgs,
                     max_pixels: int) -> Enriched | EnrichedStream:
    if not isinstance(provider, Prompter):
        raise NotSupportedError(provider, "classify_image(method='llm')")
    examples = [label for label, spec in described.items() if not isinstance(spec, str)]
    if examples:
        raise ConfigError(f"classify_image(method='llm'): labels {examples} are example images; an LLM takes "
                          "labels by name or description")
    texts = {label: str(spec) for label, spec in described.items()}
    require_pillow()
    template: list[Part] = ["Classify this image.", ImageColumn(column)]
    task = llm_classifier(template, "image", texts, provider, output_column, None, params, options,
                          ClassifyImageLLMTask)
    task.image_column = column
    task.max_pixels = max_pixels
    return run_task(table, task, options, run, prices=run.get("prices") or prices_for(provider))
