"""``embed_text``: one vector per row as ``fixed_size_list<float32>[d]``, from a local model or an HTTP endpoint.

Local and remote embedders take the same path through the runtime (a local model runs on a worker thread as the
engine's connection), so timeouts, retries, per-row errors and the journal apply to both.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, Unpack, overload

import pyarrow as pa

from ai_assets.functions.templates import check_output_column, column_texts
from ai_assets.providers.protocols import (
    BatchedEmbeddings,
    RemoteTextEmbedder,
    SharedLimit,
    TextEmbedder,
    dimension_of,
    with_batch_size,
    with_model,
)
from ai_assets.runtime.batch import BatchSupport
from ai_assets.runtime.cache import cache_key
from ai_assets.runtime.columns import error_column
from ai_assets.runtime.engine import Connection, Job, Outcome, RunOptions
from ai_assets.runtime.errors import NotSupportedError, ProviderError
from ai_assets.runtime.limits import TokenCost
from ai_assets.runtime.local import INPUTS, local_connection, split_items
from ai_assets.runtime.prices import prices_for
from ai_assets.runtime.ratelimit import RateLimit
from ai_assets.runtime.results import Enriched, EnrichedStream, Source
from ai_assets.runtime.run import RunArgs, run_task
from ai_assets.runtime.task import Plan
from ai_assets.runtime.tokens import text_tokens
from ai_assets.runtime.vectors import decode_vector, encode_vector, vectors_to_arrow

LOCAL_JOB = 2048  # texts per local model call: it sorts them by length and batches them itself
REMOTE_BATCH = 64  # inputs per embedding request when RunOptions.batch_size is not set


class VectorTask:
    """What every vector-producing task shares: the journal codec and the ``fixed_size_list`` output."""

    operation = "embeddings"  # gen_ai.operation.name in traces (runtime.telemetry)
    output_column: str
    dim: int | None
    max_concurrency: int | None

    def encode(self, value: Any) -> Any:
        return encode_vector(value)

    def decode(self, stored: Any) -> Any:
        return decode_vector(stored)

    def split(self, job: Job, outcome: Outcome) -> list[tuple[str, Outcome]]:
        return split_items(job, outcome)

    def retry_alone(self, outcome: Outcome) -> bool:
        """A local model's failed batch is run row by row; a remote batch only when the input was refused (a
        batch that met only transient failures would cost its rows' attempts many times over)."""
        return self.max_concurrency == 1 or not outcome.transient

    def vector_column(self, values: list[Any], *, final: bool) -> pa.Array | None:
        if self.dim is None:
            first = next((v for v in values if v is not None), None)
            if first is None:
                # No vector yet to give the dimension: the pipeline holds the window; at the end of a stream
                # with no vector at all, the column's size is unknown, so its type is a variable-size list.
                return pa.nulls(len(values), pa.list_(pa.float32())) if final else None
            self.dim = len(first)
        wrong = next((len(v) for v in values if v is not None and len(v) != self.dim), None)
        if wrong is not None:
            raise ProviderError(f"{self.output_column}: the provider returned a vector of size {wrong} after "
                                f"vectors of size {self.dim}; one column holds one size")
        return vectors_to_arrow(values, self.dim)

    def columns(self, values: list[Any], errors: list[str | None], *, final: bool) -> dict[str, pa.Array] | None:
        vectors = self.vector_column(values, final=final)
        if vectors is None:
            return None
        return {self.output_column: vectors, error_column(self.output_column): pa.array(errors, pa.string())}


