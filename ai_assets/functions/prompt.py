"""``prompt``: one chat completion per row, plain text or a Pydantic ``return_format`` as an Arrow struct column."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
from pydantic import BaseModel

from ai_assets.functions._execution import Enriched, Progress, Record, append_columns, execute, run_sync, send_jobs
from ai_assets.functions.arrow_types import model_struct, to_python
from ai_assets.functions.templates import Part, render_content
from ai_assets.providers.protocols import Prompter
from ai_assets.runtime.cache import Cache, cache_key
from ai_assets.runtime.engine import Job, RunOptions
from ai_assets.runtime.errors import NotSupportedError
from ai_assets.runtime.tokens import estimate_tokens
from ai_assets.runtime.usage import Usage


@dataclass(frozen=True)
class PromptParams:
    """Generation settings passed through to the endpoint (and part of every cache key)."""

    temperature: float | None = None
    max_output_tokens: int | None = None
    extra_body: Mapping[str, Any] | None = None
    tools: list[dict[str, Any]] | None = None
    reasoning: Mapping[str, Any] | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    def as_request(self) -> dict[str, Any]:
        out = {"temperature": self.temperature, "max_output_tokens": self.max_output_tokens,
               "extra_body": dict(self.extra_body or {}), "tools": self.tools,
               "reasoning": dict(self.reasoning) if self.reasoning else None, **self.extra}
        return {k: v for k, v in out.items() if v not in (None, {}, [])}


def prompt(
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
) -> Enriched:
    """Prompt the model once per row and add ``output_column`` (+ ``<output_column>_error``) to ``table``.

    ``template`` is a ``str.format`` template over column names, or a list of such templates and
    ``ImageColumn("col")`` parts for a multimodal message. Rows with a null or empty input are not sent.
    With ``return_format`` the column is a struct with the model's (nested) fields; otherwise a string.

        >>> from ai_assets.testing import FakeOpenAIServer
        >>> with FakeOpenAIServer(in_process=True) as server:
        ...     llm = OpenAICompatibleProvider("any", base_url=server.base_url, api_key="unused")
        ...     out = prompt(pa.table({"q": ["2+2?"]}), "Answer: {q}", provider=llm)
        >>> out.table.column("response").to_pylist()
        ['Answer to: Answer: 2+2?']
    """
    return run_sync(lambda: aprompt(table, template, provider=provider, return_format=return_format,
                                    system_message=system_message, output_column=output_column, params=params,
                                    options=options, cache=cache, progress=progress))


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
) -> Enriched:
    """``prompt`` for code already inside an event loop."""
    if not isinstance(provider, Prompter):
        raise NotSupportedError(provider, "prompt")
    options = options or RunOptions()
    struct = model_struct(return_format) if return_format is not None else None  # fail before paying for rows
    request_params = (params or PromptParams()).as_request()
    contents, reasons = render_content(table, template)
    identity = provider.identity()
    requests: dict[str, dict[str, Any]] = {}
    keys: list[str | None] = []
    for content in contents:
        if content is None:
            keys.append(None)
            continue
        messages: list[dict[str, Any]] = [{"role": "user", "content": content}]
        if system_message:
            messages.insert(0, {"role": "system", "content": system_message})
        request = provider.chat_request(messages, return_format, request_params)
        key = cache_key(identity, request)
        requests[key] = request
        keys.append(key)
    max_out = request_params.get("max_output_tokens")

    usage = Usage()

    async def send(missing: list[str], record: Record) -> None:
        jobs = [Job(k, requests[k], estimate_tokens(requests[k]["messages"], max_out)) for k in missing]
        await send_jobs(jobs, lambda: provider.connect(return_format, options.concurrency, options.timeout_s),
                        options, usage, record)

    results = await execute(keys, reasons, send, options.on_error, cache, usage, progress,
                            retry_failed=options.retry_failed_rows)
    if return_format is None or struct is None:
        column = pa.array(results.values, pa.string())
    else:
        column = pa.array(
            [None if v is None else to_python(return_format.model_validate(v)) for v in results.values], struct)
    return Enriched(append_columns(table, output_column, column, results.errors), usage)
