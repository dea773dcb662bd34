"""Hostile review of semantic_top_k / semantic_aggregate / semantic_filter and the embedding proxy: inputs modelled
on documented behaviour (LLM judges' position bias, duplicate rows in real tables, chained pandas-style filters),
each test red on the code as first committed (a706a2d, ea5f3c0)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import dagster as dg
import numpy as np
import pyarrow as pa
import pytest
from aiohttp import web
from pydantic import BaseModel, Field

from ai_assets import Cascade, prompt
from ai_assets.functions.embedding_proxy import EmbeddingProxy
from ai_assets.functions.nearest_label import score
from ai_assets.functions.semantic.top_k import semantic_top_k
from ai_assets.providers.openai_compatible import OpenAICompatibleProvider
from ai_assets.runtime.cache.sqlite import ResultCache
from ai_assets.runtime.engine import RunOptions
from ai_assets.runtime.errors import AIAssetsWarning
from ai_assets.runtime.guarantees import Accuracy
from ai_assets.runtime.results import Enriched
from ai_assets.runtime.retry import RetryPolicy
from tests.semantic_rows_judge import Judge
from tests.test_embedding_proxy import Match
from tests.test_embedding_proxy_hostile import Vectors

FAST = RunOptions(concurrency=8, retry=RetryPolicy(max_attempts=2, base_wait=0.0, max_wait=0.0))


def llm(judge: Judge) -> OpenAICompatibleProvider:
    return OpenAICompatibleProvider("judge", base_url=judge.base_url, api_key="unused")


def test_top_k_shows_the_pivot_in_both_positions(judge: Judge) -> None:
    """LLM judges favour one position of a pair (Zheng et al. 2023, "Judging LLM-as-a-Judge with MT-Bench", §3.3
    position bias; Wang et al. 2023, "Large Language Models are not Fair Evaluators"), which is why the module
    promises a pair order that spreads it over both sides. The pivot is compared with every row of its part, so if
    it always sat in one position the bias would all land on the pivot (always "better" for a first-position-biased
    model). Over a full ranking of 40 rows, the first pivot (in 39 comparisons) must appear as Document A in neither
    (almost) all nor (almost) none of them."""
    table = pa.table({"text": [f"doc {i}: score={(i * 37) % 100}.5" for i in range(40)]})
    semantic_top_k(table, "text", "highest score?", 40, provider=llm(judge), options=FAST)
    docs: Counter[str] = Counter()
    first: Counter[str] = Counter()
    for question in judge.questions:
        a, _, b = question.removeprefix("Document A:\n").partition("\n\nDocument B:\n")
        docs.update([a, b])
        first[a] += 1
    pivot, times = docs.most_common(1)[0]
    assert times == 39
    assert 0.25 <= first[pivot] / times <= 0.75, first[pivot]


def test_top_k_ranks_many_duplicate_texts_without_recursing_per_duplicate(judge: Judge) -> None:
    """Real tables repeat texts ("N/A", an empty review template, a re-posted message). A duplicate of the pivot
    is equal to it, not below it (the three-way partition of Bentley & McIlroy, "Engineering a Sort Function",
    1993, for quicksort over equal keys): ranking every row of 999 copies of one text and one other text must
    neither re-pivot once per copy (a Python recursion per copy: RecursionError past ~1,000) nor ask about the
    copies; equal texts rank next to each other, by row order."""
    texts = ["N/A"] * 999 + ["doc: score=90"]
    table = pa.table({"id": list(range(1000)), "text": texts})
    out = semantic_top_k(table, "text", "highest score?", 1000, provider=llm(judge), options=FAST)
    ranks = out.table.column("rank").to_pylist()
    assert ranks == list(range(1, 1001))
    ids = out.table.column("id").to_pylist()
    copies = [i for i in ids if i != 999]
    assert copies == sorted(copies)
    assert judge.requests <= 2


def test_chained_filters_and_a_re_ranked_top_k_replace_their_columns(judge: Judge) -> None:
    """Filters are chained (LOTUS: ``df.sem_filter(a).sem_filter(b)``; pandas' ``df[m1][m2]``), and a ranked table is
    ranked again. Every other function here replaces an output column that already exists where it stands
    (``runtime.columns.set_columns``); a second ``keep`` or ``rank`` column is a table no Parquet/Delta writer or
    pandas user can read unambiguously. The second verdict must be the one in ``keep``, once."""
    from ai_assets.functions.semantic.filter import semantic_filter

    table = pa.table({"text": [f"doc score={s}" for s in (10, 60, 70, 90)], "n": [1, 2, 3, 4]})
    once = semantic_filter(table, "text", "the score is high", provider=llm(judge), drop=False, options=FAST)
    assert isinstance(once, Enriched)
    flipped = once.table.set_column(0, "text", pa.array([f"doc score={s}" for s in (90, 10, 70, 60)]))
    twice = semantic_filter(flipped, "text", "the score is high", provider=llm(judge), drop=False, options=FAST)
    assert isinstance(twice, Enriched)
    assert twice.table.schema.names == ["text", "n", "keep", "keep_error"]
    assert twice.table.column("keep").to_pylist() == [True, False, True, True]
    ranked = semantic_top_k(table, "text", "highest score?", 3, provider=llm(judge), options=FAST)
    again = semantic_top_k(ranked.table, "text", "highest score?", 2, provider=llm(judge), options=FAST)
    assert again.table.schema.names == ["text", "n", "rank", "rank_error", "rank_cut"]
    assert again.table.column("rank").to_pylist() == [1, 2]


class Label(BaseModel):
    label: str
    confidence: float = Field(ge=0, le=1)


def test_many_labels_that_embed_identically_give_a_bounded_warning(llm: OpenAICompatibleProvider,
                                                                   tmp_path: Path) -> None:
    """An embedder that answers one vector for every text (a local model fed inputs it truncates to the same
    tokens, or a server that returns a placeholder: sentence-transformers truncates at ``max_seq_length``) and a
    label set of a product taxonomy (thousands of labels). Naming every identical pair is quadratic: 2,000 labels
    are 1,999,000 pairs in one warning (tens of MB). The warning must stay bounded and count the rest."""
    same = Vectors(lambda text: [1.0, 0.0, 0.0, 0.0])
    labels = [f"category {i}" for i in range(2000)]
    proxy = EmbeddingProxy(same, "text", labels)
    cascade = Cascade(["strong"], proxy=proxy, target=Accuracy(0.9), label_field="label",
                      confidence_field="confidence", label_budget=10)
    with pytest.warns(AIAssetsWarning) as caught:
        prompt(pa.table({"text": [f"item {i}" for i in range(20)]}), "Which category is {text}?", provider=llm,
               return_format=Label, cascade=cascade, cache=ResultCache(tmp_path / "j.sqlite"))
    identical = [str(w.message) for w in caught if "embed identically" in str(w.message)]
    assert identical and max(len(m) for m in identical) < 2000
    assert "1999000" in identical[0].replace(",", "")


def test_the_score_of_many_rows_against_many_labels_is_computed_in_bounded_memory() -> None:
    """The proxy scores every row of a table against every label at once: rows x labels float64 cosines, then as
    many exponentials (the softmax). 2,500 rows x 2,500 labels is ~50 MB per array; a partition of 100,000 rows
    with a 10,000-label taxonomy would be 8 GB per array. Scored in bounded row chunks, the peak stays small (numpy
    reports its allocations to tracemalloc) and the answers are the same."""
    import tracemalloc

    rng = np.random.default_rng(0)
    labels = rng.normal(size=(2500, 8))
    labels /= np.linalg.norm(labels, axis=1, keepdims=True)
    rows = rng.normal(size=(2500, 8))
    column = pa.array(list(rows.astype(np.float32)), pa.list_(pa.float32()))
    tracemalloc.start()
    try:
        nearest, confidence, why = score(column, [None] * 2500, labels, 0.05)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 32 * 2**20, peak
    cosines = (rows / np.linalg.norm(rows, axis=1, keepdims=True)) @ labels.T
    assert nearest == list(cosines.argmax(axis=1)) and not any(why)
    assert all(0 < c <= 1 for c in confidence)


class ContextLimitedJudge(Judge):
    """The judge whose ``/v1/embeddings`` refuses an input over 8,192 tokens (counted here as 4 characters a token)
    with HTTP 400, as OpenAI's text-embedding-3 models do ("This model's maximum context length is 8192 tokens";
    OpenAI's embeddings guide lists 8,192 as the max input)."""

    async def _embeddings(self, request: web.Request) -> web.Response:
        data = await request.json()
        inputs = data["input"] if isinstance(data["input"], list) else [data["input"]]
        longest = max(len(t) for t in inputs) // 4
        if longest > 8192:
            self.seen["embed_refused"] += 1
            return web.json_response({"error": {
                "message": f"This model's maximum context length is 8192 tokens, however you requested {longest} "
                           "tokens. Please reduce your prompt.", "type": "invalid_request_error"}}, status=400)
        return await super()._embeddings(request)


def test_top_k_embeds_the_text_it_compares_cut_to_max_chars() -> None:
    """A row over the embedder's context (a 200,000-character text, as a scraped page is) is compared cut to
    ``max_chars`` and says so in ``rank_cut``; the embedding pre-cut must read the same bounded text, else the
    embeddings request is refused (HTTP 400, see ``ContextLimitedJudge``) and the row, the best one here, is
    dropped from the ranking as "embedding failed"."""
    server = ContextLimitedJudge().start()
    try:
        table = pa.table({"id": list(range(30)),
                          "text": [f"doc {i}: score={i}" + (" pad" * 50_000 if i == 29 else "") for i in range(30)]})
        out = semantic_top_k(table, "text", "highest score?", 3, provider=llm(server), embedder=llm(server),
                             candidates=10, options=FAST)
    finally:
        server.stop()
    assert out.table.column("id").to_pylist() == [29, 28, 27]
    assert out.table.column("rank_cut").to_pylist() == [True, False, False]
    assert server.seen["embed_refused"] == 0


class Verbose(Judge):
    """A model that answers at length whatever it is asked (it repeats its documents three times): chat models
    are not bound to answer shorter than their input, only by ``max_tokens`` (OpenAI's Chat Completions
    reference), which the fold does not set."""

    async def _chat(self, request: web.Request) -> web.Response:
        data = await request.json()
        user = str(data["messages"][-1]["content"])
        self.seen["aggregate"] += 1
        return web.json_response({
            "id": "verbose", "object": "chat.completion", "created": 0, "model": "judge",
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": (user * 3)[:100_000]}}],
            "usage": {"prompt_tokens": 1 + len(user) // 4, "completion_tokens": 100, "total_tokens": 200}})


def test_aggregate_with_a_model_that_answers_longer_than_it_reads_stays_bounded() -> None:
    """Each partial answer is cut to half a request, so every level at least halves the parts and the fold ends
    within ``max_levels``; and the error cell stays bounded however many partial answers were cut (one
    message per cut group grew with the rows: 1,000 rows gave ~250 messages, tens of KB in one cell), while still
    saying how many were cut, and to what."""
    from ai_assets.functions.semantic.aggregate import semantic_aggregate

    server = Verbose().start()
    try:
        table = pa.table({"text": [f"entry {i} " + "y" * 300 for i in range(1000)]})
        out = semantic_aggregate(table, "text", "Summarize.", provider=llm(server), max_input_tokens=400,
                                 max_levels=12, options=FAST)
    finally:
        server.stop()
    row = out.table.to_pylist()[0]
    assert row["aggregate"] is not None and row["aggregate_rows"] == 1000
    assert row["aggregate_levels"] <= 12
    assert len(row["aggregate_error"]) < 1000, len(row["aggregate_error"])
    assert "cut to 768 characters" in row["aggregate_error"]


class LooseJudge(Judge):
    """The judge answering the comparison in the words a model uses when its output is not constrained to the
    schema's enum: ``"a"``, ``" B"``, ``"Document A"``. Anthropic documents that tool inputs follow the schema
    only with strict tool use; OpenAI-compatible servers in JSON mode (``json_object``: Ollama, llama.cpp without a
    grammar) constrain the JSON, not an enum's casing."""

    async def _chat(self, request: web.Request) -> web.Response:
        response = await super()._chat(request)
        body = json.loads(response.body)  # type: ignore[arg-type]
        message = body["choices"][0]["message"]
        better = json.loads(message["content"])["better"]
        message["content"] = json.dumps({"better": {"A": "document a", "B": " B"}[better] if self.requests % 2
                                         else better.lower()})
        return web.json_response(body)


def test_top_k_reads_a_comparison_answered_in_another_casing() -> None:
    """A verdict of "a", " B" or "Document A" names a document as plainly as "A": it is read as that document,
    not re-asked until the attempts run out (which left every such row unranked, with an error)."""
    server = LooseJudge().start()
    try:
        table = pa.table({"id": list(range(12)), "text": [f"doc {i}: score={(i * 7) % 12}" for i in range(12)]})
        out = semantic_top_k(table, "text", "highest score?", 4, provider=llm(server), options=FAST)
    finally:
        server.stop()
    truth = sorted(range(12), key=lambda i: -((i * 7) % 12))[:4]
    assert out.table.column("id").to_pylist() == truth
    assert out.usage.reasks == 0


def test_top_k_and_aggregate_estimate_what_a_run_sends_without_sending(judge: Judge) -> None:
    """``RunOptions(mode="estimate")`` (and ``python -m ai_assets.dagster.estimate``, which runs every selected
    enrichment in it) must price a run without calling the model, as every other enrichment does; these two
    raised a ConfigError, which failed the whole estimate command. Which comparisons a quickselect asks depends on
    the answers, so the estimate is the first split's questions (known exactly) scaled to LOTUS's expected count
    (about 2n + k log k); a fold's first level is known exactly, and at most as many requests again fold it.
    The estimate must be within a factor 2 of what the live run then sends."""
    from ai_assets.functions.semantic.aggregate import semantic_aggregate

    table = pa.table({"id": list(range(60)), "text": [f"doc {i}: score={(i * 37) % 60} value={i}" for i in range(60)]})
    estimate = RunOptions(mode="estimate")
    ranked = semantic_top_k(table, "text", "highest score?", 5, provider=llm(judge), options=estimate)
    folded = semantic_aggregate(table, "text", "Sum the values.", provider=llm(judge), max_input_tokens=200,
                                options=estimate)
    assert judge.requests == 0
    assert ranked.usage.estimated and folded.usage.estimated
    semantic_top_k(table, "text", "highest score?", 5, provider=llm(judge), options=FAST)
    compared = judge.requests
    semantic_aggregate(table, "text", "Sum the values.", provider=llm(judge), max_input_tokens=200, options=FAST)
    aggregated = judge.requests - compared
    assert compared / 2 <= ranked.usage.requests <= compared * 2, (ranked.usage.requests, compared)
    assert aggregated <= folded.usage.requests <= aggregated * 2, (folded.usage.requests, aggregated)
    assert ranked.usage.prompt_tokens > 0 and folded.usage.prompt_tokens > 0


def test_the_estimate_command_prices_top_k_and_aggregate_assets(judge: Judge, tmp_path: Path) -> None:
    """``ai_assets.dagster.estimate`` over Definitions holding a top-k and an aggregate asset: a row each, with
    requests to send, and nothing sent (the command is documented in docs/cost.md for every enrichment)."""
    from ai_assets.dagster import OpenAICompatibleResource, ParquetIOManager, ResultCacheResource
    from ai_assets.dagster.estimate import estimate
    from ai_assets.dagster.semantic_rows import semantic_aggregate_asset, semantic_top_k_asset

    @dg.asset
    def docs() -> pa.Table:
        return pa.table({"text": [f"doc {i}: score={i} value={i}" for i in range(20)]})

    best = semantic_top_k_asset("best", docs, column="text", query="highest score?", k=3)
    total = semantic_aggregate_asset("total", docs, column="text", instruction="Sum the values.")
    defs = dg.Definitions(assets=[docs, best, total], resources={
        "llm": OpenAICompatibleResource(model="judge", base_url=judge.base_url, api_key="sk-test-secret"),
        "ai_cache": ResultCacheResource(path=str(tmp_path / "journal.sqlite")),
        "io_manager": ParquetIOManager(root=str(tmp_path / "store"))})
    rows = {r["asset"]: r for r in estimate(defs, ["best", "total"], [None])}
    assert set(rows) == {"best", "total"}
    assert rows["best"]["tokens in"] > 0 and rows["total"]["tokens in"] > 0
    assert judge.requests == 0


@pytest.mark.parametrize(("line", "message"), [
    ("k: five", "valid integer"),  # red before: a bare TypeError
    ("k: -1", r"k must be >= 0|greater than or equal to 0"),  # guards: the range still holds, naming the field
    ("candidates: 0", r"candidates must be >= 1|greater than or equal to 1")])
def test_a_wrong_yaml_value_names_the_field(line: str, message: str) -> None:
    """A YAML value of the wrong type or range (``k: five``): the error names the field, as pydantic's errors
    do for every other component field. ``Field(ge=0)`` on Dagster's YAML model (which also takes a template
    string for an int) made pydantic raise a bare ``TypeError: Unable to apply constraint 'ge' to supplied value
    five``, naming neither the field nor the file, under ``dg check defs``."""
    from pydantic import ValidationError

    from ai_assets.dagster.components.semantic_rows import SemanticTopKComponent

    yaml = "name: top\nupstream: docs\ncolumn: text\nquery: best?\nk: 3\n"
    yaml = yaml.replace("k: 3", line) if line.startswith("k:") else yaml + line + "\n"
    with pytest.raises(ValidationError, match=message) as caught:
        SemanticTopKComponent.resolve_from_yaml(yaml)
    assert line.split(":", maxsplit=1)[0] in str(caught.value)


class DropsOne(Vectors):
    """A local embedder that returns one vector fewer than it was given texts for the rows (their texts start
    with "cat"; the labels' call is whole): a model wrapper that drops an input it cannot encode. The engine must
    make that the rows' error, not crash the call."""

    def embed_text(self, texts: Any) -> np.ndarray:
        vectors = super().embed_text(texts)
        return vectors[:-1] if any(t.startswith("cat") for t in texts) else vectors


def test_an_embedder_that_returns_fewer_vectors_sends_the_rows_to_the_oracle(llm: OpenAICompatibleProvider,
                                                                             tmp_path: Path) -> None:
    """OpenAI's embeddings response has one ``data`` item per input (its API reference); a remote answer with
    fewer is already each row's error. A local embedder's short answer raised a bare ``ValueError: zip() argument
    2 is shorter than argument 1`` out of the whole prompt call. Now the rows' embeddings fail, naming the counts,
    and the oracle answers them (the proxy's warning names the rows)."""
    proxy = EmbeddingProxy(DropsOne(lambda text: [1.0, 0.0] if "cat" in text else [0.0, 1.0]), "text",
                           {True: "a cat", False: "a dog"})
    cascade = Cascade(["strong"], proxy=proxy, target=Accuracy(0.9), label_field="match",
                      confidence_field="confidence", label_budget=5)
    with pytest.warns(AIAssetsWarning, match=r"gave no answer to 12 row\(s\).*returned \d+ result\(s\) for"):
        out = prompt(pa.table({"text": [f"cat {i}" for i in range(12)]}), "Is {text} about cats?", provider=llm,
                     return_format=Match, cascade=cascade, cache=ResultCache(tmp_path / "j.sqlite"))
    assert out.table.column("response_model").to_pylist() == ["strong"] * 12


def test_a_single_run_backfill_folds_an_empty_partition_as_its_own_run_does(judge: Judge, tmp_path: Path) -> None:
    """Dagster's ``BackfillPolicy.single_run()`` materializes a range of partitions in one run. An aggregate is
    one row per partition: run alone, a partition without rows gets that row (a null answer saying "no rows", as
    SQL's aggregate over no rows is one NULL row); in a range run it got no row at all, because the partitions
    were read off the rows' ``_partition`` values. Each partition of the run gets its row."""
    from ai_assets.dagster import OpenAICompatibleResource, ParquetIOManager, ResultCacheResource
    from ai_assets.dagster.semantic_rows import semantic_aggregate_asset
    from ai_assets.storage.base import PARTITION_COLUMN

    parts = dg.StaticPartitionsDefinition(["a", "b", "c"])
    common: dict[str, Any] = {"partitions_def": parts, "backfill_policy": dg.BackfillPolicy.single_run()}

    @dg.asset(**common)
    def src(context) -> pa.Table:  # type: ignore[no-untyped-def]  # Dagster reads no string annotation here
        rows = [(key, f"doc {key}{i}: value={i}") for key in context.partition_keys if key != "b" for i in range(4)]
        return pa.table({"text": [r[1] for r in rows], PARTITION_COLUMN: [r[0] for r in rows]})

    total = semantic_aggregate_asset("total", src, column="text", instruction="Sum the values.", options=FAST,
                                     **common)
    store = ParquetIOManager(root=str(tmp_path / "store"))
    result = dg.materialize([src, total], resources={
        "llm": OpenAICompatibleResource(model="judge", base_url=judge.base_url, api_key="sk-test-secret"),
        "ai_cache": ResultCacheResource(path=str(tmp_path / "journal.sqlite")), "io_manager": store},
        tags={"dagster/asset_partition_range_start": "a", "dagster/asset_partition_range_end": "c"})
    assert result.success
    rows = {key: store.store(dg.AssetKey("total"), {}).read([key]).to_pylist() for key in "abc"}
    assert rows["a"][0]["total"] == rows["c"][0]["total"] == "value=6"
    assert len(rows["b"]) == 1 and rows["b"][0]["total"] is None and "no rows" in rows["b"][0]["total_error"]


def test_top_k_with_the_provider_down_ranks_no_row_it_never_compared(judge: Judge) -> None:
    """OpenAI's 503 on every request (the provider down for the whole run, after the engine's retries): no
    comparison succeeds, so no row has a rank. The pivot left after the re-pivots came out as rank 1 with no
    error, a result no model gave, stored as answered; it must be an error like the rest."""
    from dataclasses import replace

    judge.down = True
    table = pa.table({"id": list(range(10)), "text": [f"doc {i}: score={i}" for i in range(10)]})
    out = semantic_top_k(table, "text", "best?", 3, provider=llm(judge), options=replace(FAST, on_error="null"))
    assert out.table.column("rank").null_count == 10
    assert out.table.column("rank_error").null_count == 0
    assert out.usage.answered == 0 and len(out.failed.table()) == 10
