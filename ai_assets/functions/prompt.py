"""``prompt``: one chat completion per row, plain text or a Pydantic ``return_format`` as an Arrow struct column."""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any, Literal, Unpack, overload

import pyarrow as pa
from pydantic import BaseModel

from ai_assets.functions.arrow_types import model_struct, to_python
from ai_assets.functions.cascade import Cascade, run_cascade
from ai_assets.functions.certify import run_certified
from ai_assets.functions.templates import (
    FileColumn,
    ImageColumn,
    Part,
    check_output_column,
    check_template,
    prefix_texts,
    render_content,
)
from ai_assets.providers.messages import Message, PartError
from ai_assets.providers.protocols import (
    BatchedChat,
    CacheBreakpoints,
    PromptCaching,
    Prompter,
    SharedLimit,
    chat_request,
    with_model,
)
from ai_assets.runtime.batch import BatchSupport
from ai_assets.runtime.cache import cache_key
from ai_assets.runtime.columns import error_column
from ai_assets.runtime.engine import Connection, Job, RunOptions
from ai_assets.runtime.errors import ConfigError, NotSupportedError, Skip, SkipKind
from ai_assets.runtime.estimate import FREE_TEXT_TOKENS, schema_tokens
from ai_assets.runtime.pipeline import Pipeline
from ai_assets.runtime.prices import prices_for
from ai_assets.runtime.ratelimit import RateLimit
from ai_assets.runtime.results import Enriched, EnrichedStream, Source
from ai_assets.runtime.run import RunArgs, arun_table, run_pipeline
from ai_assets.runtime.task import OneRowJobs, Plan, Prefix
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

    operation = "chat"  # gen_ai.operation.name in traces (runtime.telemetry)
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
        for row, (content, head) in enumerate(zip(contents, heads, strict=True)):
            if content is None:
                keys.append(None)
                continue
            messages = [Message.system(self.system_message)] if self.system_message else []
            messages.append(Message.user(content) if isinstance(content, str) else Message("user", content))
            try:
                request = chat_request(self.provider, messages, self.return_format, self.request_params)
            except PartError as exc:  # audio to Anthropic, a file to llama.cpp, a bad data: URL: this row's error
                keys.append(None)
                user = exc.message_index == len(messages) - 1
                skips[row] = Skip(SkipKind.UNREADABLE, self._column_of(exc.part_index) if user else None, str(exc))
                continue
            if head and self.by_prefix and isinstance(self.provider, CacheBreakpoints):
                request = self.provider.mark_prefix(request, head)  # before the key: the marker is in the body
            key = cache_key(self.identity, request)
            if self.by_prefix:
                prefix = prefixes[key] = prefix_of(self.system_message, head)
                if self.cache_key_on_wire:  # after the journal key: a routing hint, not part of the answer
                    request = {**request, "prompt_cache_key": prefix.name}
            payloads[key] = request
            keys.append(key)
        return Plan(keys, skips, payloads, prefixes)

    def _column_of(self, part: int) -> str | None:
        """The column a user message's part came from (one part per template part)."""
        piece = self.template[part] if not isinstance(self.template, str) and part < len(self.template) else None
        return piece.column if isinstance(piece, ImageColumn | FileColumn) else None

    def jobs(self, keys: Sequence[str], payloads: Mapping[str, Any]) -> list[Job]:
        max_out = self.request_params.get("max_output_tokens")
        return [Job(k, payloads[k], estimate_cost(request_messages(payloads[k]), max_out)) for k in keys]

    def columns(self, values: list[Any], errors: list[str | None], *, final: bool) -> dict[str, pa.Array]:
        answerers = None
        if getattr(self.provider, "names_answerer", False):  # a Failover: each answer names who gave it
            answerers = pa.array([None if v is None else v["provider"] for v in values], pa.string())
            values = [None if v is None else v["answer"] for v in values]
        if self.return_format is None or self.struct is None:
            column = pa.array(values, pa.string())
        else:
            model = self.return_format
            column = pa.array([None if v is None else to_python(model.model_validate(v)) for v in values],
                              self.struct)
        out = {self.output_column: column, error_column(self.output_column): pa.array(errors, pa.string())}
        if answerers is not None:
            out[f"{self.output_column}_provider"] = answerers
        return out

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
           params: PromptParams | None = ..., cascade: Cascade | None = ..., **run: Unpack[RunArgs]) -> Enriched: ...


@overload
def prompt(table: pa.RecordBatchReader | Sequence[pa.RecordBatch], template: str | Sequence[Part], *,  # type: ignore[overload-cannot-match]  # pa.* is Any here
           provider: Prompter, return_format: type[BaseModel] | None = ..., system_message: str | None = ...,
           output_column: str = ..., params: PromptParams | None = ..., cascade: Cascade | None = ...,
           **run: Unpack[RunArgs]) -> EnrichedStream: ...


