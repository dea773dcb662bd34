"""Certified cascades (issue 30): a threshold learned from a sample of oracle answers that meets a recall,
precision or accuracy target with probability 1 - delta, following BARGAIN (Zeighami et al., SIGMOD 2026) with
exact Clopper-Pearson tests (see ``ai_assets.runtime.guarantees``).

The generated task with a known truth: the fake server's answers are the truth for every model ("strong", the
oracle, answers it); ``Noise`` makes "cheap" (the proxy) wrong on a seeded share of prompts with a confidence that
says how likely (``ai_assets.testing.noise``).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, Field

from ai_assets import Cascade, OpenAICompatibleProvider, Prices, RetryPolicy, RunOptions, prompt
from ai_assets.runtime.cache.sqlite import ResultCache
from ai_assets.runtime.errors import ConfigError
from ai_assets.runtime.guarantees import Accuracy, Precision, Recall, Target, lower_bound, upper_bound
from ai_assets.testing import FakeOpenAIServer, Fault, Noise
from tests.certified_replay import measure, replay

ROWS, BUDGET, DELTA, RUNS = 1500, 400, 0.05, 200
PRICES = {"cheap": Prices(0.15, 0.6), "strong": Prices(2.5, 10.0)}
TEMPLATE = "Is {text} about cats?"


class Match(BaseModel):
    match: bool
    confidence: float = Field(ge=0, le=1)


class Topic(BaseModel):
    topic: str
    confidence: float = Field(ge=0, le=1)


def items(n: int = ROWS, prefix: str = "item") -> pa.Table:
    return pa.table({"id": list(range(n)), "text": [f"{prefix} {i}" for i in range(n)]})


def certified(target: Target, **settings: Any) -> Cascade:
    return Cascade(["cheap", "strong"], target=target, label_field="match", confidence_field="confidence",
                   delta=DELTA, label_budget=settings.pop("label_budget", BUDGET), prices=PRICES, **settings)


@pytest.fixture
def noisy(server: FakeOpenAIServer) -> Iterator[FakeOpenAIServer]:
    """The shared server, with "cheap" wrong on about 10 % of prompts (seeded); cleared afterwards."""
    server.set_noise(Noise(model="cheap", label="match", rate=0.1, seed=3))
    yield server
    server.set_noise()


@pytest.fixture
def llm(server: FakeOpenAIServer) -> OpenAICompatibleProvider:
    return OpenAICompatibleProvider("unused", base_url=server.base_url, api_key="k")


# -- the Must-show: the stated target holds in >= 1 - delta of 200 seeded runs -------------------------------------

@pytest.mark.parametrize("target", [Recall(0.9), Precision(0.9), Accuracy(0.9)], ids=str)
def test_the_stated_target_holds_in_at_least_1_minus_delta_of_200_seeded_runs(
        target: Target, noisy: FakeOpenAIServer, llm: OpenAICompatibleProvider, tmp_path: Path) -> None:
    """The guarantee BARGAIN states (and SUPG for recall): over the randomness of the uniform sample, the output
    meets the target with probability >= 1 - delta. One real run (seed 0) through the fake server; the other 199
    replay the same choice from the journalled answers (the proxy's and the oracle's answer to every row, read once
    each: no network per run), with the same ``sample_rows`` and ``learn`` the real run calls."""
    journal = ResultCache(tmp_path / "journal.sqlite")
    out = prompt(items(), TEMPLATE, provider=llm, return_format=Match, cascade=certified(target), cache=journal)
    cheap = prompt(items(), TEMPLATE, provider=llm, return_format=Match, model="cheap", cache=journal).table
    strong = prompt(items(), TEMPLATE, provider=llm, return_format=Match, model="strong", cache=journal).table
    proxy = [a["match"] for a in cheap.column("response").to_pylist()]
    confidence = [a["confidence"] for a in cheap.column("response").to_pylist()]
    truth = [a["match"] for a in strong.column("response").to_pylist()]
    assert 0.05 < sum(p != t for p, t in zip(proxy, truth, strict=True)) / ROWS < 0.15  # the knob's 10 % noise

    runs = [replay(target, DELTA, BUDGET, seed, proxy, confidence, truth) for seed in range(RUNS)]
    held = sum(run.measure >= target.value for run in runs) / RUNS
    assert held >= 1 - DELTA, f"{target} held in {held:.3f} of {RUNS} runs"
    assert sum(run.oracle_share for run in runs) / RUNS < 0.97  # the proxy answered some rows on its own

    # The real run made the same choice as its replay, and says so.
    real = [a["match"] for a in out.table.column("response").to_pylist()]
    first = runs[0]
    certificate = out.usage.certificate
    assert certificate is not None
    assert certificate.oracle_share == pytest.approx(first.oracle_share)
    assert (certificate.learned.threshold == first.threshold
            or (math.isinf(certificate.learned.threshold) and math.isinf(first.threshold)))
    assert measure(target, real, truth) == pytest.approx(first.measure)
    assert out.table.column("response_model").to_pylist().count("strong") == certificate.oracle_rows
    summary = certificate.summary()
    assert summary["guarantee"].startswith(f"{target.kind} >= 0.9 with probability >= 0.95 over the sample")
    assert summary["cost_vs_all_oracle"] is not None and summary["cost_vs_all_oracle"] < 1.0


def test_a_rerun_pays_nothing_and_gives_the_same_answers(noisy: FakeOpenAIServer, llm: OpenAICompatibleProvider,
                                                        tmp_path: Path) -> None:
    """The journal's promise (a request already answered is never paid again), counted on the server: the
    sample's oracle answers and the learned threshold are journalled, so a re-run sends nothing at all."""
    journal = ResultCache(tmp_path / "journal.sqlite")
    cascade = certified(Accuracy(0.9))
    first = prompt(items(600), TEMPLATE, provider=llm, return_format=Match, cascade=cascade, cache=journal)
    stats = noisy.stats()
    assert stats.models["cheap"] == 600 and BUDGET <= stats.models["strong"] < 600
    noisy.reset()
    again = prompt(items(600), TEMPLATE, provider=llm, return_format=Match, cascade=cascade, cache=journal)
    assert noisy.stats().requests == 0
    assert again.table.equals(first.table)
    assert again.usage.certificate is not None and again.usage.certificate.reused
    assert again.usage.certificate.oracle_rows == first.usage.certificate.oracle_rows  # type: ignore[union-attr]


