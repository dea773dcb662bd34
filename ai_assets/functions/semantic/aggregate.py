"""``semantic_aggregate``: one answer over all the rows of a table, by a hierarchical map-reduce (LOTUS's
``sem_agg``, DocETL's ``reduce`` with a fold): pack the rows into groups that fit ``max_input_tokens``, ask the
model once per group, then pack the partial answers the same way and ask again, level by level, until one answer
is left.

Incremental by content. Rows are packed in row order, greedily, so rows appended at the end change only the last
group of each level; a group's request body is its rows' texts and the instruction, so the journal answers every
group it has seen (a re-run pays nothing; a re-run after appending rows pays about one request per level).

Bounded: a row's text is cut to fit a group (``max_chars``, and at most half the budget), and the output names the
rows cut; at most ``max_levels`` levels (a level must leave fewer partial answers, else the output says why it
stopped). A group whose request fails (after ``prompt``'s retries and re-asks) is an error naming its rows; the
other groups still fold, and the answer says it covers fewer rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Unpack

import pyarrow as pa

from ai_assets.functions.prompt import PromptParams
from ai_assets.functions.semantic._rows_ask import (
    CUT_MARK,
    MAX_CHARS,
    ask,
    estimating,
    row_texts,
    rows_named,
    scale,
)
from ai_assets.providers.protocols import Prompter
from ai_assets.runtime.columns import error_column
from ai_assets.runtime.dead_letter import FailedRows
from ai_assets.runtime.errors import ConfigError, bounded
from ai_assets.runtime.results import Enriched
from ai_assets.runtime.run import RunArgs
from ai_assets.runtime.tokens import CHARS_PER_TOKEN, text_tokens
from ai_assets.runtime.usage import Usage

MAX_INPUT_TOKENS = 8000
"""The default budget of one request's documents (the instruction and answer come on top)."""
MAX_LEVELS = 8
MAP = ("{instruction}\n\nApply the instruction to the documents below and answer it for them; your answer will be "
       "combined with answers for other documents.")
REDUCE = ("{instruction}\n\nBelow are partial answers, each for a part of the documents. Combine them into one "
          "answer to the instruction for all of them.")


@dataclass(frozen=True)
class _Part:
    """A text to fold and the input rows it covers."""

    text: str
    rows: tuple[int, ...]


def semantic_aggregate(table: pa.Table, column: str, instruction: str, *, provider: Prompter,
                       max_input_tokens: int = MAX_INPUT_TOKENS, max_levels: int = MAX_LEVELS,
                       max_chars: int = MAX_CHARS, output_column: str = "aggregate",
                       params: PromptParams | None = None, **run: Unpack[RunArgs]) -> Enriched:
    """One row: the answer to ``instruction`` over the texts in ``column`` of every row (``output_column``), and
    ``<output_column>_error`` (null, or which rows the answer does not cover and why), ``_rows`` (rows in the
    answer), ``_levels`` (levels folded), ``_failed_rows`` and ``_cut_rows`` (row numbers). An empty table (or
    one without any text) gives a null answer and says so.

        out = semantic_aggregate(reviews, "text", "What do customers complain about most?", provider=llm,
                                 cache=ResultCache("cache.sqlite"))
        out.table.column("aggregate")[0].as_py()
    """
    if not isinstance(instruction, str) or not instruction.strip():
        raise ConfigError("semantic_aggregate: give the instruction as a non-empty string")
    if isinstance(max_input_tokens, bool) or not isinstance(max_input_tokens, int) or max_input_tokens < 64:
        raise ConfigError(f"semantic_aggregate: max_input_tokens must be an int >= 64, got {max_input_tokens!r}")
    if isinstance(max_levels, bool) or not isinstance(max_levels, int) or max_levels < 1:
        raise ConfigError(f"semantic_aggregate: max_levels must be an int >= 1, got {max_levels!r}")
    half = min(max_chars, half_budget(max_input_tokens))  # a row fits with at least one other
    texts = row_texts(table, column, half, "semantic_aggregate")
    parts = [_Part(t.text, (i,)) for i, t in enumerate(texts) if t.text is not None]
    cut = [i for i, t in enumerate(texts) if t.cut]
    fold = _Fold(instruction, provider, params, run, max_input_tokens)
    problem: str | None = None if parts else "no rows with text to aggregate"
    level = 0
    if estimating(run) and parts:  # later levels fold answers not given yet
        fold.estimate(parts)
        parts, problem = [], "an estimate: nothing was sent"
    while len(parts) > 1 or (level == 0 and parts):
        if level == max_levels:
            problem = f"stopped after max_levels={max_levels} levels with {len(parts)} partial answers left"
            break
        before = len(parts)
        parts = fold.level(parts, first=level == 0)
        level += 1
        if 1 < before <= len(parts):  # each partial answer fills a request alone: folding again cannot converge
            problem = (f"level {level} left {len(parts)} partial answers, each over max_input_tokens="
                       f"{max_input_tokens} alone; stopped")
            break
    answer = parts[0].text if len(parts) == 1 and problem is None else None
    covered = sorted({r for p in parts for r in p.rows}) if answer is not None else []
    errors = [e for e in (problem, *fold.errors) if e]
    if cut:
        errors.append(f"{rows_named(cut)} cut to {half} characters (marked '{CUT_MARK.strip()}')")
    no_text = [i for i, t in enumerate(texts) if t.text is None]
    if no_text:
        errors.append(f"{rows_named(no_text)} without text (null, NaN or empty), not in the answer")
    fold.usage.rows, fold.usage.answered = table.num_rows, len(covered)  # counted in rows, as every function's
    fold.usage.skipped = len(no_text)
    if not fold.usage.estimated:  # rows with text the answer does not cover (an estimate answers none)
        fold.usage.errors = len(texts) - len(no_text) - len(covered)
    out = pa.table({
        output_column: pa.array([answer], pa.string()),
        error_column(output_column): pa.array(["; ".join(errors) or None], pa.string()),
        f"{output_column}_rows": pa.array([len(covered)], pa.int64()),
        f"{output_column}_levels": pa.array([level], pa.int32()),
        f"{output_column}_failed_rows": pa.array([sorted(fold.failed)], pa.list_(pa.int64())),
        f"{output_column}_cut_rows": pa.array([cut], pa.list_(pa.int64())),
    })
    return Enriched(out, fold.usage, _letters(table, fold.failed))