class EmbedTextTask(VectorTask):
    def __init__(self, column: str, provider: TextEmbedder | RemoteTextEmbedder, output_column: str,
                 options: RunOptions) -> None:
        self.column = column
        self.provider = provider
        check_output_column(output_column, [column], type(self).__name__)
        self.output_column = output_column
        self.options = options
        self.local = isinstance(provider, TextEmbedder)
        if not self.local and not isinstance(provider, RemoteTextEmbedder):
            raise NotSupportedError(provider, "embed_text")
        if self.local:  # RunOptions.batch_size: texts per forward pass of a local model
            self.provider = provider = with_batch_size(provider, options.batch_size)
        self.identity = provider.identity() if isinstance(provider, TextEmbedder) else provider.embedding_identity()
        self.max_concurrency: int | None = 1 if self.local else None
        self.account: tuple[RateLimit, str] | None = \
            provider.account_limit() if not self.local and isinstance(provider, SharedLimit) else None
        self.dim = dimension_of(provider)

    def plan(self, batch: pa.RecordBatch) -> Plan:
        texts, skips = column_texts(batch, self.column)
        keys: list[str | None] = []
        payloads: dict[str, Any] = {}
        for text in texts:
            if text is None:
                keys.append(None)
                continue
            key = cache_key(self.identity, text)
            payloads[key] = text
            keys.append(key)
        return Plan(keys, skips, payloads)

    def jobs(self, keys: Sequence[str], payloads: Mapping[str, Any]) -> list[Job]:
        if isinstance(self.provider, TextEmbedder):
            size = max(LOCAL_JOB, self.options.batch_size or 0)
            return [Job(k[0], {INPUTS: [payloads[x] for x in k]}, keys=tuple(k)) for k in _chunks(keys, size)]
        provider = self.provider
        most = max(1, min(self.options.batch_size or REMOTE_BATCH, provider.max_inputs))
        jobs: list[Job] = []
        part: list[str] = []
        tokens = 0
        for key in keys:
            size = text_tokens(payloads[key])
            if part and (len(part) >= most or tokens + size > provider.max_request_tokens):
                jobs.append(self._remote_job(part, payloads, tokens))
                part, tokens = [], 0
            part.append(key)
            tokens += size
        if part:
            jobs.append(self._remote_job(part, payloads, tokens))
        return jobs

    def _remote_job(self, keys: list[str], payloads: Mapping[str, Any], tokens: int) -> Job:
        assert isinstance(self.provider, RemoteTextEmbedder)
        request = self.provider.embedding_request([payloads[k] for k in keys])
        return Job(keys[0], request, TokenCost(tokens), keys=tuple(keys))

    def batch_support(self) -> BatchSupport | None:
        """Batch mode for a remote embedder with a Batch API (a local model has nothing to batch)."""
        provider = self.provider
        if self.local or not isinstance(provider, BatchedEmbeddings):
            return None
        return BatchSupport("/v1/embeddings", provider.embedding_connection(),
                            functools.partial(provider.connect_batches, self.options.timeout_s))

    def connect(self) -> AbstractAsyncContextManager[Connection]:
        if isinstance(self.provider, TextEmbedder):
            embed = self.provider.embed_text
            return local_connection(lambda texts: list(embed(texts)), self.provider)
        return self.provider.connect_embeddings(self.options.concurrency, self.options.timeout_s)


def _chunks(keys: Sequence[str], size: int) -> list[Sequence[str]]:
    return [keys[i:i + size] for i in range(0, len(keys), size)]


@overload
def embed_text(table: pa.Table, column: str, *, provider: TextEmbedder | RemoteTextEmbedder,
               output_column: str = ..., **run: Unpack[RunArgs]) -> Enriched: ...


@overload
def embed_text(table: pa.RecordBatchReader | Sequence[pa.RecordBatch], column: str, *,  # type: ignore[overload-cannot-match]  # pa.* is Any here
               provider: TextEmbedder | RemoteTextEmbedder, output_column: str = ...,
               **run: Unpack[RunArgs]) -> EnrichedStream: ...


def embed_text(
    table: Source,
    column: str,
    *,
    provider: TextEmbedder | RemoteTextEmbedder,
    output_column: str = "embedding",
    **run: Unpack[RunArgs],
) -> Enriched | EnrichedStream:
    """Embed the text ``column`` and add ``output_column`` (``fixed_size_list<float32>[d]``) and its error column.

    Identical texts are embedded once; null or empty texts are not embedded and get a null vector with a reason.
    A table gives a table back, a reader a stream (see ``prompt``); ``run`` as for every AI function (``RunArgs``).
    """
    provider = with_model(provider, run.get("model"), "embedding")
    options = run.get("options") or RunOptions()
    task = EmbedTextTask(column, provider, output_column, options)
    identity = provider.embedding_identity() if isinstance(provider, RemoteTextEmbedder) else provider.identity()
    model = identity.get("model")
    prices = run.get("prices") or prices_for(provider, embeddings=not task.local)
    return run_task(table, task, options, run, prices=prices, model=None if model is None else str(model))
