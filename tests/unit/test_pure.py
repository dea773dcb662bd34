"""The fast tier: pure helpers, no model, no process, no network (``pytest -m "not slow"`` runs only these)."""

from __future__ import annotations

import asyncio
import datetime as dt
import enum
from email.utils import format_datetime
from typing import Annotated, Literal

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel, Field

from ai_assets.functions.arrow_types import model_struct
from ai_assets.functions.ingest import resolve_path
from ai_assets.functions.preprocess import Extract, extraction, regexp_extract
from ai_assets.functions.templates import Template, column_texts
from ai_assets.runtime.budget import Budget, BudgetExceededError
from ai_assets.runtime.errors import AttemptUsage, ConfigError, Skip, SkipKind, bounded
from ai_assets.runtime.limits import TokenCost
from ai_assets.runtime.prices import lookup
from ai_assets.runtime.ratelimit.stores import FileStore, MemoryStore
from ai_assets.runtime.retry import retry_after_seconds
from ai_assets.runtime.tokens import estimate_cost
from ai_assets.runtime.usage import Prices
from ai_assets.runtime.vectors import decode_vector, encode_vector, vectors_to_arrow
from ai_assets.runtime.windows import windows
from ai_assets.storage.base import MAX_NAME_CHARS, decode_key, encode_key, file_key, partition_filter, sql_literal


@pytest.mark.parametrize("key", ["2024-11-01", "../../x", "a' OR '1'='1", 'x"', "a/b", ".", "..", "~7E", "é😀",
                                 "a b\tc", "_-_"])
def test_partition_keys_round_trip_and_stay_in_one_path_part(key: str) -> None:
    encoded = encode_key(key)
    assert decode_key(encoded) == key
    assert "/" not in encoded and "." not in encoded and encoded not in ("", "..")


def test_distinct_keys_never_share_a_file_name() -> None:
    keys = ["a", "A", "a~41", "~", "%41", "a.b", "a_b", "a-b", "a/b", "a b"]
    assert len({encode_key(k) for k in keys}) == len(keys)


def test_long_keys_get_bounded_names_that_stay_distinct() -> None:
    long = "東京の天気" * 24  # 120 CJK characters: 1,080 bytes once escaped
    names = {file_key(long), file_key(long + "x"), file_key(long[:-1])}
    assert len(names) == 3
    assert all(len(n.encode()) <= 255 - len("part=.parquet") for n in names)
    assert file_key("2024-11-01") == "2024-11-01" and len(file_key("a" * MAX_NAME_CHARS)) == MAX_NAME_CHARS


def test_sql_literals_escape_quotes_and_refuse_nul() -> None:
    assert sql_literal("a' OR '1'='1") == "'a'' OR ''1''=''1'"
    assert partition_filter(["x", "y'"]) == "_partition IN ('x', 'y''')"
    with pytest.raises(ConfigError, match="NUL"):
        sql_literal("a\x00b")


def test_retry_after_in_seconds_milliseconds_and_http_dates() -> None:
    assert retry_after_seconds({"retry-after": "3"}) == 3.0
    assert retry_after_seconds({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    when = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=30)
    assert 28 <= (retry_after_seconds({"retry-after": format_datetime(when, usegmt=True)}) or 0) <= 30
    past = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=30)
    assert retry_after_seconds({"retry-after": format_datetime(past, usegmt=True)}) == 0.0
    assert retry_after_seconds({"retry-after": "soon"}) is None and retry_after_seconds({}) is None


class Colour(enum.Enum):
    RED = "red"


class Inner(BaseModel):
    tags: list[str]


class Outer(BaseModel):
    name: str
    count: int
    score: float | None
    flag: bool
    colour: Colour
    kind: Literal["a", "b"]
    when: dt.date
    inner: Inner
    many: list[Inner]
    bounded: Annotated[str, Field(max_length=3)]
    weights: dict[str, float]


