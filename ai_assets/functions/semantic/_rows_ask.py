"""What the one-table semantic operators (filter, top-k, aggregate) share: a row's text, bounded; a batch of model
questions asked through ``prompt`` (so each is journalled by its request body and a failed one is that question's
error, never the call's); and their usage summed.

Retries: ``prompt``'s engine retries each request (``RunOptions.retry``) and re-asks an invalid structured answer;
these operators never retry on top of it. A question that used up its attempts comes back as an error, which the
operator turns into the error of the rows it was about.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel

from ai_assets.functions.prompt import PromptParams, prompt
from ai_assets.providers.protocols import Prompter
from ai_assets.runtime.columns import error_column
from ai_assets.runtime.engine import RunOptions
from ai_assets.runtime.errors import ConfigError
from ai_assets.runtime.run import RunArgs
from ai_assets.runtime.usage import COUNTERS, Usage

MAX_CHARS = 8000
"""The default bound on one row's text in a question (about 2,000 tokens): a longer text is cut, and the output
says which rows were cut."""
CUT_MARK = " […]"
SHOWN = 10
"""How many row numbers an error or warning names before it counts the rest."""


@dataclass(frozen=True)
class RowText:
    """A row's text as a question shows it: None for a null, NaN or empty value."""

    text: str | None
    cut: bool = False


def row_texts(table: pa.Table, column: str, max_chars: int, operator: str) -> list[RowText]:
    """The text of ``column`` in each row, each cut to ``max_chars`` characters (marked ``[…]``). A null, NaN
    or blank value has no text; a column of another type is read as text (numbers, dates)."""
    if column not in table.schema.names:
        raise ConfigError(f"{operator}: no column {column!r} (the columns are {table.schema.names})")
    if isinstance(max_chars, bool) or not isinstance(max_chars, int) or max_chars < 16:
        raise ConfigError(f"{operator}: max_chars must be an int >= 16, got {max_chars!r}")
    values = table.column(column)
    if not (pa.types.is_string(values.type) or pa.types.is_large_string(values.type)
            or pa.types.is_floating(values.type)):
        try:
            values = pc.cast(values, pa.string())
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as error:
            raise ConfigError(f"{operator}: column {column!r} is {values.type}, not text ({error})") from error
    out = []
    for value in values.to_pylist():
        if value is None or (isinstance(value, float) and math.isnan(value)):
            out.append(RowText(None))
            continue
        text = str(value)
        if not text.strip():
            out.append(RowText(None))
        elif len(text) > max_chars:
            out.append(RowText(text[:max_chars - len(CUT_MARK)] + CUT_MARK, cut=True))
        else:
            out.append(RowText(text))
    return out


def rows_named(rows: Sequence[int]) -> str:
    """``rows 3, 7, 9`` (at most ``SHOWN`` of them, then how many more)."""
    shown = ", ".join(str(r) for r in list(rows)[:SHOWN])
    more = f" and {len(rows) - SHOWN} more" if len(rows) > SHOWN else ""
    return f"row{'s' if len(rows) != 1 else ''} {shown}{more}"


def run_of(run: RunArgs) -> RunArgs:
    """The run of the operator's questions: failures are values (each question's error), and no progress or
    group column of the caller's table (the questions are another table)."""
    options = run.get("options") or RunOptions()
    return {**run, "options": replace(options, on_error="null"), "progress": None, "group_column": None}


def estimating(run: RunArgs) -> bool:
    """Whether the call only estimates (``mode="estimate"``): nothing is answered, so an operator that decides
    what to ask from earlier answers estimates from the questions it knows before any answer, scaled."""
    return (run.get("options") or RunOptions()).mode == "estimate"


SENT = ("sent_rows", "requests", "prompt_tokens", "completion_tokens", "cached_tokens", "cache_write_tokens",
        "reasoning_tokens")


def scale(usage: Usage, factor: float) -> None:
    """``usage``'s requests, rows sent and tokens times ``factor`` (the known questions' estimate stretched to the
    questions expected in all), marked an estimate."""
    for name in SENT:
        setattr(usage, name, round(getattr(usage, name) * factor))
    usage.estimated = True


def ask(questions: Sequence[str], *, system: str, answer: type[BaseModel] | None, provider: Prompter,
        params: PromptParams | None, run: RunArgs, usage: Usage) -> tuple[list[Any], list[str | None]]:
    """Each question's answer (a dict of ``answer``'s fields, or text) and error, in order; usage added to
    ``usage``. Identical questions are sent once (and never again while the journal holds the answer)."""
    if not questions:
        return [], []
    out = prompt(pa.table({"question": list(questions)}), "{question}", provider=provider, return_format=answer,
                 system_message=system, output_column="answer", params=params or PromptParams(temperature=0),
                 **run_of(run))
    add_usage(usage, out.usage)
    values = out.table.column("answer").to_pylist()
    errors = out.table.column(error_column("answer")).to_pylist()
    return values, [None if v is not None else (e or "no answer") for v, e in zip(values, errors, strict=True)]


def add_usage(total: Usage, part: Usage) -> None:
    """``part``'s counters and time added to ``total`` (rows: the questions asked)."""
    for name in COUNTERS:
        setattr(total, name, getattr(total, name) + getattr(part, name))
    total.elapsed_s += part.elapsed_s
    total.batch = total.batch or part.batch
    total.estimated = total.estimated or part.estimated
