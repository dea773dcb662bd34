"""Model cascades against the fake server: the cheap model answers 80 % of rows validly (the fake breaks the schema
for the other 20 % when the cheap model is asked), the strong model is sent exactly the rest."""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel, Field

from ai_assets import Cascade, Enriched, OpenAICompatibleProvider, Prices, RetryPolicy, RunOptions, prompt
from ai_assets.functions.cascade import put_rows
from ai_assets.runtime.cache import open_cache
from ai_assets.runtime.cache.sqlite import ResultCache
from ai_assets.runtime.errors import AIAssetsWarning, ConfigError
from ai_assets.testing import FakeOpenAIServer, Fault
from tests.hostile import Answer, HostileServer, chat_body, hostile_server

ROWS, HARD = 1000, 200
PRICES = {"cheap": Prices(0.1, 0.4), "strong": Prices(2.0, 8.0)}


class Verdict(BaseModel):
    label: str
    score: int


def rows() -> pa.Table:
    texts = [f"review {i} [hard]" if i % 5 == 0 else f"review {i}" for i in range(ROWS)]
    return pa.table({"id": list(range(ROWS)), "text": texts})


def test_the_strong_model_gets_exactly_the_rows_the_cheap_one_failed(server: FakeOpenAIServer,
                                                                      tmp_path: Path) -> None:
    server.set_faults(Fault("schema_violation", match="[hard]", model="cheap", attempts=None))
    llm = OpenAICompatibleProvider("unused", base_url=server.base_url, api_key="k")
    journal = ResultCache(tmp_path / "journal.sqlite")
    cascade = Cascade(["cheap", "strong"], prices=PRICES)
    options = RunOptions(retry=RetryPolicy(max_attempts=2, base_wait=0.01), on_error="null")
    out = prompt(rows(), "Judge: {text}", provider=llm, return_format=Verdict, cascade=cascade, cache=journal,
                 options=options)
    table = out.table
    answered_by = table.column("response_model").to_pylist()
    hard = [i for i in range(ROWS) if i % 5 == 0]
    assert [i for i, m in enumerate(answered_by) if m == "strong"] == hard
    assert answered_by.count("cheap") == ROWS - HARD
    assert table.column("response_error").null_count == ROWS  # every row answered, by one model or the other
    assert table.column("id").to_pylist() == list(range(ROWS))  # input order kept
    stats = server.stats()
    assert stats.models["strong"] == HARD  # exactly the escalated rows, once each
    assert stats.models["cheap"] == ROWS + HARD  # 2 attempts (a re-ask) for each row it got wrong
    usage = out.usage
    assert set(usage.models) == {"cheap", "strong"} and usage.models["strong"].sent_rows == HARD
    assert usage.prompt_tokens == stats.prompt_tokens and usage.answered == ROWS and usage.errors == 0
    cost = usage.models["cheap"].cost(PRICES["cheap"]) + usage.models["strong"].cost(PRICES["strong"])
    assert usage.cost(None) == pytest.approx(cost) and cost > 0

    server.reset()  # a re-run: both models' answers come from the journal
    again = prompt(rows(), "Judge: {text}", provider=llm, return_format=Verdict, cascade=cascade, cache=journal,
                   options=options)
    assert server.stats().chat_requests == 0
    assert again.table.equals(table) and again.usage.cost(None) == 0.0


def test_an_unsure_answer_escalates_and_a_stream_stays_a_stream(server: FakeOpenAIServer) -> None:
    """``escalate_when`` on a valid answer; a stream in gives a stream out, window by window."""
    llm = OpenAICompatibleProvider("unused", base_url=server.base_url, api_key="k")
    table = pa.table({"text": [f"t{i}" for i in range(60)] + [None]})
    cascade = Cascade(["a", "b", "c"], escalate_when=lambda v: v["score"] % 2 == 1)
    stream = prompt(pa.RecordBatchReader.from_batches(table.schema, table.to_batches(max_chunksize=16)),
                    "{text}", provider=llm, return_format=Verdict, cascade=cascade,
                    options=RunOptions(window_rows=16))
    out = stream.read_all()
    models, scores = out.column("response_model").to_pylist(), [r and r["score"] for r in
                                                                   out.column("response").to_pylist()]
    assert models[-1] is None and scores[-1] is None  # a null input is skipped, by no model
    # The fake's score hashes the prompt, not the model: an odd score stays odd, so it escalates to the last model.
    odd = [i for i, s in enumerate(scores[:-1]) if s % 2 == 1]
    assert 0 < len(odd) < 60
    assert [m for m in models[:-1]] == ["c" if i in odd else "a" for i in range(60)]
    stats = server.stats()
    assert (stats.models["a"], stats.models["b"], stats.models["c"]) == (60, len(odd), len(odd))
    assert stream.usage.rows == 61 and stream.usage.skipped == 1
    assert sum(u.sent_rows for u in stream.usage.models.values()) == sum(stats.models.values())


