"""One small Protocol per capability. A provider implements only what it serves: passing ``isinstance(p, X)`` is a
promise that the capability works.

Remote providers (HTTP) expose ``connect*()``: the engine in ``ai_assets.runtime`` then owns concurrency, limits,
retries and the journal. Local providers (a model in this process) expose plain batch methods, which the runtime
runs on a worker thread through the same engine.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

import numpy as np
from pydantic import BaseModel

from ai_assets.providers.messages import AudioPart, FilePart, ImagePart, Message, TextPart
from ai_assets.runtime.engine import Connection
from ai_assets.runtime.errors import ConfigError

if TYPE_CHECKING:
    from PIL.Image import Image

Matrix = np.ndarray[Any, np.dtype[np.float32]]
ModelRole = Literal["chat", "embedding", "transcription"]


@runtime_checkable
class Prompter(Protocol):
    """Chat completions, optionally structured by a Pydantic model. It receives provider-neutral ``Message``
    values (``ai_assets.providers.messages``) and writes them in its vendor's wire shape."""

    def identity(self) -> Mapping[str, Any]:
        """What decides an answer (provider, model, mode): part of every cache key."""
        ...

    def chat_request(
        self, messages: Sequence[Message], response_model: type[BaseModel] | None, params: Mapping[str, Any]
    ) -> dict[str, Any]:
        """The request body for one row, in the vendor's wire shape; it holds the whole input, schema and
        parameters, and its hash is the row's journal key, so the same messages must always give the same body.
        A part the vendor cannot send raises ``UnsupportedPartError`` (the row's error)."""
        ...

    def connect(
        self, response_model: type[BaseModel] | None, concurrency: int, timeout_s: float
    ) -> AbstractAsyncContextManager[Connection]: ...


@runtime_checkable
class Transcriber(Protocol):
    """Speech to text over HTTP (``/audio/transcriptions``): one recording a request."""

    transcription_model: str

    def transcription_identity(self) -> Mapping[str, Any]:
        """What decides a transcript (provider, model): part of every cache key."""
        ...

    def transcription_request(self, audio: bytes, filename: str, mime: str, language: str | None,
                              prompt: str | None) -> dict[str, Any]: ...

    def connect_transcriptions(self, concurrency: int, timeout_s: float) -> AbstractAsyncContextManager[Connection]:
        ...


@runtime_checkable
class RemoteTextEmbedder(Protocol):
    """Text embeddings over HTTP: one request embeds a batch of texts (at most ``max_inputs`` texts and
    ``max_request_tokens`` tokens)."""

    max_inputs: int
    max_request_tokens: int

    def embedding_identity(self) -> Mapping[str, Any]:
        """What decides a vector (provider, embedding model, dimensions): part of every cache key."""
        ...

    def embedding_request(self, texts: Sequence[str]) -> dict[str, Any]: ...

    def connect_embeddings(self, concurrency: int, timeout_s: float) -> AbstractAsyncContextManager[Connection]: ...


@runtime_checkable
class TextEmbedder(Protocol):
    """Text embeddings computed in this process."""

    def identity(self) -> Mapping[str, Any]: ...

    def embed_text(self, texts: Sequence[str]) -> Matrix:
        """A float32 matrix, one row per text."""
        ...


@runtime_checkable
class ImageEmbedder(Protocol):
    """Image embeddings computed in this process (CLIP-class models embed text into the same space)."""

    def identity(self) -> Mapping[str, Any]: ...

    def embed_image(self, images: Sequence[Image]) -> Matrix: ...


@runtime_checkable
class ModelSwitch(Protocol):
    """A provider that can answer with another model of the same endpoint (a per-asset or per-call model);
    ``role`` says which of its models a call uses (an OpenAI-compatible endpoint has a chat, an embedding and a
    transcription model)."""

    def with_model(self, model: str, role: ModelRole = "chat") -> Any: ...


@runtime_checkable
class PromptCaching(Protocol):
    """A chat endpoint that caches prompt prefixes and may be told which requests share one."""

    takes_prompt_cache_key: bool
    """Send ``prompt_cache_key`` (OpenAI's routing hint for a shared prefix) in each request body."""


@runtime_checkable
class CacheBreakpoints(Protocol):
    """A chat endpoint whose prompt cache is told, in the request body, where a shared prefix ends (Anthropic's
    ``cache_control``). The marker is part of the body, so of the journal key: the key names what was billed."""

    def mark_prefix(self, request: dict[str, Any], head: str) -> dict[str, Any]:
        """``request`` with a breakpoint after ``head``, the text every row of its prefix group starts with."""
        ...