def test_pydantic_models_become_arrow_structs() -> None:
    assert model_struct(Outer) == pa.struct([
        ("name", pa.string()), ("count", pa.int64()), ("score", pa.float64()), ("flag", pa.bool_()),
        ("colour", pa.string()), ("kind", pa.string()), ("when", pa.date32()),
        ("inner", pa.struct([("tags", pa.list_(pa.string()))])),
        ("many", pa.list_(pa.struct([("tags", pa.list_(pa.string()))]))), ("bounded", pa.string()),
        ("weights", pa.map_(pa.string(), pa.float64()))])


def test_unions_of_several_types_are_refused_by_field_name() -> None:
    class Bad(BaseModel):
        value: int | str

    with pytest.raises(ConfigError, match=r"Bad.value: unions of several types"):
        model_struct(Bad)


def test_templates_name_their_columns_and_explain_braces() -> None:
    assert Template("{title}: {text} ({title})").columns == ("title", "text")
    assert Template("literal {{braces}} and {x}").columns == ("x",)
    with pytest.raises(ConfigError, match=r"template 'oops }': Single '}'.*write a literal brace as \{\{ or \}\}"):
        _ = Template("oops }").columns
    with pytest.raises(ConfigError, match="format specs are not supported"):
        _ = Template("{x:>10}").columns


def test_template_rows_with_null_or_blank_input_are_skipped_with_a_typed_reason() -> None:
    table = pa.table({"a": ["x", None, "  ", "y"], "b": ["1", "2", "3", ""]})
    texts, skips = Template("{a}-{b}").render(table)
    assert texts == ["x-1", None, None, None]
    assert skips == [None, Skip(SkipKind.NULL, "a"), Skip(SkipKind.EMPTY), Skip(SkipKind.EMPTY)]
    assert str(skips[1]) == "skipped: column 'a' is null" and str(skips[2]) == "skipped: empty input"


def test_text_columns_must_exist_and_hold_text() -> None:
    table = pa.table({"tags": [["a", "b"]], "n": [1]})
    with pytest.raises(ConfigError, match=r"column 'tags' holds list<item: string>, not text"):
        column_texts(table, "tags")
    with pytest.raises(ConfigError, match=r"column 'nope' is not in the table \(columns: \['tags', 'n'\]\)"):
        column_texts(table, "nope")


@pytest.mark.parametrize(("pattern", "group", "value", "expected"), [
    (r"[(](\d+)", 1, "price (42) usd", "42"),              # a "(" inside a class is not a group
    (r"\((\d+)\)", 0, "price (42) usd", "(42)"),
    (r"(?P<id>\d+)-(?P<name>\w+)", "name", "7-bob", "bob"),  # a pattern that already names its groups
    (r"(?P<id>\d+)-(?P<name>\w+)", 1, "7-bob", "7"),
    (r"(a)|(b)", 2, "xb", "b"),
    (r"(?i)(ABC)", 1, "xxabcxx", "abc"),
    (r"line (\d)", 1, "first\nline 5\nlast", "5"),
    (r"(\d+)", 1, "no digits", None),
])
def test_regex_extraction_uses_the_engine_s_own_groups(pattern: str, group: int | str, value: str,
                                                        expected: str | None) -> None:
    out = regexp_extract(pa.table({"s": [value, None]}), "out", Extract("s", pattern, group))
    assert out.column("out").to_pylist() == [expected, None]


def test_regex_groups_that_do_not_exist_are_refused() -> None:
    with pytest.raises(ConfigError, match="has 1 group"):
        extraction(r"(a)", 2)
    with pytest.raises(ConfigError, match="no group named 'x'"):
        extraction(r"(?P<y>a)", "x")