def test_a_cascade_is_checked_when_built() -> None:
    for models in (["one"], ["a", "a"], ["a", ""]):
        with pytest.raises(ConfigError, match="two or more distinct"):
            Cascade(models)
    with pytest.raises(ConfigError, match="model= or cascade="):
        prompt(pa.table({"t": ["x"]}), "{t}", provider=OpenAICompatibleProvider("m", api_key="k"), model="m",
               cascade=Cascade(["a", "b"]))


def test_a_cascading_asset_says_which_model_answered_and_what_each_cost(server: FakeOpenAIServer,
                                                                         tmp_path: Path) -> None:
    import dagster as dg

    from ai_assets.dagster import OpenAICompatibleResource, ParquetIOManager, ResultCacheResource, prompt_asset

    server.set_faults(Fault("schema_violation", match="[hard]", model="cheap", attempts=None))

    @dg.asset
    def reviews() -> pa.Table:
        return rows().slice(0, 50)

    verdicts = prompt_asset("verdicts", reviews, template="Judge: {text}", return_format=Verdict,
                            cascade=Cascade(["cheap", "strong"], prices=PRICES),
                            options=RunOptions(retry=RetryPolicy(max_attempts=1), on_error="null"))
    result = dg.materialize([reviews, verdicts], resources={
        "llm": OpenAICompatibleResource(model="unused", base_url=server.base_url, api_key="k"),
        "io_manager": ParquetIOManager(root=str(tmp_path / "out")),
        "ai_cache": ResultCacheResource(path=str(tmp_path / "journal.sqlite"))}, raise_on_error=False)
    assert result.success
    stored = ParquetIOManager(root=str(tmp_path / "out")).store(dg.AssetKey("verdicts"), {}).read()
    assert stored.column("verdicts_model").to_pylist() == ["strong" if i % 5 == 0 else "cheap" for i in range(50)]
    metadata = result.asset_materializations_for_node("verdicts")[0].metadata
    models = metadata["ai/models"].value
    assert models["strong"]["rows_sent"] == 10 and models["cheap"]["rows_sent"] == 50
    assert metadata["ai/estimated_cost_usd"].value == pytest.approx(
        models["cheap"]["cost_usd"] + models["strong"]["cost_usd"], abs=1e-6)
    assert all(check.passed for check in result.get_asset_check_evaluations())


def test_a_yaml_prompt_component_takes_a_cascade(server: FakeOpenAIServer, tmp_path: Path) -> None:
    import dagster as dg

    from ai_assets.dagster import OpenAICompatibleResource, ParquetIOManager
    from ai_assets.dagster.components import PromptComponent

    server.set_faults(Fault("400", match="[hard]", model="cheap", attempts=None))

    @dg.asset
    def reviews() -> pa.Table:
        return rows().slice(0, 20)

    component = PromptComponent.model_validate({
        "name": "verdicts", "upstream": "reviews", "template": "Judge: {text}", "cache_key": None,
        "options": {"on_error": "null"},
        "cascade": {"models": ["cheap", "strong"], "prices": {"strong": {"input_per_million": 2.0}}}})
    result = dg.materialize([reviews, component.asset()], resources={
        "llm": OpenAICompatibleResource(model="unused", base_url=server.base_url, api_key="k"),
        "io_manager": ParquetIOManager(root=str(tmp_path / "out"))})
    stored = ParquetIOManager(root=str(tmp_path / "out")).store(dg.AssetKey("verdicts"), {}).read()
    assert stored.column("verdicts_model").to_pylist() == ["strong" if i % 5 == 0 else "cheap" for i in range(20)]
    assert server.stats().models == {"cheap": 20, "strong": 4}
    models = result.asset_materializations_for_node("verdicts")[0].metadata["ai/models"].value
    assert models["strong"]["cost_usd"] > 0 and models["cheap"]["cost_usd"] == 0  # unpriced fake model: free
    with pytest.raises(Exception, match="at least 2"):
        PromptComponent.model_validate({"name": "v", "upstream": "reviews", "template": "{text}",
                                        "cascade": {"models": ["one"]}})