def test_the_threshold_is_learned_again_when_the_prompt_or_schema_changes_and_kept_for_new_rows(
        noisy: FakeOpenAIServer, llm: OpenAICompatibleProvider, tmp_path: Path) -> None:
    """The threshold belongs to the task (prompt, models, schema) and the cascade's settings, as a code version
    does: new rows of the same task reuse it (no sample is paid), a changed prompt or target learns it again."""
    journal = ResultCache(tmp_path / "journal.sqlite")
    cascade = certified(Accuracy(0.9), label_budget=100)
    prompt(items(300), TEMPLATE, provider=llm, return_format=Match, cascade=cascade, cache=journal)
    noisy.reset()
    new_day = prompt(items(300, "day2"), TEMPLATE, provider=llm, return_format=Match, cascade=cascade,
                     cache=journal)
    certificate = new_day.usage.certificate
    assert certificate is not None and certificate.reused
    untrusted = certificate.oracle_rows
    assert noisy.stats().models.get("strong", 0) == untrusted  # the untrusted rows only: no new sample
    noisy.reset()
    changed = prompt(items(300), "Does {text} mention cats?", provider=llm, return_format=Match, cascade=cascade,
                     cache=journal)
    assert changed.usage.certificate is not None and not changed.usage.certificate.reused
    assert noisy.stats().models["strong"] >= 100  # the new prompt's sample
    stricter = prompt(items(300), TEMPLATE, provider=llm, return_format=Match, cascade=certified(
        Accuracy(0.95), label_budget=100), cache=journal)
    assert stricter.usage.certificate is not None and not stricter.usage.certificate.reused


def test_accuracy_works_on_a_label_that_is_not_a_bool(noisy: FakeOpenAIServer, llm: OpenAICompatibleProvider,
                                                      tmp_path: Path) -> None:
    """Classification (BARGAIN_A's setting): a string label is compared with the oracle's as a whole."""
    noisy.set_noise(Noise(model="cheap", label="topic", rate=0.1, seed=1))
    cascade = Cascade(["cheap", "strong"], target=Accuracy(0.9), label_field="topic", confidence_field="confidence",
                      label_budget=100)
    out = prompt(items(300), TEMPLATE, provider=llm, return_format=Topic, cascade=cascade,
                 cache=ResultCache(tmp_path / "j.sqlite"))
    assert out.usage.certificate is not None and out.usage.certificate.rows == 300
    assert set(out.table.column("response_model").to_pylist()) <= {"cheap", "strong"}


# -- hostile: bad answers, a failing oracle, bad settings, empty input ---------------------------------------------

