"""``semantic_filter``: the rows for which a natural-language condition holds, by a yes/no verdict per row.

As LOTUS's ``sem_filter``, the result is the rows that pass (``drop=True``, the default); ``drop=False`` keeps
every row with its verdict (LOTUS's ``return_all=True``). Unlike LOTUS, a row whose verdict failed (the model down,
an answer that is no verdict after re-asks, a null or empty text) is never dropped silently: it stays, with a null
``keep`` and the reason in ``keep_error``, and is a dead letter, so a filter over a flaky endpoint loses no row
(with ``RunOptions(on_error="null")``; the default, ``"raise"``, fails the call on it, as for every function).

The verdict is a schema-constrained answer (``{"keep": bool}``) through ``prompt``, so every row's request is
journalled by its content: a re-run pays nothing, a new partition pays for its own rows. With a certified
``cascade`` (``Cascade([cheap, oracle], target=Recall(0.9), label_field="keep", confidence_field="confidence")``)
the cheap model answers every row with a confidence and the oracle only the rows it is not trusted on, with
the recall (or precision) guaranteed with probability ``1 - delta`` (see ``ai_assets.functions.certify``).
"""

from __future__ import annotations

from typing import Any, Unpack

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, Field

from ai_assets.functions.cascade import Cascade, model_column
from ai_assets.functions.prompt import PromptParams, prompt
from ai_assets.providers.protocols import Prompter
from ai_assets.runtime.columns import error_column
from ai_assets.runtime.errors import ConfigError
from ai_assets.runtime.results import Enriched, EnrichedStream, Source
from ai_assets.runtime.run import RunArgs

VERDICT = "__semantic_filter_verdict"


class Verdict(BaseModel):
    """Whether the row satisfies the condition."""

    keep: bool = Field(description="true if the text satisfies the condition, else false")


class ScoredVerdict(Verdict):
    """A verdict and how sure of it the model is (what a cascade's threshold is learned on)."""

    confidence: float = Field(description="how likely the verdict is right, from 0 to 1")


SYSTEM = ("Decide whether the text satisfies this condition: {condition}\n"
          "Answer keep=true if it does, keep=false if it does not.")


def semantic_filter(table: Source, column: str, condition: str, *, provider: Prompter, cascade: Cascade | None = None,
                    drop: bool = True, output_column: str = "keep", params: PromptParams | None = None,
                    **run: Unpack[RunArgs]) -> Enriched | EnrichedStream:
    """The rows whose ``column`` (a column name, or a template over columns such as ``"{title}: {abstract}"``)
    satisfies ``condition``, with ``output_column`` (the bool verdict) and ``<output_column>_error``. ``drop``:
    leave out the rows whose verdict is false (rows without a verdict always stay, with their error). ``cascade``:
    a cheap model first (see the module docstring); ``<output_column>_model`` then says which answered.

        kept = semantic_filter(reviews, "text", "the review mentions the battery", provider=llm,
                               options=RunOptions(on_error="null"))
    """
    if not isinstance(condition, str) or not condition.strip():
        raise ConfigError("semantic_filter: give the condition as a non-empty string")
    if not isinstance(column, str) or not column:
        raise ConfigError(f"semantic_filter: column must be a column name or a template, got {column!r}")
    template = column if "{" in column else "{" + column + "}"
    answer = Verdict if cascade is None else ScoredVerdict
    if cascade is not None and cascade.target is not None and cascade.label_field != "keep":
        raise ConfigError("semantic_filter: a certified cascade's label_field is the verdict, 'keep'; give "
                          "Cascade(..., label_field='keep', confidence_field='confidence')")
    out = prompt(table, template, provider=provider, return_format=answer, system_message=SYSTEM.format(
        condition=condition), output_column=VERDICT, params=params or PromptParams(temperature=0), cascade=cascade,
        **run)

    def shaped(rows: Any) -> Any:
        verdicts = rows.column(VERDICT).to_pylist()
        keep = pa.array([None if v is None else bool(v["keep"]) for v in verdicts], pa.bool_())
        made = {output_column: keep, error_column(output_column): rows.column(error_column(VERDICT))}
        if model_column(VERDICT) in rows.schema.names:
            made[model_column(output_column)] = rows.column(model_column(VERDICT))
        # a column of the input with an output's name (a filter chained on a filter) is replaced where it stands,
        # as set_columns does for every function; a stale <output>_model of an earlier cascade is left out
        ours = (VERDICT, error_column(VERDICT), model_column(VERDICT), model_column(output_column))
        names = [n for n in rows.schema.names if n not in ours or n in made]
        names += [n for n in made if n not in names]
        columns = [made[n] if n in made else rows.column(n) for n in names]
        result = type(rows).from_arrays(columns, names=names)
        return result.filter(pc.invert(pc.fill_null(pc.equal(keep, False), False))) if drop else result

    if isinstance(out, Enriched):
        return Enriched(shaped(out.table), out.usage, out.failed)
    stream = out
    return EnrichedStream((shaped(batch) for batch in stream), stream.usage, stream.failed)