# -- issue 26: cascades that hold on first contact ---------------------------------------------------------------

class Judged(BaseModel):
    label: str
    confidence: float


@given(st.integers(0, 40).flatmap(lambda n: st.tuples(st.just(n), st.lists(st.integers(0, max(n - 1, 0)),
                                                                            unique=True, max_size=n))))
def test_putting_answers_back_keeps_row_order_for_any_set_of_escalated_rows(case: tuple[int, list[int]]) -> None:
    """Any subset of a window may escalate: none, some, every row (the cheap model is down: OpenAI documents 500
    and 503 as its server-side errors, and then every row fails), or the only row of a one-row table."""
    n, rows = case
    rows = [r for r in rows if r < n]
    table = pa.table({"id": list(range(n)), "answer": [f"cheap {i}" for i in range(n)]})
    answers = pa.table({"id": rows, "answer": [f"strong {i}" for i in rows]})
    out = put_rows(table, rows, answers)
    assert out.column("id").to_pylist() == list(range(n))
    assert out.column("answer").to_pylist() == [f"strong {i}" if i in rows else f"cheap {i}" for i in range(n)]


@pytest.mark.parametrize("n", [1, 3])
def test_a_cascade_completes_when_every_row_escalates_and_a_rerun_pays_nothing(
        server: FakeOpenAIServer, tmp_path: Path, n: int) -> None:
    """The cheap model is down (HTTP 503, "the engine is currently overloaded" in OpenAI's error-code docs) for
    every request: every row of every window goes to the strong model. Its failures are final for it, so a re-run
    reads both models' outcomes from the journal and sends nothing."""
    server.set_faults(Fault("503", model="cheap", attempts=None))
    llm = OpenAICompatibleProvider("unused", base_url=server.base_url, api_key="k")
    journal = ResultCache(tmp_path / "journal.sqlite")
    options = RunOptions(retry=RetryPolicy(max_attempts=1), on_error="null", window_rows=2)
    table = pa.table({"text": [f"t{i}" for i in range(n)]})
    out = prompt(table, "{text}", provider=llm, return_format=Verdict, cascade=Cascade(["cheap", "strong"]),
                 cache=journal, options=options)
    assert out.table.column("response_model").to_pylist() == ["strong"] * n
    assert out.table.column("response_error").null_count == n and out.usage.answered == n
    assert server.stats().models == {"cheap": n, "strong": n}
    stream = prompt(pa.RecordBatchReader.from_batches(table.schema, table.to_batches(max_chunksize=1)), "{text}",
                    provider=llm, return_format=Verdict, cascade=Cascade(["cheap", "strong"]), cache=journal,
                    options=options)
    assert stream.read_all().equals(out.table)
    assert server.stats().models == {"cheap": n, "strong": n}  # the re-run paid nothing


def test_a_confidence_field_the_answers_cannot_carry_is_refused_before_anything_is_paid(
        server: FakeOpenAIServer) -> None:
    """A confidence is a probability in [0, 1] (OpenAI's logprobs guide turns log probabilities into linear
    probabilities, 0 to 1). A ``confidence_field`` the answers do not have, or that is no such number, would send
    every row to every model: it is a ConfigError naming the setting, raised before a request is sent."""
    llm = OpenAICompatibleProvider("unused", base_url=server.base_url, api_key="k")

    class Scored(BaseModel):
        label: str
        confidence: int = Field(ge=0, le=100)

    class Worded(BaseModel):
        label: str
        confidence: str

    cases: list[tuple[type[BaseModel] | None, str]] = [
        (Verdict, "has no field 'confidence'"), (None, "needs a return_format"), (Worded, "not a number"),
        (Scored, r"declared on \[0.0, 100.0\]")]
    for return_format, message in cases:
        with pytest.raises(ConfigError, match=rf"confidence_field='confidence'.*{message}"):
            prompt(pa.table({"text": ["a", "b"]}), "{text}", provider=llm, return_format=return_format,
                   cascade=Cascade(["cheap", "strong"], confidence_field="confidence"))
    assert server.stats().chat_requests == 0
    for minimum in (math.nan, math.inf, -0.1, 1.5, "0.5", True):
        with pytest.raises(ConfigError, match="min_confidence"):
            Cascade(["cheap", "strong"], confidence_field="confidence", min_confidence=minimum)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="escalate_when"):
        Cascade(["cheap", "strong"], escalate_when="score < 5")  # type: ignore[arg-type]
    Cascade(["cheap", "strong"], confidence_field="confidence").check(Judged)  # a float field: fine


