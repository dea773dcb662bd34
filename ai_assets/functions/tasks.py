"""Task functions: the AI functions users of Databricks' ``ai_*`` family and Daft look for, each a thin layer over
``prompt`` (or ``embed_text``) with a default prompt, a structured answer, and a documented Arrow type.

* ``extract``: the text and the fields wanted (names, descriptions, or a model) -> a struct of the fields, null
  where the text does not give one;
* ``summarize``: the text and a length bound -> string of at most ``max_words`` words;
* ``translate``: the text and the target language -> string;
* ``analyze_sentiment``: the text -> string, one of positive / negative / neutral / mixed;
* ``mask``: the text and the kinds of entity -> string with ``[MASKED]`` in their place;
* ``fix_grammar``: the text -> string;
* ``similarity``: both texts to an embedder -> float32 cosine similarity.

Every one caches like ``prompt``: the journal key holds the provider, model, the task's prompt and schema, and
the row's text, so a re-run pays nothing and a changed setting (another language, another bound) recomputes.
Multi-label classification is ``classify_text(..., top_k=, threshold=)``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Unpack

import numpy as np
import pyarrow as pa
from pydantic import BaseModel, Field, create_model

from ai_assets.functions.audio import transcribe
from ai_assets.functions.embed import embed_text
from ai_assets.functions.prompt import PromptParams, PromptTask
from ai_assets.functions.semantic.filter import semantic_filter
from ai_assets.providers.protocols import ModelRole, Prompter, RemoteTextEmbedder, TextEmbedder, with_model
from ai_assets.runtime.columns import error_column
from ai_assets.runtime.dead_letter import ATTEMPTS, COLUMNS, ERROR, MODEL, FailedRows
from ai_assets.runtime.engine import RunOptions
from ai_assets.runtime.errors import ConfigError, NotSupportedError
from ai_assets.runtime.prices import prices_for
from ai_assets.runtime.results import Enriched, EnrichedStream, Source
from ai_assets.runtime.run import RunArgs, run_task
from ai_assets.runtime.usage import Usage

SENTIMENTS = ("positive", "negative", "neutral", "mixed")
MASK = "[MASKED]"
DEFAULT_ENTITIES = ("person", "email", "phone number", "address")


class ShapedTask(PromptTask):
    """A prompt whose structured answer becomes the task's own column type."""

    shape: Callable[[Any], Any]
    arrow_type: pa.DataType

    def columns(self, values: list[Any], errors: list[str | None], *, final: bool) -> dict[str, pa.Array]:
        shaped = [None if v is None else self.shape(v) for v in values]
        return {self.output_column: pa.array(shaped, self.arrow_type),
                error_column(self.output_column): pa.array(errors, pa.string())}


def _run(table: Source, column: str, provider: Prompter, answer: type[BaseModel], system: str,
         output_column: str, shape: Callable[[Any], Any] | None, arrow_type: pa.DataType | None,
         params: PromptParams | None, run: RunArgs) -> Enriched | EnrichedStream:
    provider = with_model(provider, run.get("model"))
    if not isinstance(provider, Prompter):
        raise NotSupportedError(provider, "this task (it prompts a chat model)")
    options = run.get("options") or RunOptions()
    template = "{" + column + "}"
    task: PromptTask
    if shape is None:
        task = PromptTask(template, provider, answer, system, output_column, params or PromptParams(temperature=0),
                          options)
    else:
        task = ShapedTask(template, provider, answer, system, output_column, params or PromptParams(temperature=0),
                          options)
        task.shape, task.arrow_type = shape, arrow_type or pa.string()
    return run_task(table, task, options, run, prices=run.get("prices") or prices_for(provider))


def extract(table: Source, column: str, fields: Sequence[str] | Mapping[str, str] | type[BaseModel], *,
            provider: Prompter, output_column: str = "extracted", params: PromptParams | None = None,
        **run: Unpack[RunArgs]) -> Enriched | EnrichedStream:
    """The named ``fields`` (a list, ``{field: description}``, or a Pydantic model) from the text in ``column``,
    as a struct column; a field the text does not give is null (with a model: as the model says)."""
    answer = fields if isinstance(fields, type) and issubclass(fields, BaseModel) else _fields_model(fields)
    legend = "\n".join(f"- {name}: {info.description or name}" for name, info in answer.model_fields.items())
    system = ("Extract these fields from the text. Give a field's value as it appears in the text; use null for a "
              f"field the text does not give.\n{legend}")
    return _run(table, column, provider, answer, system, output_column, None, None, params, run)