def test_proxy_failures_and_empty_inputs_never_keep_the_proxy(noisy: FakeOpenAIServer,
                                                             llm: OpenAICompatibleProvider, tmp_path: Path) -> None:
    """A proxy answer that breaks the schema (OpenAI structured outputs can still be refused or cut) has no
    confidence: the row goes to the oracle. A row with an empty input is skipped and counts for nobody."""
    noisy.set_faults(Fault("schema_violation", match="item 1", model="cheap", attempts=None))
    table = items(200).set_column(1, "text", pa.array([None if i % 50 == 0 else f"item {i}" for i in range(200)]))
    out = prompt(table, TEMPLATE, provider=llm, return_format=Match, cascade=certified(Accuracy(0.9), label_budget=50),
                 cache=ResultCache(tmp_path / "j.sqlite"), options=RunOptions(on_error="null"))
    models = out.table.column("response_model").to_pylist()
    failed_by_proxy = [i for i in range(200) if str(i).startswith("1") and i % 50]
    assert all(models[i] == "strong" for i in failed_by_proxy)
    assert [i for i, m in enumerate(models) if m is None] == [0, 50, 100, 150]
    assert out.usage.certificate is not None and out.usage.certificate.rows == 196
    assert out.table.column("response_error").null_count == 196  # every row answered, by one model or the other


def test_an_oracle_that_is_down_fails_its_rows_only_and_nothing_is_stored(
        noisy: FakeOpenAIServer, llm: OpenAICompatibleProvider, tmp_path: Path) -> None:
    """Provider down (HTTP 503 on every try, as an overloaded OpenAI endpoint answers): the oracle's rows get an
    error each, the proxy's answers stand, and a threshold learned without the whole sample is not kept (the next
    run learns again once the oracle answers)."""
    noisy.set_faults(Fault("503", model="strong", attempts=None, rate=0.5))
    journal = ResultCache(tmp_path / "j.sqlite")
    cascade = certified(Accuracy(0.9), label_budget=60)
    out = prompt(items(200), TEMPLATE, provider=llm, return_format=Match, cascade=cascade, cache=journal,
                 options=RunOptions(on_error="null", retry=RetryPolicy(max_attempts=1)))
    errors = out.table.column("response_error").to_pylist()
    models = out.table.column("response_model").to_pylist()
    assert any(e is not None for e in errors) and all(models[i] == "strong" for i, e in enumerate(errors) if e)
    assert out.failed.rows == sum(e is not None for e in errors)  # one dead letter per failed row
    noisy.set_faults()
    again = prompt(items(200), TEMPLATE, provider=llm, return_format=Match, cascade=cascade, cache=journal,
                   options=RunOptions(on_error="null"))
    assert again.usage.certificate is not None and not again.usage.certificate.reused


@pytest.mark.parametrize(("settings", "says"), [
    ({"models": ["a", "b", "c"]}, "one proxy and one oracle"),
    ({"delta": 0.0}, "delta"),
    ({"delta": math.nan}, "delta"),
    ({"label_budget": 0}, "label_budget"),
    ({"label_budget": True}, "label_budget"),
    ({"label_field": None}, "label_field"),
    ({"escalate_when": bool}, "not both"),
])
def test_bad_settings_are_refused_by_name(settings: dict[str, Any], says: str) -> None:
    args: dict[str, Any] = {"models": ["cheap", "strong"], "target": Recall(0.9), "label_field": "match",
                            "confidence_field": "confidence", **settings}
    with pytest.raises(ConfigError, match=says):
        Cascade(**args)


@pytest.mark.parametrize("value", [0.0, 1.0, 1.5, -0.1, math.nan, True, "0.9"])
def test_a_target_is_a_number_in_0_1(value: Any) -> None:
    with pytest.raises(ConfigError, match="in \\(0, 1\\)"):
        Recall(value)


def test_recall_and_precision_need_a_bool_label(llm: OpenAICompatibleProvider) -> None:
    cascade = Cascade(["cheap", "strong"], target=Recall(0.9), label_field="topic", confidence_field="confidence")
    with pytest.raises(ConfigError, match="bool label"):
        prompt(items(3), TEMPLATE, provider=llm, return_format=Topic, cascade=cascade)
    with pytest.raises(ConfigError, match="no such field"):
        prompt(items(3), TEMPLATE, provider=llm, return_format=Match, cascade=cascade)