def test_an_asset_and_a_yaml_component_check_the_confidence_field_when_defined() -> None:
    """The same check at definition time: ``prompt_asset`` and the YAML ``cascade:`` block (inline JSON schema)."""
    import dagster as dg

    from ai_assets.dagster import prompt_asset
    from ai_assets.dagster.components import PromptComponent

    @dg.asset
    def reviews() -> pa.Table:
        return rows()

    with pytest.raises(ConfigError, match=r"confidence_field='certainty'.*has no field"):
        prompt_asset("verdicts", reviews, template="{text}", return_format=Verdict,
                     cascade=Cascade(["cheap", "strong"], confidence_field="certainty"))
    block = {"name": "v", "upstream": "reviews", "template": "{text}",
             "return_format": {"type": "object", "properties": {"label": {"type": "string"}}},
             "cascade": {"models": ["cheap", "strong"], "confidence_field": "certainty"}}
    with pytest.raises(ConfigError, match=r"confidence_field='certainty'.*has no field"):
        PromptComponent.model_validate(block).asset()
    with pytest.raises(ConfigError, match="min_confidence"):
        PromptComponent.model_validate({**block, "cascade": {"models": ["cheap", "strong"],
                                                             "min_confidence": math.nan}}).asset()
    block["return_format"]["properties"]["certainty"] = {"type": "number"}  # type: ignore[index]
    PromptComponent.model_validate(block).asset()


@given(st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-10**30, 10**30), st.booleans(),
                 st.text(max_size=5), st.none(), st.lists(st.floats(0, 1), max_size=1)))
def test_only_a_probability_at_or_over_the_minimum_is_trusted(confidence: Any) -> None:
    """JSON (RFC 8259 section 6) allows numbers like 1e999 that overflow a double to infinity, and Python's json
    module reads NaN and Infinity tokens; Pydantic's float keeps them. None of these, nor a bool, a string, null,
    a list or a number outside [0, 1], is a probability: such an answer is not trusted."""
    cascade = Cascade(["cheap", "strong"], confidence_field="confidence", min_confidence=0.5)
    trusted = not cascade.escalates({"label": "x", "confidence": confidence})
    is_probability = (isinstance(confidence, int | float) and not isinstance(confidence, bool)
                      and math.isfinite(confidence) and 0.5 <= confidence <= 1)
    assert trusted == is_probability
    assert cascade.escalates(None) and cascade.escalates({"label": "x"})


@pytest.fixture(scope="module")
def hostile() -> Iterator[HostileServer]:
    with hostile_server() as server:
        yield server


def test_a_nan_infinite_or_out_of_range_confidence_escalates(hostile: HostileServer) -> None:
    """A model's JSON with ``NaN``, ``1e999`` (infinity once parsed), 1.5 or -0.1 as its confidence: Pydantic
    validates each as a float, and each used to be trusted (NaN compares false with everything)."""
    answers = {"nan": "NaN", "inf": "1e999", "big": "1.5", "neg": "-0.1", "low": "0.2", "sure": "0.9"}
    hostile.reset(**{name: Answer(chat_body(f'{{"label": "x", "confidence": {value}}}'))
                     for name, value in answers.items()})
    llm = OpenAICompatibleProvider("unused", base_url=hostile.base_url, api_key="k")
    out = prompt(pa.table({"text": list(answers)}), "{text}", provider=llm, return_format=Judged,
                 cascade=Cascade(["cheap", "strong"], confidence_field="confidence", min_confidence=0.5),
                 options=RunOptions(retry=RetryPolicy(max_attempts=1), on_error="null"))
    assert isinstance(out, Enriched)
    assert out.table.column("response_model").to_pylist() == ["strong"] * 5 + ["cheap"]
    assert hostile.seen == {name: 1 if name == "sure" else 2 for name in answers}  # each model once