def _fields_model(fields: Sequence[str] | Mapping[str, str]) -> type[BaseModel]:
    described = dict(fields) if isinstance(fields, Mapping) else {name: name for name in fields}
    if not described:
        raise ConfigError("extract: name at least one field")
    bad = [name for name in described if not name.isidentifier()]
    if bad:
        raise ConfigError(f"extract: field names must be identifiers, got {bad}")
    spec: Any = {name: (str | None, Field(default=None, description=text)) for name, text in described.items()}
    return create_model("Extraction", **spec)


def summarize(table: Source, column: str, *, provider: Prompter, max_words: int = 50,
              output_column: str = "summary", params: PromptParams | None = None,
        **run: Unpack[RunArgs]) -> Enriched | EnrichedStream:
    """A summary of the text in ``column`` of at most ``max_words`` words (a longer answer keeps its last whole
    sentence within the bound, or ends in "…": see ``bounded_summary``)."""
    if max_words < 1:
        raise ConfigError(f"summarize: max_words must be >= 1, got {max_words}")
    answer = create_model("Summary", summary=(str, Field(description=f"the summary, at most {max_words} words",
                                                         max_length=12 * max_words)))
    system = f"Summarize the text in at most {max_words} words. Keep its facts; add none."
    params = params or PromptParams(temperature=0, max_output_tokens=4 * max_words + 48)
    return _run(table, column, provider, answer, system, output_column,
                lambda v: bounded_summary(str(v["summary"]), max_words), pa.string(), params, run)


SENTENCE_ENDS = (".", "!", "?", "…", "。")