def test_a_stream_gives_the_same_rows_as_a_table(noisy: FakeOpenAIServer, llm: OpenAICompatibleProvider,
                                                 tmp_path: Path) -> None:
    """A Dagster asset hands the cascade a stream (a partition read window by window): the proxy's answers are
    spooled to disk until the threshold is chosen, then given back window by window, as a table would be."""
    journal = ResultCache(tmp_path / "j.sqlite")
    cascade = certified(Recall(0.9), label_budget=100)
    table = prompt(items(500), TEMPLATE, provider=llm, return_format=Match, cascade=cascade, cache=journal)
    stream = prompt(items(500).to_batches(max_chunksize=64), TEMPLATE, provider=llm, return_format=Match,
                    cascade=cascade, cache=journal, options=RunOptions(window_rows=64))
    assert stream.read_all().equals(table.table)
    assert stream.usage.certificate is not None and stream.usage.certificate.reused


def test_an_empty_table_certifies_nothing_and_sends_nothing(server: FakeOpenAIServer,
                                                            llm: OpenAICompatibleProvider) -> None:
    out = prompt(items(0), TEMPLATE, provider=llm, return_format=Match, cascade=certified(Precision(0.9)))
    assert out.table.num_rows == 0 and "response_model" in out.table.column_names
    assert out.usage.certificate is not None and out.usage.certificate.rows == 0
    assert server.stats().requests == 0


def test_two_runs_at_once_on_one_journal_agree(noisy: FakeOpenAIServer, llm: OpenAICompatibleProvider,
                                               tmp_path: Path) -> None:
    """Two workers materializing the same partition (a retried step beside a slow one): the seeded sample and the
    answers are the same, so both learn the same threshold and give the same table."""
    path = tmp_path / "j.sqlite"
    ResultCache(path).close()  # created first: two processes creating one journal at once race (see report)
    results: list[pa.Table] = []

    def work() -> None:
        results.append(prompt(items(300), TEMPLATE, provider=llm, return_format=Match,
                              cascade=certified(Accuracy(0.9), label_budget=80), cache=ResultCache(path)).table)

    threads = [threading.Thread(target=work) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert len(results) == 2 and results[0].equals(results[1])


# -- the statistics ------------------------------------------------------------------------------------------------

@settings(max_examples=200, deadline=None)
@given(st.integers(1, 300).flatmap(lambda n: st.tuples(st.just(n), st.integers(0, n))),
       st.sampled_from([0.01, 0.025, 0.05, 0.1]))
def test_the_bounds_are_the_clopper_pearson_bounds(case: tuple[int, int], alpha: float) -> None:
    """Clopper & Pearson (1934): the one-sided lower bound is the alpha quantile of Beta(k, n - k + 1), the upper
    the 1 - alpha quantile of Beta(k + 1, n - k) (scipy's, where it is installed)."""
    stats = pytest.importorskip("scipy.stats")
    n, k = case
    low, high = lower_bound(k, n, alpha), upper_bound(k, n, alpha)
    assert low <= k / n <= high
    assert low == pytest.approx(0.0 if k == 0 else stats.beta.ppf(alpha, k, n - k + 1), abs=1e-9)
    assert high == pytest.approx(1.0 if k == n else stats.beta.ppf(1 - alpha, k + 1, n - k), abs=1e-9)


def test_the_dagster_metadata_states_the_guarantee(noisy: FakeOpenAIServer, tmp_path: Path) -> None:
    """A certified prompt_asset: the threshold, oracle share, cost against all-oracle and the guarantee in words
    are in the materialization's metadata; the YAML component builds the same cascade."""
    import dagster as dg

    from ai_assets.dagster import OpenAICompatibleResource, ParquetIOManager
    from ai_assets.dagster.components import PromptComponent

    @dg.asset
    def reviews() -> pa.Table:
        return items(200)

    component = PromptComponent.model_validate({
        "name": "matches", "upstream": "reviews", "template": TEMPLATE, "cache_key": None,
        "return_format": Match.model_json_schema(),
        "cascade": {"models": ["cheap", "strong"], "confidence_field": "confidence",
                    "prices": {"cheap": {"input_per_million": 0.15}, "strong": {"input_per_million": 2.5}},
                    "target": {"measure": "accuracy", "value": 0.9, "label_field": "match", "label_budget": 50}}})
    result = dg.materialize([reviews, component.asset()], resources={
        "llm": OpenAICompatibleResource(model="unused", base_url=server_url(noisy), api_key="k"),
        "io_manager": ParquetIOManager(root=str(tmp_path / "out"))})
    metadata = result.asset_materializations_for_node("matches")[0].metadata
    assert metadata["ai/cascade_guarantee"].value.startswith("accuracy >= 0.9 with probability >= 0.95")
    assert 0 < metadata["ai/cascade_oracle_share"].value <= 1
    assert "ai/cascade_threshold" in metadata and "ai/cascade_cost_vs_all_oracle" in metadata


def server_url(server: FakeOpenAIServer) -> str:
    return server.base_url
