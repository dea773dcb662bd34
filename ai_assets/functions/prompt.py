"""``prompt``: one chat completion per row, plain text or a Pydantic ``return_format`` as an Arrow struct column."""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any, Literal, overload

import pyarrow as pa
from pydantic import BaseModel

from ai_assets.functions.arrow_types import model_struct, to_python
from ai_assets.functions.cascade import Cascade, run_cascade
from ai_assets.functions.templates import Part, check_output_column, check_template, prefix_texts, render_content
from ai_assets.providers.protocols import BatchedChat, PromptCaching, Prompter, SharedLimit, with_model
from ai_assets.runtime.batch import BatchSupport
from ai_assets.runtime.cache import Cache, cache_key
from ai_assets.runtime.columns import error_column
from ai_assets.runtime.engine import Connection, Job, RunOptions
from ai_assets.runtime.errors import ConfigError, NotSupportedError
from ai_assets.runtime.estimate import FREE_TEXT_TOKENS, schema_tokens
from ai_assets.runtime.pipeline import Pipeline
from ai_assets.runtime.prices import prices_for
from ai_assets.runtime.ratelimit import RateLimit
from ai_assets.runtime.results import Enriched, EnrichedStream, Source
from ai_assets.runtime.run import arun_table, run_pipeline
from ai_assets.runtime.task import OneRowJobs, Plan, Prefix, Progress
from ai_assets.runtime.tokens import estimate_cost, request_messages, text_tokens
from ai_assets.runtime.usage import Prices


@dataclass(frozen=True)
class PromptParams:
    """Generation settings passed through to the endpoint (and part of every cache key).

    ``max_output_tokens`` becomes ``max_tokens`` or ``max_completion_tokens`` as the endpoint wants; ``reasoning``
    (``{"effort": "low"}``) becomes ``reasoning_effort``; ``tools`` are passed through (not with ``return_format``
    in TOOLS mode, which would force the schema's tool); ``extra_body`` merges into the request body."""

    temperature: float | None = None
    max_output_tokens: int | None = None
    api: Literal["chat", "responses"] | None = None
    """Chat Completions or the Responses API for this call (default: the provider's)."""
    extra_body: Mapping[str, Any] | None = None
    tools: list[dict[str, Any]] | None = None
    reasoning: Mapping[str, Any] | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    def as_request(self) -> dict[str, Any]:
        out = {"temperature": self.temperature, "max_output_tokens": self.max_output_tokens, "api": self.api,
               "extra_body": dict(self.extra_body or {}), "tools": self.tools,
               "reasoning": dict(self.reasoning) if self.reasoning else None, **self.extra}
        return {k: v for k, v in out.items() if v not in (None, {}, [])}


def prefix_of(system_message: str | None, head: str | None) -> Prefix:
    """The prompt prefix a row starts with, named by a hash (its ``prompt_cache_key``)."""
    digest = hashlib.sha256(f"{system_message or ''}\x00{head or ''}".encode()).hexdigest()
    return Prefix(f"ai_assets-{digest[:24]}", text_tokens(system_message or "") + text_tokens(head or ""))


