"""``embed_image`` and ``classify_image``: image columns (encoded bytes) through a local image embedder.

``classify_image`` scores each image against label vectors with ``score_labels``, the path ``classify_text``
uses. A label is described by a text prompt (CLIP-class models embed text and images into one space) or by
example images (any image embedder, e.g. EfficientNet-Lite0): their mean embedding is the label's vector.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from ai_assets.functions._execution import Enriched, Progress, Record, append_columns, execute, run_sync
from ai_assets.functions.classify import CLASSIFICATION, score_labels
from ai_assets.functions.embed import vectors_to_arrow
from ai_assets.functions.images import open_image, require_pillow
from ai_assets.providers.protocols import ImageEmbedder, TextEmbedder
from ai_assets.runtime.cache import Cache, cache_key
from ai_assets.runtime.engine import Outcome
from ai_assets.runtime.errors import ConfigError, NotSupportedError, bounded
from ai_assets.runtime.usage import Usage

LabelSpec = str | bytes | Sequence[bytes]
DEFAULT_MAX_PIXELS = 50_000_000


def embed_image(
    table: pa.Table,
    column: str,
    *,
    provider: ImageEmbedder,
    output_column: str = "image_embedding",
    max_pixels: int = DEFAULT_MAX_PIXELS,
    cache: Cache | None = None,
    progress: Progress | None = None,
) -> Enriched:
    """Embed the encoded images in ``column``; undecodable images get a null vector and an error."""
    usage = Usage()
    values, errors = run_sync(lambda: _embed(table, column, provider, max_pixels, cache, usage, progress))
    return Enriched(append_columns(table, output_column, vectors_to_arrow(values), errors), usage)


async def _embed(table: pa.Table, column: str, provider: ImageEmbedder, max_pixels: int, cache: Cache | None,
                 usage: Usage, progress: Progress | None) -> tuple[list[Any], list[str | None]]:
    if not isinstance(provider, ImageEmbedder):
        raise NotSupportedError(provider, "embed_image")
    if column not in table.column_names:
        raise ConfigError(f"column {column!r} not in the table (columns: {table.column_names})")
    require_pillow()
    identity = provider.identity()
    data = table.column(column).to_pylist()
    keys: list[str | None] = []
    reasons: list[str | None] = []
    for value in data:
        if not value:
            keys.append(None)
            reasons.append(f"skipped: column {column!r} is null")
        else:
            keys.append(cache_key(identity, hashlib.sha256(value).hexdigest()))
            reasons.append(None)
    bytes_of = {k: v for k, v in zip(keys, data, strict=True) if k is not None}

    async def send(missing: list[str], record: Record) -> None:
        images, decoded = [], []
        for key in missing:
            try:
                images.append(open_image(bytes_of[key], max_pixels))
                decoded.append(key)
            except Exception as exc:  # corrupt, truncated or oversized: this row's error
                record(key, Outcome(error=bounded(f"{type(exc).__name__}: {exc}"), attempts=1))
        if decoded:
            matrix = provider.embed_image(images)
            usage.requests += 1
            for key, vector in zip(decoded, matrix, strict=True):
                record(key, Outcome(vector.tolist() if cache is not None else vector, attempts=1))

    results = await execute(keys, reasons, send, "null", cache, usage, progress)
    return results.values, results.errors


def label_vectors(labels: Mapping[str, LabelSpec], provider: ImageEmbedder,
                  max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray[Any, np.dtype[np.float32]]:
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
    table: pa.Table,
    column: str,
    labels: Sequence[str] | Mapping[str, LabelSpec],
    *,
    provider: ImageEmbedder,
    output_column: str = "image_class",
    temperature: float = 0.05,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    cache: Cache | None = None,
    progress: Progress | None = None,
) -> Enriched:
    """Label each image with one of ``labels``: ``["a phone", ...]``, ``{"phone": "a photo of a phone"}`` or
    ``{"phone": [example image bytes, ...]}``. Adds a ``{label, score}`` struct column."""
    described: dict[str, LabelSpec] = dict(labels) if isinstance(labels, Mapping) else {lbl: lbl for lbl in labels}
    if len(described) < 2:
        raise ConfigError(f"labels: give at least two labels, got {list(described)}")
    anchors = label_vectors(described, provider, max_pixels)
    usage = Usage()
    values, errors = run_sync(lambda: _embed(table, column, provider, max_pixels, cache, usage, progress))
    present = [i for i, v in enumerate(values) if v is not None]
    results: list[dict[str, Any] | None] = [None] * len(values)
    if present:
        best, scores = score_labels(np.asarray([values[i] for i in present], np.float32), anchors,
                                    list(described), temperature)
        for i, label, score in zip(present, best, scores, strict=True):
            results[i] = {"label": label, "score": score}
    return Enriched(append_columns(table, output_column, pa.array(results, CLASSIFICATION), errors), usage)