class _Fold:
    def __init__(self, instruction: str, provider: Prompter, params: PromptParams | None, run: RunArgs,
                 budget: int) -> None:
        self.instruction, self.provider, self.params, self.run, self.budget = (instruction, provider, params, run,
                                                                               budget)
        self.part_chars = half_budget(budget)
        self.usage = Usage()
        self.cut: list[tuple[int, ...]] = []
        self.failures: list[tuple[tuple[int, ...], str]] = []
        self.failed: dict[int, str] = {}

    @property
    def errors(self) -> list[str]:
        """What the answer lacks, one message per kind (not per group: a cell that grows with the rows is no
        message), each counting the groups and naming the rows (``rows_named`` bounds that)."""
        out = []
        if self.failures:
            rows = sorted({r for group, _ in self.failures for r in group})
            out.append(f"{rows_named(rows)} not in the answer: {len(self.failures)} group(s) failed, the first: "
                       f"{self.failures[0][1]}")
        if self.cut:
            rows = sorted({r for group in self.cut for r in group})
            out.append(f"{len(self.cut)} partial answer(s), for {rows_named(rows)}, cut to {self.part_chars} "
                       "characters")
        return out

    def estimate(self, parts: Sequence[_Part]) -> None:
        """What folding ``parts`` would send, into ``usage``: the first level's groups (known before any answer,
        estimated by ``prompt``), and as many requests again, no larger, for the levels above (a fold of g groups
        takes at most g - 1 more requests, each of partial answers cut to half a request)."""
        groups = pack(parts, self.budget)
        questions = ["\n\n".join(f"[{n + 1}]\n{p.text}" for n, p in enumerate(group)) for group in groups]
        ask(questions, system=MAP.format(instruction=self.instruction), answer=None, provider=self.provider,
            params=self.params, run=self.run, usage=self.usage)
        scale(self.usage, (2 * len(groups) - 1) / len(groups))

    def level(self, parts: Sequence[_Part], *, first: bool) -> list[_Part]:
        """One answer per group of ``parts`` (a failed group's rows go to ``failed``, its part is dropped)."""
        groups = pack(parts, self.budget)
        questions = ["\n\n".join(f"[{n + 1}]\n{p.text}" for n, p in enumerate(group)) for group in groups]
        system = (MAP if first else REDUCE).format(instruction=self.instruction)
        values, failures = ask(questions, system=system, answer=None, provider=self.provider, params=self.params,
                               run=self.run, usage=self.usage)
        out = []
        for group, value, error in zip(groups, values, failures, strict=True):
            rows = tuple(r for p in group for r in p.rows)
            if error is None and value and str(value).strip():
                text = str(value)
                if len(text) > self.part_chars:  # two partial answers always fit a request: each level shrinks
                    text = text[:self.part_chars - len(CUT_MARK)] + CUT_MARK
                    self.cut.append(rows)
                out.append(_Part(text, rows))
                continue
            why = bounded(error or "an empty answer")
            self.failures.append((rows, why))
            self.failed.update(dict.fromkeys(rows, why))
        return out


def half_budget(budget: int) -> int:
    """The characters of a text that fits a request of ``budget`` tokens with another as long (``pack``'s count)."""
    return max(16, (budget // 2 - 8) * CHARS_PER_TOKEN)


def pack(parts: Sequence[_Part], budget: int) -> list[list[_Part]]:
    """``parts`` in order, in groups of at most ``budget`` tokens (a part over it alone in its group), greedily:
    parts appended later change only the last group."""
    groups: list[list[_Part]] = []
    size = 0
    for part in parts:
        tokens = text_tokens(part.text) + 4
        if groups and size + tokens <= budget:
            groups[-1].append(part)
            size += tokens
        else:
            groups.append([part])
            size = tokens
    return groups


def _letters(table: pa.Table, failed: dict[int, str]) -> FailedRows:
    letters = FailedRows()
    rows = sorted(failed)
    if rows:
        batch = table.take(pa.array(rows, pa.int64())).combine_chunks().to_batches()[0]
        letters.add(batch, [failed[r] for r in rows], [None] * len(rows), [None] * len(rows))
    return letters