class PromptTask(OneRowJobs):
    """One chat request per row, keyed by the provider's identity and the whole request."""

    max_concurrency: int | None = None

    def __init__(self, template: str | Sequence[Part], provider: Prompter, return_format: type[BaseModel] | None,
                 system_message: str | None, output_column: str, params: PromptParams, options: RunOptions) -> None:
        self.template = template
        self.provider = provider
        self.return_format = return_format
        self.struct = model_struct(return_format) if return_format is not None else None  # fails before paying
        self.system_message = system_message
        check_output_column(output_column, check_template(template), "prompt")
        self.output_column = output_column
        self.request_params = params.as_request()
        self.options = options
        self.identity = provider.identity()
        self.account: tuple[RateLimit, str] | None = \
            provider.account_limit() if isinstance(provider, SharedLimit) else None
        self.by_prefix = options.order_by_prefix
        self.cache_key_on_wire = isinstance(provider, PromptCaching) and provider.takes_prompt_cache_key

    def plan(self, batch: pa.RecordBatch) -> Plan:
        contents, skips = render_content(batch, self.template)
        heads = prefix_texts(batch, self.template) if self.by_prefix else [None] * len(contents)
        keys: list[str | None] = []
        payloads: dict[str, Any] = {}
        prefixes: dict[str, Prefix] = {}
        for content, head in zip(contents, heads, strict=True):
            if content is None:
                keys.append(None)
                continue
            messages: list[dict[str, Any]] = [{"role": "user", "content": content}]
            if self.system_message:
                messages.insert(0, {"role": "system", "content": self.system_message})
            request = self.provider.chat_request(messages, self.return_format, self.request_params)
            key = cache_key(self.identity, request)
            if self.by_prefix:
                prefix = prefixes[key] = prefix_of(self.system_message, head)
                if self.cache_key_on_wire:  # after the journal key: a routing hint, not part of the answer
                    request = {**request, "prompt_cache_key": prefix.name}
            payloads[key] = request
            keys.append(key)
        return Plan(keys, skips, payloads, prefixes)

    def jobs(self, keys: Sequence[str], payloads: Mapping[str, Any]) -> list[Job]:
        max_out = self.request_params.get("max_output_tokens")
        return [Job(k, payloads[k], estimate_cost(request_messages(payloads[k]), max_out)) for k in keys]

    def columns(self, values: list[Any], errors: list[str | None], *, final: bool) -> dict[str, pa.Array]:
        if self.return_format is None or self.struct is None:
            column = pa.array(values, pa.string())
        else:
            model = self.return_format
            column = pa.array([None if v is None else to_python(model.model_validate(v)) for v in values],
                              self.struct)
        return {self.output_column: column, error_column(self.output_column): pa.array(errors, pa.string())}

    def family(self) -> str:
        """What makes two requests the same kind (all but the row's content): the estimate's calibration key."""
        schema = self.return_format.model_json_schema() if self.return_format is not None else None
        return cache_key(self.identity, {"template": repr(self.template), "system": self.system_message,
                                         "schema": schema, "params": self.request_params})

    def expected_output_tokens(self) -> float:
        """An answer's tokens before any history: sized from the schema, or half the output cap, or 128."""
        if self.return_format is not None:
            return float(schema_tokens(self.return_format.model_json_schema()))
        cap = self.request_params.get("max_output_tokens")
        return cap / 2 if cap else float(FREE_TEXT_TOKENS)

    def batch_support(self) -> BatchSupport | None:
        """Batch mode over the provider's Batch API (OpenAI-compatible endpoints that have one)."""
        provider = self.provider
        if not isinstance(provider, BatchedChat):
            return None
        api = self.request_params.get("api") or getattr(provider, "api", "chat")
        endpoint = "/v1/responses" if api == "responses" else "/v1/chat/completions"
        return BatchSupport(endpoint, provider.chat_connection(self.return_format, None, api),
                            functools.partial(provider.connect_batches, self.options.timeout_s))  # per control call

    def connect(self) -> AbstractAsyncContextManager[Connection]:
        api = self.request_params.get("api")
        if api is None:
            return self.provider.connect(self.return_format, self.options.concurrency, self.options.timeout_s)
        connect: Any = self.provider.connect  # providers that serve several APIs take api=
        return connect(self.return_format, self.options.concurrency, self.options.timeout_s, api=api)  # type: ignore[no-any-return]


@overload
def prompt(table: pa.Table, template: str | Sequence[Part], *, provider: Prompter,
           return_format: type[BaseModel] | None = ..., system_message: str | None = ..., output_column: str = ...,
           params: PromptParams | None = ..., options: RunOptions | None = ..., cache: Cache | None = ...,
           progress: Progress | None = ..., model: str | None = ..., prices: Prices | None = ...,
           run_id: str | None = ..., group_column: str | None = ..., cascade: Cascade | None = ...) -> Enriched: ...


@overload
def prompt(table: pa.RecordBatchReader | Sequence[pa.RecordBatch], template: str | Sequence[Part], *,  # type: ignore[overload-cannot-match]  # pa.* is Any here
           provider: Prompter, return_format: type[BaseModel] | None = ..., system_message: str | None = ...,
           output_column: str = ..., params: PromptParams | None = ..., options: RunOptions | None = ...,
           cache: Cache | None = ..., progress: Progress | None = ..., model: str | None = ...,
           prices: Prices | None = ..., run_id: str | None = ...,
           group_column: str | None = ..., cascade: Cascade | None = ...) -> EnrichedStream: ...