def test_paths_fill_partitions_and_refuse_escapes() -> None:
    assert resolve_path("data/{region}/{date}.csv", {"region": "eu", "date": "2024-11-01", "partition": "p"}) \
        == "data/eu/2024-11-01.csv"
    for bad in ("../etc", "a/b", "..", "a\\b", "x\x00"):
        with pytest.raises(ConfigError, match="cannot be used in a path"):
            resolve_path("data/{partition}.jsonl", {"partition": bad})
    with pytest.raises(ConfigError, match=r"names \{day\}"):
        resolve_path("data/{day}.jsonl", {"partition": "x"})


@pytest.mark.parametrize("store_kind", ["memory", "file"])
def test_gcra_reserves_in_sequence_and_corrects(store_kind: str, tmp_path: pytest.TempPathFactory) -> None:
    now = [1000.0]  # an injected clock: the figures are exact however loaded the machine is
    store = MemoryStore(lambda: now[0]) if store_kind == "memory" else FileStore(str(tmp_path), lambda: now[0])

    async def run() -> list[float]:
        waits = [await store.reserve("b", 1.0), await store.reserve("b", 1.0)]
        await store.adjust("b", -0.5)  # the second request cost half what was reserved
        waits.append(await store.reserve("b", 1.0))
        waits.append(await store.reserve("other", 0.25))
        now[0] += 10.0  # idle for longer than the bucket's backlog: no credit is banked
        waits.append(await store.reserve("b", 1.0))
        return waits

    first, second, third, other, after_idle = asyncio.run(run())
    assert first == 1.0  # no burst at start: even the first waits its own cost
    assert second == 2.0
    assert third == 2.5
    assert other == 0.25  # buckets are independent
    assert after_idle == 1.0


def test_token_costs_bill_caps_whole_and_answers_by_length() -> None:
    capped = estimate_cost([{"role": "user", "content": "x" * 400}], 50)
    assert capped == TokenCost(104, 50, output_is_cap=True)
    assert capped.billed(AttemptUsage(90, 3)) == 140  # the cap counts whole, as providers count max_tokens
    open_ended = estimate_cost([{"role": "user", "content": [{"type": "text", "text": "hi"},
                                                              {"type": "image_url", "image_url": {}}]}], None)
    assert open_ended.prompt == 0 + 4 + 765 and open_ended.output == 256 and not open_ended.output_is_cap
    assert open_ended.billed(AttemptUsage(800, 12)) == 812


def test_budget_stops_before_the_cap_and_says_what_was_spent() -> None:
    budget = Budget(max_tokens=1_000)
    held = budget.reserve(TokenCost(400, 100, output_is_cap=True))
    budget.release(TokenCost(400, 100, output_is_cap=True), held)
    budget.spend(AttemptUsage(400, 90))
    # No output cap: the completion held is the run's average so far (90), not the 100 reserved by default.
    assert budget.reserve(TokenCost(400, 100)) == 90  # 490 spent + 490 = 980: still within the cap
    with pytest.raises(BudgetExceededError, match=r"max_tokens=1,000.*spent 490 tokens \(400 in, 90 out\)"):
        budget.reserve(TokenCost(21, 10, output_is_cap=True))
    dollars = Budget(max_cost=0.01, prices=Prices(1.0, 2.0))
    dollars.spend(AttemptUsage(5_000, 2_000))
    with pytest.raises(BudgetExceededError, match=r"max_cost=\$0.0100.*\$0.0090"):
        dollars.reserve(TokenCost(1_001, 0))  # would pass the cap by a hair
    with pytest.raises(ConfigError, match="max_cost needs prices"):
        Budget(max_cost=1.0)