@runtime_checkable
class SharedLimit(Protocol):
    """A provider paced by an account-wide rate limit (every process using the account shares it)."""

    def account_limit(self) -> Any:
        """``(RateLimit, account name)``, or None when the provider has no limit."""
        ...


@runtime_checkable
class BatchApi(Protocol):
    """A provider with a Batch API (files and batches): batch mode sends through it."""

    def connect_batches(self, timeout_s: float = ...) -> AbstractAsyncContextManager[Any]: ...


@runtime_checkable
class BatchedChat(BatchApi, Protocol):
    """Chat answers through the Batch API: a connection that only parses batch output lines."""

    def chat_connection(self, response_model: type[BaseModel] | None, session: Any = ..., api: Any = ...) -> Any: ...


@runtime_checkable
class BatchedEmbeddings(BatchApi, Protocol):
    """Embeddings through the Batch API: a connection that only parses batch output lines."""

    def embedding_connection(self, session: Any = ...) -> Any: ...


@runtime_checkable
class Loadable(Protocol):
    """A local model whose weights load before the first timed request."""

    def load(self) -> None: ...


def dimension_of(provider: object) -> int | None:
    """The vector size a provider promises, where it knows it before embedding anything."""
    value = getattr(provider, "dimension", None)
    return int(value) if isinstance(value, int) and value > 0 else None


def with_model(provider: Any, model: str | None, role: ModelRole | Literal["auto"] = "chat") -> Any:
    """``provider`` answering with ``model`` instead of its own (a per-asset model) in ``role``: its chat,
    embedding or transcription model; ``"auto"``: chat for a chat provider, else embedding (``classify_text``'s
    default method). Unchanged for None."""
    if model is None:
        return provider
    if role == "auto":
        role = "chat" if isinstance(provider, Prompter) else "embedding"
    if not isinstance(provider, ModelSwitch):
        from ai_assets.runtime.errors import NotSupportedError

        raise NotSupportedError(provider, f"model={model!r} (a per-call model)")
    return provider.with_model(model, role)


def with_batch_size(provider: Any, batch_size: int | None) -> Any:
    """A local model's ``provider`` running ``batch_size`` inputs per forward pass (a copy: the loaded model is
    shared); unchanged for None."""
    if batch_size is None:
        return provider
    if not isinstance(getattr(provider, "batch_size", None), int):
        from ai_assets.runtime.errors import NotSupportedError

        raise NotSupportedError(provider, f"RunOptions.batch_size={batch_size} (it has no batch_size to set)")
    import copy

    resized = copy.copy(provider)
    resized.batch_size = batch_size
    return resized


_NEUTRAL = (Message, TextPart, ImagePart, FilePart, AudioPart)
_MIGRATE = ("chat_request receives neutral Message values (ai_assets.providers.messages), no longer OpenAI-shaped "
            "dicts: read message.role and message.parts, or call ai_assets.providers.openai_messages."
            "openai_messages(messages) for the dicts (docs/providers.md, 'Writing a provider')")


def chat_request(provider: Prompter, messages: Sequence[Message], response_model: type[BaseModel] | None,
                 params: Mapping[str, Any]) -> dict[str, Any]:
    """``provider.chat_request(...)``, where a provider written for the OpenAI-dict contract (another package's,
    through the ``ai_assets.providers`` entry point) fails loudly, naming the provider and the fix: reading a
    ``Message`` as a dict (a ``TypeError``), or a body that carries ``Message`` values on (its journal key would
    be a hash of their repr, and the wire would get no JSON)."""
    try:
        request = provider.chat_request(messages, response_model, params)
    except (TypeError, AttributeError) as exc:
        if not any(f"'{kind.__name__}'" in str(exc) for kind in _NEUTRAL):
            raise
        raise ConfigError(f"provider {type(provider).__module__}.{type(provider).__qualname__} failed reading a "
                          f"message ({type(exc).__name__}: {exc}): {_MIGRATE}") from exc
    if _holds_neutral(request, 4):
        raise ConfigError(f"provider {type(provider).__module__}.{type(provider).__qualname__} put Message values "
                          f"in its request body, which must be plain JSON: {_MIGRATE}")
    return request


def _holds_neutral(value: Any, depth: int) -> bool:
    """Whether ``value`` holds a neutral message or part within ``depth`` levels (a walk over containers, not
    bytes: cheap for any body)."""
    if isinstance(value, _NEUTRAL):
        return True
    if depth == 0 or isinstance(value, str | bytes):
        return False
    items = value.values() if isinstance(value, Mapping) else value if isinstance(value, list | tuple) else ()
    return any(_holds_neutral(item, depth - 1) for item in items)