def bounded_summary(text: str, max_words: int) -> str:
    """``text`` within ``max_words`` words, never cut silently: an answer over the bound, or one that stops at the
    schema's ``max_length`` of ``12 * max_words`` characters (a grammar-constrained local model is cut there),
    keeps its last whole sentence if that holds at least half the bound, else ends in "…"."""
    words = text.split()
    cut = len(words) > max_words or len(text) >= 12 * max_words
    words = words[:max_words]
    if not cut or not words:
        return " ".join(words)
    ends = [i for i, word in enumerate(words) if word.endswith(SENTENCE_ENDS)]
    if ends and ends[-1] + 1 >= max(1, max_words // 2):
        return " ".join(words[:ends[-1] + 1])
    return " ".join(words).rstrip(",;:-") + " …"


def translate(table: Source, column: str, to: str, *, provider: Prompter, output_column: str = "translation",
              params: PromptParams | None = None,
        **run: Unpack[RunArgs]) -> Enriched | EnrichedStream:
    """The text in ``column`` translated into the language ``to`` (e.g. ``"French"``, ``"de"``)."""
    answer = create_model("Translation", translation=(str, Field(description=f"the text in {to}")))
    system = f"Translate the text into {to}. Keep its meaning, tone and formatting; translate nothing else."
    return _run(table, column, provider, answer, system, output_column, lambda v: v["translation"], pa.string(),
                params, run)


def analyze_sentiment(table: Source, column: str, *, provider: Prompter, output_column: str = "sentiment",
                      params: PromptParams | None = None,
        **run: Unpack[RunArgs]) -> Enriched | EnrichedStream:
    """The sentiment of the text in ``column``: ``positive``, ``negative``, ``neutral`` or ``mixed``."""
    kind: Any = Literal[SENTIMENTS]
    answer = create_model("Sentiment", sentiment=(kind, Field(description="the overall sentiment")))
    system = "Give the overall sentiment of the text: positive, negative, neutral, or mixed."
    return _run(table, column, provider, answer, system, output_column, lambda v: v["sentiment"], pa.string(),
                params, run)


def mask(table: Source, column: str, entities: Sequence[str] = DEFAULT_ENTITIES, *, provider: Prompter,
         output_column: str = "masked", params: PromptParams | None = None,
        **run: Unpack[RunArgs]) -> Enriched | EnrichedStream:
    """The text in ``column`` with every entity of the given kinds replaced by ``[MASKED]``."""
    if not entities:
        raise ConfigError("mask: name at least one kind of entity")
    answer = create_model("Masked", text=(str, Field(description=f"the text with {MASK} in place of each entity")))
    system = (f"Replace every {', '.join(entities)} in the text with {MASK}. Change nothing else: same words, "
              "same order, same punctuation.")
    return _run(table, column, provider, answer, system, output_column, lambda v: v["text"], pa.string(), params, run)


def fix_grammar(table: Source, column: str, *, provider: Prompter, output_column: str = "corrected",
                params: PromptParams | None = None,
        **run: Unpack[RunArgs]) -> Enriched | EnrichedStream:
    """The text in ``column`` with its grammar and spelling corrected, meaning and wording otherwise kept."""
    answer = create_model("Corrected", text=(str, Field(description="the corrected text")))
    system = "Correct the grammar and spelling of the text. Keep its meaning, wording and tone otherwise."
    return _run(table, column, provider, answer, system, output_column, lambda v: v["text"], pa.string(), params, run)


def similarity(table: Source, left: str, right: str, *, provider: TextEmbedder | RemoteTextEmbedder,
               output_column: str = "similarity", **run: Unpack[RunArgs]) -> Enriched | EnrichedStream:
    """The cosine similarity (float32, -1 to 1) of the embeddings of the texts in ``left`` and ``right``; null
    where either is missing. Both columns share the journal: a text embedded once is never embedded again."""
    first_run, second_run = _halves(run) if isinstance(table, pa.Table) else ({**run, "progress": None}, run)
    first = embed_text(table, left, provider=provider, output_column="__similarity_left", **first_run)
    source = first.table if isinstance(first, Enriched) else first.reader()
    second = embed_text(source, right, provider=provider, output_column="__similarity_right", **second_run)
    temporary = ["__similarity_left", "__similarity_left_error", "__similarity_right", "__similarity_right_error"]

    def finish(rows: pa.RecordBatch | pa.Table) -> pa.RecordBatch | pa.Table:
        a, b = _matrix(rows.column(temporary[0])), _matrix(rows.column(temporary[2]))
        valid = np.asarray(rows.column(temporary[0]).is_valid()) & np.asarray(rows.column(temporary[2]).is_valid())
        norms = np.clip(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-12, None)
        scores = pa.array(((a * b).sum(axis=1) / norms).astype(np.float32), mask=~valid)
        errors = [x or y for x, y in zip(rows.column(temporary[1]).to_pylist(), rows.column(temporary[3]).to_pylist(),
                                         strict=True)]
        return rows.drop_columns(temporary).append_column(output_column, scores).append_column(
            error_column(output_column), pa.array(errors, pa.string()))

    if isinstance(second, Enriched):
        assert isinstance(first, Enriched)
        usage = first.usage
        _add(usage, second.usage)
        return Enriched(finish(second.table), usage, _letters(temporary, first.failed, second.failed))
    stream = second
    failed = FailedRows()

    def batches() -> Any:
        for batch in stream:
            yield finish(batch)
        _add(first.usage, stream.usage)
        failed.extend(_letters(temporary, first.failed, stream.failed))  # complete once the stream is

    return EnrichedStream(batches(), first.usage, failed)


def _halves(run: RunArgs) -> tuple[RunArgs, RunArgs]:
    """The run of each pass over a table: each counts half a row, so progress moves through both (a stream's
    passes interleave: the second, which reads the first, reports both)."""
    progress = run.get("progress")
    if progress is None:
        return run, run
    report = progress

    def first(done: int, total: int | None) -> None:
        report(done // 2, total)

    def second(done: int, total: int | None) -> None:
        report((done + total) // 2 if total is not None else done, total)

    return {**run, "progress": first}, {**run, "progress": second}


def _letters(temporary: Sequence[str], *passes: FailedRows) -> FailedRows:
    """The dead letters of both passes with the input as the caller gave it (the second pass's input holds the
    first's temporary columns). A row whose two texts both failed has a letter for each."""
    out = FailedRows()
    for rows in passes:
        for batch in rows.batches():
            keep = [n for n in batch.schema.names if n not in (*temporary, *COLUMNS)]
            out.add(batch.select(keep), batch.column(ERROR).to_pylist(), batch.column(ATTEMPTS).to_pylist(),
                    batch.column(MODEL).to_pylist())
    return out


def _matrix(column: pa.Array | pa.ChunkedArray) -> np.ndarray[Any, np.dtype[np.float32]]:
    chunk = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if not pa.types.is_fixed_size_list(chunk.type):  # no vector at all (every row null)
        return np.zeros((len(chunk), 1), np.float32)
    dim = chunk.type.list_size
    flat = np.asarray(chunk.values.slice(chunk.offset * dim, len(chunk) * dim).to_numpy(zero_copy_only=False))
    return flat.reshape(-1, dim).astype(np.float32)


def _add(usage: Usage, other: Usage) -> None:
    for name in ("requests", "retries", "prompt_tokens", "completion_tokens", "cache_hits", "sent_rows", "errors",
                 "deduplicated"):
        setattr(usage, name, getattr(usage, name) + getattr(other, name))
    usage.elapsed_s += other.elapsed_s


@dataclass(frozen=True)
class TaskEntry:
    """What the factories and the YAML component need to know of a task function."""

    function: Callable[..., Enriched | EnrichedStream]
    what: Callable[[Mapping[str, Any]], str]
    """The asset's description, from the task's arguments."""
    inputs: tuple[str, ...] = ("column",)
    """The columns it reads, by argument name."""
    settings: tuple[str, ...] = ("params",)
    """Its own arguments, beyond the inputs and the run context."""
    required: tuple[str, ...] = ()
    """Settings without a default, which a YAML must give."""
    prompts: bool = True
    """An LLM endpoint does it (an ``llm`` resource); else an embedder."""
    role: ModelRole = "chat"
    """Which of the provider's models ``model=`` replaces."""


def _words(arguments: Mapping[str, Any]) -> str:
    return f"Summarizes `{arguments['column']}` in at most {arguments.get('max_words') or 50} words"


def _fields(arguments: Mapping[str, Any]) -> str:
    fields = arguments["fields"]
    return f"Extracts {fields.__name__ if isinstance(fields, type) else ', '.join(fields)} from `{arguments['column']}`"


TASKS: dict[str, TaskEntry] = {
    "extract": TaskEntry(extract, _fields, settings=("fields", "params"), required=("fields",)),
    "summarize": TaskEntry(summarize, _words, settings=("max_words", "params")),
    "translate": TaskEntry(translate, lambda a: f"Translates `{a['column']}` into {a['to']}",
                           settings=("to", "params"), required=("to",)),
    "sentiment": TaskEntry(analyze_sentiment, lambda a: f"Gives the sentiment (positive, negative, neutral, mixed) "
                           f"of `{a['column']}`"),
    "mask": TaskEntry(mask, lambda a: f"Masks every {', '.join(a.get('entities') or DEFAULT_ENTITIES)} of "
                      f"`{a['column']}`", settings=("entities", "params")),
    "fix_grammar": TaskEntry(fix_grammar, lambda a: f"Corrects the grammar and spelling of `{a['column']}`"),
    "transcribe": TaskEntry(transcribe, lambda a: f"Transcribes the audio in `{a['column']}`",
                            settings=("language", "prompt", "filename_column", "max_bytes"), role="transcription"),
    "similarity": TaskEntry(similarity, lambda a: f"Scores the cosine similarity of the embeddings of `{a['left']}` "
                            f"and `{a['right']}`", inputs=("left", "right"), settings=(), prompts=False,
                            role="embedding"),
    "semantic_filter": TaskEntry(semantic_filter, lambda a: f"Keeps the rows whose `{a['column']}` satisfies: "
                                 f"{a['condition']}", settings=("condition", "cascade", "drop", "params"),
                                 required=("condition",)),
}
"""Every task function by its name in YAML (``task: summarize``): the one list the factories and the component
read. A new task is its function above and one line here (and a component field for a new kind of setting)."""
