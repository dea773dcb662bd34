"""Estimates before running (``RunOptions(mode="estimate")``): read the input, count the rows the journal does
not answer, and estimate their tokens and cost, without calling the model.

Input tokens come from each request's text (about four characters a token, a few a message, a flat cost per image).
Output tokens come from history where there is some: every live run records in the journal what its answers
really cost against their estimate (``calibration:<family>``, one entry per kind of request: provider, model,
template, schema), and rows of the input the journal already answered carry their own tokens. The mean answer
length and the ratio of billed to estimated prompt tokens then correct the estimate of the rows still to send.
Without history, a structured answer is sized from its JSON schema and a free-text answer from its
``max_output_tokens`` (half of it) or 128 tokens.

The output has the task's columns, null, with ``not sent: estimate only`` as error, so an estimate can run through
the same assets (``python -m ai_assets.dagster.estimate``).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from ai_assets.runtime.calibration import CALIBRATION, Calibration
from ai_assets.runtime.columns import set_columns
from ai_assets.runtime.pipeline import Pipeline
from ai_assets.runtime.prefix_gate import CACHE_MIN_TOKENS, CACHE_STEP_TOKENS
from ai_assets.runtime.task import Prefix
from ai_assets.runtime.usage import Usage

NOT_SENT = "not sent: estimate only"
FREE_TEXT_TOKENS = 128


def schema_tokens(schema: Mapping[str, Any], root: Mapping[str, Any] | None = None, depth: int = 0) -> int:
    """About how many tokens a typical JSON value of ``schema`` takes."""
    root = root or schema
    if depth > 8:
        return 4
    if "$ref" in schema:
        node: Any = root
        for part in str(schema["$ref"]).removeprefix("#/").split("/"):
            node = node[part]
        return schema_tokens(node, root, depth + 1)
    for combinator in ("anyOf", "oneOf", "allOf"):
        if combinator in schema:
            options = [s for s in schema[combinator] if s.get("type") != "null"] or schema[combinator]
            return schema_tokens(options[0], root, depth + 1)
    if "enum" in schema or "const" in schema:
        return 2
    kind = schema.get("type", "object")
    if kind == "object":
        properties: Mapping[str, Any] = schema.get("properties", {})
        return 2 + sum(len(name) // 4 + 2 + schema_tokens(sub, root, depth + 1) for name, sub in properties.items())
    if kind == "array":
        items = max(int(schema.get("minItems", 0)), min(int(schema.get("maxItems", 2)), 2))
        return 2 + items * (1 + schema_tokens(schema.get("items", {"type": "string"}), root, depth + 1))
    if kind == "string":
        return min(int(schema.get("maxLength", 24)) // 4, 6) + 2
    return 2


@dataclass
class _Tally:
    """Estimated prompt tokens and requests still to send; what history showed for rows already answered."""

    prompt: int = 0
    cached: int = 0
    requests: int = 0
    known_estimate: int = 0
    known_billed_in: int = 0
    known_billed_out: int = 0
    known_rows: int = 0
    groups: dict[str, list[int]] = field(default_factory=dict)
    prefixes_seen: set[str] = field(default_factory=set)


class EstimateRun:
    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline
        self.task = pipeline.task
        self.tally = _Tally()
        self.history = Calibration()

    async def run(self, batches: AsyncIterator[pa.RecordBatch], schema: pa.Schema | None
                  ) -> AsyncIterator[pa.RecordBatch]:
        import asyncio

        self.pipeline.usage.estimated = True
        family = getattr(self.task, "family", lambda: None)()
        cache = self.pipeline.cache
        if family and cache is not None:
            stored = await asyncio.to_thread(cache.get_many, [CALIBRATION + family])
            self.history = Calibration().merged(stored[CALIBRATION + family].value if stored else None)
        offset = 0
        async for batch in batches:
            await self._window(batch, offset)
            offset += batch.num_rows
            columns = self.task.columns([None] * batch.num_rows, [NOT_SENT] * batch.num_rows, final=True) or {}
            yield set_columns(batch, columns)
        if offset == 0 and schema is not None:
            yield set_columns(pa.RecordBatch.from_pylist([], schema=schema),
                              self.task.columns([], [], final=True) or {})
        self._finish()

    async def _window(self, batch: pa.RecordBatch, offset: int) -> None:
        import asyncio

        window = self.pipeline._window(batch, offset)
        plan = window.plan
        first: dict[str, str] = {}
        for row, key in enumerate(plan.keys):
            if key is not None and key not in first:
                first[key] = window.groups[row] if window.groups else ""
        cache = self.pipeline.cache
        hits = await asyncio.to_thread(cache.get_many, list(first), include_errors=True) if cache else {}
        usage = self.pipeline.usage
        missing = []
        for key, group in first.items():
            known = self.pipeline.known_from_journal(hits.get(key))
            if known is None:
                missing.append(key)
                continue
            usage.cache_hits += 1
            if window.groups:
                usage.group(group).cache_hits += 1
            hit = hits[key]
            if known.ok and hit.tokens_in:
                self.tally.known_billed_in += hit.tokens_in
                self.tally.known_billed_out += hit.tokens_out
                self.tally.known_estimate += sum(j.cost.prompt for j in self.task.jobs([key], plan.payloads))
                self.tally.known_rows += 1
        usage.sent_rows += len(missing)
        for job in self.task.jobs(missing, plan.payloads):
            group = first[job.key]
            cached = self._cached(plan.prefixes.get(job.key))
            self.tally.prompt += job.cost.prompt
            self.tally.cached += cached
            self.tally.requests += 1
            counts = self.tally.groups.setdefault(group, [0, 0, 0, 0])
            counts[0] += job.cost.prompt
            counts[1] += 1
            counts[2] += len(job.keys or (job.key,))
            counts[3] += cached
            if window.groups:
                usage.group(group).sent_rows += len(job.keys or (job.key,))

    def _cached(self, prefix: Prefix | None) -> int:
        """The prompt tokens a row's request can expect from the provider's prompt cache, sent grouped by prefix:
        none for the first of its group, then the prefix in OpenAI's steps (1,024 tokens, then 128 more)."""
        if prefix is None or not self.pipeline.options.order_by_prefix:
            return 0
        if prefix.name not in self.tally.prefixes_seen:
            self.tally.prefixes_seen.add(prefix.name)
            return 0
        if prefix.tokens < CACHE_MIN_TOKENS:
            return 0
        return prefix.tokens - (prefix.tokens - CACHE_MIN_TOKENS) % CACHE_STEP_TOKENS

    def _finish(self) -> None:
        """Apply what history says (or the schema) to the rows still to send."""
        tally, history = self.tally, self.history
        estimated = tally.known_estimate + history.estimated_in
        billed_in = tally.known_billed_in + history.billed_in
        rows = tally.known_rows + history.rows
        ratio = billed_in / estimated if estimated else 1.0
        per_request = (tally.known_billed_out + history.billed_out) / rows if rows else self.task_output_tokens()
        usage = self.pipeline.usage
        usage.prompt_tokens += round(tally.prompt * ratio)
        usage.cached_tokens += min(round(tally.cached * ratio), round(tally.prompt * ratio))
        usage.completion_tokens += round(tally.requests * per_request)
        usage.requests += tally.requests
        for group, (prompt, requests, _, cached) in tally.groups.items():
            if self.pipeline.group_column:
                part: Usage = usage.group(group)
                part.prompt_tokens += round(prompt * ratio)
                part.cached_tokens += min(round(cached * ratio), round(prompt * ratio))
                part.completion_tokens += round(requests * per_request)
                part.requests += requests

    def task_output_tokens(self) -> float:
        expected = getattr(self.task, "expected_output_tokens", None)
        return float(expected()) if callable(expected) else 0.0


async def run_estimate(pipeline: Pipeline, batches: AsyncIterator[pa.RecordBatch],
                       schema: pa.Schema | None) -> AsyncIterator[pa.RecordBatch]:
    """Estimate mode: nothing is sent; every row is counted and priced."""
    started = time.perf_counter()
    async for out in EstimateRun(pipeline).run(batches, schema):
        yield out
    pipeline.usage.add_elapsed(time.perf_counter() - started)