def prompt(
    table: Source,
    template: str | Sequence[Part],
    *,
    provider: Prompter,
    return_format: type[BaseModel] | None = None,
    system_message: str | None = None,
    output_column: str = "response",
    params: PromptParams | None = None,
    cascade: Cascade | None = None,
    **run: Unpack[RunArgs],
) -> Enriched | EnrichedStream:
    """Prompt the model once per row and add ``output_column`` (+ ``<output_column>_error``).

    ``table`` is a ``pyarrow.Table`` (a table comes back) or a ``RecordBatchReader`` / iterable of record batches
    (a stream comes back, computed window by window in bounded memory). ``template`` is a ``str.format`` template
    over column names, or a list of such templates and ``ImageColumn("col")`` parts for a multimodal message. Rows
    with a null or empty input are not sent. With ``return_format`` the column is a struct with the model's
    (nested) fields; otherwise a string. ``cascade`` sends every row to its cheapest model first and only the rows
    it fails or does not trust to the next (see ``ai_assets.functions.cascade``); the output then says which model
    answered (``<output_column>_model``). ``run`` are the keywords every AI function takes (``RunArgs``: options,
    the ``cache`` journal whose answers are never paid for again, ``model`` for this call, prices, ...).

        >>> from ai_assets.testing import FakeOpenAIServer
        >>> with FakeOpenAIServer(in_process=True) as server:
        ...     llm = OpenAICompatibleProvider("any", base_url=server.base_url, api_key="unused")
        ...     out = prompt(pa.table({"q": ["2+2?"]}), "Answer: {q}", provider=llm)
        >>> out.table.column("response").to_pylist()
        ['Answer to: Answer: 2+2?']
    """
    request = _Request(template, return_format, system_message, output_column, params or PromptParams())
    if cascade is None:
        return run_pipeline(table, request.pipeline(provider, run))
    if run.get("model") is not None:
        raise ConfigError("prompt: give model= or cascade=, not both (a cascade names its models)")
    return _cascade(table, cascade, request, provider, run)


@dataclass(frozen=True)
class _Request:
    """What a prompt call asks, whichever model answers it."""

    template: str | Sequence[Part]
    return_format: type[BaseModel] | None
    system_message: str | None
    output_column: str
    params: PromptParams

    def pipeline(self, provider: Prompter, run: RunArgs) -> Pipeline:
        provider = with_model(provider, run.get("model"))
        if not isinstance(provider, Prompter):
            raise NotSupportedError(provider, "prompt")
        options = run.get("options") or RunOptions()
        task = PromptTask(self.template, provider, self.return_format, self.system_message, self.output_column,
                          self.params, options)
        return Pipeline(task, options, run.get("cache"), run_id=run.get("run_id"), progress=run.get("progress"),
                        group_column=run.get("group_column"), prices=run.get("prices") or prices_for(provider),
                        model=_model_name(task.identity))


def _cascade(table: Source, cascade: Cascade, request: _Request, provider: Prompter,
             run: RunArgs) -> Enriched | EnrichedStream:
    cascade.check(request.return_format)
    prices = run.get("prices")

    def prices_of(model: str) -> Prices | None:
        return cascade.prices.get(model) or prices or prices_for(with_model(provider, model))

    def stage(rows: Source, model: str, stage_options: RunOptions) -> Enriched | EnrichedStream:
        first = model == cascade.models[0]
        stage_run: RunArgs = {**run, "options": stage_options, "model": model, "prices": prices_of(model),
                              "progress": run.get("progress") if first else None}
        return run_pipeline(rows, request.pipeline(provider, stage_run))

    def skipped(batch: pa.RecordBatch) -> list[bool]:
        return [s is not None for s in render_content(batch, request.template)[1]]

    def family(model: str) -> str:  # what the learned threshold of a certified cascade is kept under
        task = request.pipeline(provider, {**run, "model": model}).task
        return task.family() if isinstance(task, PromptTask) else model

    options = run.get("options") or RunOptions()
    if cascade.target is not None and options.mode != "estimate":  # estimate: every row for every model
        return run_certified(table, cascade, stage, output_column=request.output_column, options=options,
                             skipped=skipped, prices_of=prices_of, family=family, cache=run.get("cache"),
                             group_column=run.get("group_column"))
    return run_cascade(table, cascade, stage, output_column=request.output_column, options=options,
                       skipped=skipped, prices_of=prices_of, group_column=run.get("group_column"))


async def aprompt(
    table: pa.Table,
    template: str | Sequence[Part],
    *,
    provider: Prompter,
    return_format: type[BaseModel] | None = None,
    system_message: str | None = None,
    output_column: str = "response",
    params: PromptParams | None = None,
    **run: Unpack[RunArgs],
) -> Enriched:
    """``prompt`` of a table for code already inside an event loop."""
    request = _Request(template, return_format, system_message, output_column, params or PromptParams())
    return await arun_table(table, request.pipeline(provider, run))


def _model_name(identity: Mapping[str, Any]) -> str | None:
    model = identity.get("model")
    return None if model is None else str(model)
