"""One small Protocol per capability. A provider implements only what it supports.

Remote providers (HTTP) expose ``connect()``: the engine in ``ai_assets.runtime`` then owns concurrency, limits,
retries and caching. Local providers (a model in this process) expose plain batch methods.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np
from pydantic import BaseModel

from ai_assets.runtime.engine import Connection

if TYPE_CHECKING:
    from PIL.Image import Image


@runtime_checkable
class Prompter(Protocol):
    """Chat completions, optionally structured by a Pydantic model."""

    def identity(self) -> Mapping[str, Any]:
        """What decides an answer (provider, model, mode): part of every cache key."""
        ...

    def chat_request(
        self, messages: list[dict[str, Any]], response_model: type[BaseModel] | None, params: Mapping[str, Any]
    ) -> dict[str, Any]:
        """The request body for one row; it holds the whole input, schema and parameters."""
        ...

    def connect(
        self, response_model: type[BaseModel] | None, concurrency: int, timeout_s: float
    ) -> AbstractAsyncContextManager[Connection]: ...


@runtime_checkable
class RemoteTextEmbedder(Protocol):
    """Text embeddings over HTTP: one request embeds a batch of texts."""

    def embedding_identity(self) -> Mapping[str, Any]:
        """What decides a vector (provider, embedding model, dimensions): part of every cache key."""
        ...

    def embedding_request(self, texts: Sequence[str]) -> dict[str, Any]: ...

    def connect_embeddings(self, concurrency: int, timeout_s: float) -> AbstractAsyncContextManager[Connection]: ...


@runtime_checkable
class TextEmbedder(Protocol):
    """Text embeddings computed in this process."""

    def identity(self) -> Mapping[str, Any]: ...

    def embed_text(self, texts: Sequence[str]) -> np.ndarray[Any, np.dtype[np.float32]]:
        """A float32 matrix, one row per text."""
        ...


@runtime_checkable
class ImageEmbedder(Protocol):
    """Image embeddings computed in this process (CLIP-class models embed text into the same space)."""

    def identity(self) -> Mapping[str, Any]: ...

    def embed_image(self, images: Sequence[Image]) -> np.ndarray[Any, np.dtype[np.float32]]: ...