def test_an_escalate_when_that_raises_escalates_that_row_and_says_which(server: FakeOpenAIServer) -> None:
    """``escalate_when`` is the user's code over the model's answer, and answers differ: OpenAI's structured
    outputs make an optional field nullable, so ``v["reason"].startswith(...)`` meets None on some rows. Such a
    row goes on to the next model (its answer was not judged trustworthy) and a warning names it; the call and
    the other rows go on."""
    llm = OpenAICompatibleProvider("unused", base_url=server.base_url, api_key="k")

    def unsure(answer: dict[str, Any]) -> bool:
        return bool(1 / (answer["score"] % 3) > 1)  # ZeroDivisionError for a score divisible by 3

    table = pa.table({"text": [f"t{i}" for i in range(30)]})
    with pytest.warns(AIAssetsWarning, match=r"escalate_when.*raised on \d+ answer.*'cheap'.*'strong'.*"
                                             r"input rows \d+.*ZeroDivisionError"):
        out = prompt(table, "{text}", provider=llm, return_format=Verdict,
                     cascade=Cascade(["cheap", "strong"], escalate_when=unsure), options=RunOptions(window_rows=8))
    assert isinstance(out, Enriched)
    cheap = prompt(table, "{text}", provider=llm, return_format=Verdict, model="cheap").table
    raised = [i for i, v in enumerate(cheap.column("response").to_pylist()) if v["score"] % 3 == 0]
    assert 0 < len(raised) < 30
    assert out.table.column("response_model").to_pylist() == ["strong" if i in raised else "cheap"
                                                               for i in range(30)]
    assert out.table.column("response_error").null_count == 30


@pytest.mark.parametrize("journal", ["sqlite", "object_store", "postgres"])
def test_two_overlapping_runs_pay_the_cheap_models_failures_once(server: FakeOpenAIServer, tmp_path: Path,
                                                                 journal: str, request: pytest.FixtureRequest) -> None:
    """Two runs of one partition at once (a sensor's run and a backfill: Dagster does not de-duplicate runs of a
    partition unless a concurrency limit says so) share the journal. The cheap model fails 20 % of the rows
    (HTTP 500 on every attempt); each failure is final for it and must be taken from the journal by the run that
    waited on it, like an answer. Bound per model: its rows + 2 x C (what each run has in flight at a takeover)."""
    n, hard, concurrency = 200, 40, 8
    location = {"sqlite": str(tmp_path / "j.sqlite"), "object_store": f"file://{tmp_path}/journal",
                "postgres": request.getfixturevalue("pg_url") if journal == "postgres" else ""}[journal]
    server.set_faults(Fault("500", match="[hard]", model="cheap", attempts=None))
    server.set_latency(0.05)
    llm = OpenAICompatibleProvider("unused", base_url=server.base_url, api_key="k")
    texts = [f"review {i} [hard]" if i % 5 == 0 else f"review {i}" for i in range(n)]
    outs: list[pa.Table] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            outs.append(prompt(pa.table({"text": texts}), "Judge: {text}", provider=llm, return_format=Verdict,
                               cascade=Cascade(["cheap", "strong"]), cache=open_cache(location),
                               options=RunOptions(concurrency=concurrency, on_error="null",
                                                  retry=RetryPolicy(max_attempts=1))).table)
        except BaseException as exc:
            errors.append(exc)

    runs = [threading.Thread(target=run) for _ in range(2)]
    for thread in runs:
        thread.start()
    for thread in runs:
        thread.join(120)
    assert not errors and len(outs) == 2
    stats = server.stats()
    print(f"two overlapping cascade runs, {journal}: {json.dumps(stats.models)} for {n} rows ({hard} escalated)")
    assert stats.models["cheap"] <= n + 2 * concurrency, stats.models
    assert stats.models["strong"] <= hard + 2 * concurrency, stats.models
    for table in outs:
        assert table.column("response_model").to_pylist() == ["strong" if i % 5 == 0 else "cheap" for i in range(n)]
        assert table.column("response_error").null_count == n