def prompt(
    table: Source,
    template: str | Sequence[Part],
    *,
    provider: Prompter,
    return_format: type[BaseModel] | None = None,
    system_message: str | None = None,
    output_column: str = "response",
    params: PromptParams | None = None,
    options: RunOptions | None = None,
    cache: Cache | None = None,
    progress: Progress | None = None,
    model: str | None = None,
    prices: Prices | None = None,
    run_id: str | None = None,
    group_column: str | None = None,
    cascade: Cascade | None = None,
) -> Enriched | EnrichedStream:
    """Prompt the model once per row and add ``output_column`` (+ ``<output_column>_error``).

    ``table`` is a ``pyarrow.Table`` (a table comes back) or a ``RecordBatchReader`` / iterable of record batches
    (a stream comes back, computed window by window in bounded memory). ``template`` is a ``str.format`` template
    over column names, or a list of such templates and ``ImageColumn("col")`` parts for a multimodal message. Rows
    with a null or empty input are not sent. With ``return_format`` the column is a struct with the model's
    (nested) fields; otherwise a string. ``model`` overrides the provider's model for this call. ``cache`` is the
    journal: answers in it are never paid for again. ``cascade`` sends every row to its cheapest model first and
    only the rows it fails or does not trust to the next (see ``ai_assets.functions.cascade``); the output then
    says which model answered (``<output_column>_model``).

        >>> from ai_assets.testing import FakeOpenAIServer
        >>> with FakeOpenAIServer(in_process=True) as server:
        ...     llm = OpenAICompatibleProvider("any", base_url=server.base_url, api_key="unused")
        ...     out = prompt(pa.table({"q": ["2+2?"]}), "Answer: {q}", provider=llm)
        >>> out.table.column("response").to_pylist()
        ['Answer to: Answer: 2+2?']
    """
    if cascade is not None:
        if model is not None:
            raise ConfigError("prompt: give model= or cascade=, not both (a cascade names its models)")
        return _cascade(table, cascade, template, provider, return_format, system_message, output_column, params,
                        options or RunOptions(), cache, progress, prices, run_id, group_column)
    pipeline = _pipeline(template, provider, return_format, system_message, output_column, params, options, cache,
                         progress, model, prices, run_id, group_column)
    return run_pipeline(table, pipeline)


def _cascade(table: Source, cascade: Cascade, template: str | Sequence[Part], provider: Prompter,
             return_format: type[BaseModel] | None, system_message: str | None, output_column: str,
             params: PromptParams | None, options: RunOptions, cache: Cache | None, progress: Progress | None,
             prices: Prices | None, run_id: str | None, group_column: str | None) -> Enriched | EnrichedStream:
    cascade.check(return_format)

    def prices_of(model: str) -> Prices | None:
        return cascade.prices.get(model) or prices or prices_for(with_model(provider, model))

    def stage(rows: Source, model: str, stage_options: RunOptions) -> Enriched | EnrichedStream:
        pipeline = _pipeline(template, provider, return_format, system_message, output_column, params,
                             stage_options, cache, progress if model == cascade.models[0] else None, model,
                             prices_of(model), run_id, group_column)
        return run_pipeline(rows, pipeline)

    return run_cascade(table, cascade, stage, output_column=output_column, options=options,
                       skipped=lambda batch: [s is not None for s in render_content(batch, template)[1]],
                       prices_of=prices_of, group_column=group_column)


async def aprompt(
    table: pa.Table,
    template: str | Sequence[Part],
    *,
    provider: Prompter,
    return_format: type[BaseModel] | None = None,
    system_message: str | None = None,
    output_column: str = "response",
    params: PromptParams | None = None,
    options: RunOptions | None = None,
    cache: Cache | None = None,
    progress: Progress | None = None,
    model: str | None = None,
    prices: Prices | None = None,
) -> Enriched:
    """``prompt`` of a table for code already inside an event loop."""
    pipeline = _pipeline(template, provider, return_format, system_message, output_column, params, options, cache,
                         progress, model, prices, None, None)
    return await arun_table(table, pipeline)


def _pipeline(template: str | Sequence[Part], provider: Prompter, return_format: type[BaseModel] | None,
              system_message: str | None, output_column: str, params: PromptParams | None,
              options: RunOptions | None, cache: Cache | None, progress: Progress | None, model: str | None,
              prices: Prices | None, run_id: str | None, group_column: str | None) -> Pipeline:
    provider = with_model(provider, model)
    if not isinstance(provider, Prompter):
        raise NotSupportedError(provider, "prompt")
    options = options or RunOptions()
    task = PromptTask(template, provider, return_format, system_message, output_column, params or PromptParams(),
                      options)
    return Pipeline(task, options, cache, run_id=run_id, progress=progress, group_column=group_column,
                    prices=prices or prices_for(provider), model=_model_name(task.identity))


def _model_name(identity: Mapping[str, Any]) -> str | None:
    model = identity.get("model")
    return None if model is None else str(model)