def test_prices_match_dated_model_names() -> None:
    assert lookup("gpt-4o-mini-2024-07-18") == lookup("gpt-4o-mini") == Prices(0.15, 0.60,
                                                                                cached_input_per_million=0.075)
    assert lookup("gpt-4o-2024-08-06") == Prices(2.50, 10.00, cached_input_per_million=1.25)
    assert lookup("my-local-model") is None
    assert Prices(1.0, 2.0).cost(1_000_000, 500_000) == 2.0
    assert Prices(1.0, 2.0).cost(1_000_000, 500_000, batch=True) == 1.0
    # cached prompt tokens at the cached rate (none given: the input rate), never more of them than the prompt
    assert Prices(1.0, 2.0, cached_input_per_million=0.1).cost(1_000_000, 0, cached_tokens=600_000) == 0.46
    assert Prices(1.0, 2.0).cost(1_000_000, 0, cached_tokens=600_000) == 1.0
    assert Prices(1.0, 0.0, cached_input_per_million=0.0).cost(10, 0, cached_tokens=99) == 0.0


def test_vectors_round_trip_through_base64_and_arrow() -> None:
    vector = np.array([0.5, -1.25, 3.0], dtype=np.float32)
    assert np.array_equal(decode_vector(encode_vector(vector)), vector)
    assert np.array_equal(decode_vector([0.5, -1.25, 3.0]), vector)  # what earlier journals stored
    column = vectors_to_arrow([vector, None], 3)
    assert column.type == pa.list_(pa.float32(), 3) and column.null_count == 1


def test_windows_cut_by_rows_and_bytes_and_keep_every_row_in_order() -> None:
    table = pa.table({"i": list(range(1_000)), "pad": ["x" * 100] * 1_000})
    by_rows = list(windows(table.to_batches(max_chunksize=300), rows=256, nbytes=1 << 30))
    assert [b.num_rows for b in by_rows] == [256, 256, 256, 232]
    by_bytes = list(windows(table.to_batches(), rows=10_000, nbytes=table.nbytes // 4))
    assert len(by_bytes) >= 4
    assert pa.Table.from_batches(by_bytes).column("i").to_pylist() == list(range(1_000))


def test_error_text_is_bounded_and_scrubbed() -> None:
    text = bounded("key sk-live-123 failed " + "x" * 500, ["sk-live-123"])
    assert "sk-live-123" not in text and len(text) == 300 and text.endswith("…")


@pytest.mark.parametrize("name", ["timeout_s", "rpm", "tpm", "max_cost", "max_tokens"])
@pytest.mark.parametrize("value", [float("nan"), float("inf"), -1.0, 0.0, "10"])
def test_run_options_refuse_a_limit_that_is_not_a_finite_positive_number(name: str, value: object) -> None:
    """NaN compares false with everything, so a bare `value <= 0` let RunOptions(timeout_s=nan) through: every
    request would then wait forever (asyncio.timeout(nan) never fires)."""
    from ai_assets import RunOptions

    with pytest.raises(ConfigError, match=f"RunOptions.{name} must be > 0"):
        RunOptions(**{name: value})  # type: ignore[arg-type]


def test_a_summary_over_its_bound_keeps_whole_sentences_or_says_it_was_cut() -> None:
    """A local model under a grammar stops at the schema's maxLength mid-word ("...within a year get"); a remote
    one may ignore the word bound. Neither may end a summary mid-sentence without saying so."""
    from ai_assets.functions.tasks import bounded_summary

    assert bounded_summary("Short and whole.", 10) == "Short and whole."
    assert bounded_summary("One two three. Four five six seven eight nine ten eleven", 10) == \
        "One two three. Four five six seven eight nine ten …"  # the sentence is under half the bound
    assert bounded_summary("One two three four five six. Seven eight nine ten eleven", 10) == \
        "One two three four five six."
    cut_by_grammar = ("Covers water damage within a year get " * 7)[:240]  # 12 x max_words characters
    assert bounded_summary(cut_by_grammar, 20).endswith(" …")
    assert bounded_summary("", 5) == ""


@given(st.text(max_size=400), st.integers(1, 60))
def test_a_bounded_summary_never_exceeds_its_words(text: str, max_words: int) -> None:
    from ai_assets.functions.tasks import bounded_summary

    out = bounded_summary(text, max_words)
    assert len([w for w in out.split() if w != "…"]) <= max_words
