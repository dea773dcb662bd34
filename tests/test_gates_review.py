"""A hostile review of golden sets and gate selection (issue 26): golden files written the way people write them
(CSV with numeric-looking labels, a BOM, a name given twice, text in another Unicode normal form, huge numbers),
and a run that leaves a gate's check out of its selection."""

import json
import unicodedata
from pathlib import Path

import dagster as dg
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ai_assets import RunOptions
from ai_assets.dagster import OpenAICompatibleResource, ParquetIOManager, ResultCacheResource, prompt_asset
from ai_assets.dagster.gates import GoldenSet
from ai_assets.runtime.errors import ConfigError
from ai_assets.runtime.quality import golden_inputs, matches
from ai_assets.testing import FakeOpenAIServer


def golden(path: Path, data: bytes) -> GoldenSet:
    path.write_bytes(data)
    return GoldenSet(path=str(path))


def test_a_boolean_expectation_never_matches_a_number() -> None:
    """RFC 8259 section 3: ``true``/``false`` and numbers are distinct JSON values (and JSON Schema's ``boolean``
    type does not admit 1). Python's ``True == 1`` made a golden ``{"spam": true}`` pass for an answer ``1``, and an
    expected count ``1`` pass for an answer ``true``."""
    assert not matches(1, True) and not matches(True, 1) and not matches(0, False)
    assert not matches({"spam": 1}, {"spam": True}) and not matches([True], [1])
    assert matches(True, True) and matches(1.0, 1) and matches({"n": 2}, {"n": 2.0})


def test_text_in_another_unicode_normal_form_is_the_same_text() -> None:
    """The Unicode Standard, section 3.13 (D145, canonical caseless match): "café" precomposed (U+00E9) and
    decomposed (e + U+0301) are canonically equivalent; models and editors emit either. casefold() alone kept
    them apart, so a correct answer was scored a miss. Turkish dotted I is a language tailoring, not the default
    folding, and stays apart."""
    assert matches(unicodedata.normalize("NFD", "Café"), "café")
    assert matches("café", unicodedata.normalize("NFD", "CAFÉ"))
    assert matches("STRASSE", "straße")
    assert not matches("İstanbul", "istanbul")


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=12)


@settings(max_examples=200, deadline=None)
@given(JSON_VALUES, st.booleans(), st.integers(-2, 2) | st.floats(-2, 2))
def test_an_answer_matches_itself_and_a_boolean_never_matches_a_number(value: object, flag: bool,
                                                                        number: float) -> None:
    """Any JSON value (RFC 8259) matches itself, whatever its nesting; a boolean never matches a number, in
    either direction and however deep (RFC 8259 section 3)."""
    assert matches(value, value)
    assert not matches(number, flag) and not matches(flag, number)
    assert not matches({"a": [number]}, {"a": [flag]})


def test_a_golden_line_that_gives_a_name_twice_is_an_error_naming_the_line(tmp_path: Path) -> None:
    """RFC 8259 section 4: names within an object SHOULD be unique, and where they are not, "the behavior of
    software that receives such an object is unpredictable" (Python keeps the last one silently, other readers the
    first). A golden line with two ``expected`` values was scored against whichever Python kept."""
    gate = golden(tmp_path / "g.jsonl", b'{"text": "a", "expected": "x"}\n{"text": "b", "expected": "x", '
                                         b'"expected": "y"}\n')
    with pytest.raises(ConfigError, match=r"g\.jsonl: line 2: the name 'expected' appears twice"):
        gate.golden()


def test_a_number_beyond_a_double_is_an_error_naming_the_line(tmp_path: Path) -> None:
    """RFC 8259 section 6 lets an implementation limit the range of numbers; Python read ``1e400`` as infinity,
    which reached the prompt as the text "inf". A golden input beyond a double is refused, naming the line; an
    integer beyond 64 bits is named as such, not as a type clash with rows before it (there are none)."""
    with pytest.raises(ConfigError, match=r"line 1: not JSON \(the number 1e400 is beyond the range of a double"):
        golden(tmp_path / "g.jsonl", b'{"text": 1e400, "expected": "y"}\n').golden()
    rows = golden(tmp_path / "h.jsonl", b'{"text": 123456789012345678901234567890, "expected": "y"}\n').golden()
    with pytest.raises(ConfigError, match=r"line 1: 'text' cannot be an Arrow value"):
        golden_inputs(rows, "h.jsonl")


def test_csv_golden_cells_are_the_text_they_hold(tmp_path: Path) -> None:
    """RFC 4180: a CSV field is text. Arrow's type inference read an expected label "1" as the number 1, which no
    text answer matches (a classifier answering "1" scored 0), and a zip code "01234" as 1234 in the prompt."""
    gate = golden(tmp_path / "g.csv", b"zip,expected\n01234,1\n99999,2\n")
    rows = gate.golden()
    assert [r.expected for r in rows] == ["1", "2"] and matches("1", rows[0].expected)
    assert golden_inputs(rows, "g.csv").column("zip").to_pylist() == ["01234", "99999"]


def test_an_empty_expected_cell_is_an_error_naming_the_row(tmp_path: Path) -> None:
    """An empty CSV cell (RFC 4180 allows it) is the commonest way to forget an expectation; it expected the
    empty answer, which a model never gives, instead of being named."""
    with pytest.raises(ConfigError, match=r"g\.csv: row 2: 'expected' is empty text"):
        golden(tmp_path / "g.csv", b"text,expected\nfoo,yes\nbar,\n").golden()


def test_a_bom_before_a_blank_first_line_and_an_upper_case_suffix_are_read(tmp_path: Path) -> None:
    """RFC 8259 section 8.1 lets a parser ignore a UTF-8 byte order mark, which Windows editors write even before
    a blank line (CRLF line ends); it was read as a line that is not JSON. ``.JSONL`` (a Windows name) is JSON
    Lines like ``.jsonl``."""
    gate = golden(tmp_path / "G.JSONL", b'\xef\xbb\xbf\r\n{"text": "b", "expected": "y"}\r\n')
    (row,) = gate.golden()
    assert row.where == "line 2" and row.inputs == {"text": "b"} and row.expected == "y"


@dg.asset
def notes() -> pa.Table:
    return pa.table({"text": [f"note {i}" for i in range(4)]})


def test_a_gate_left_out_of_the_run_selection_neither_pays_nor_blocks(tmp_path: Path) -> None:
    """Dagster runs only the checks a run selects (``AssetSelection.without_checks()``, a check deselected in the
    launchpad): an unselected check does not execute. The golden set's gate still sent its golden rows and failed
    the step for a check nobody asked for."""
    gate = GoldenSet(rows=pa.table({"text": ["the golden note"], "expected": ["never answered like this"]}),
                     min_score=1.0)
    answers = prompt_asset("answers", notes, template="Note: {text}", golden_set=gate,
                           options=RunOptions(on_error="null"))
    with FakeOpenAIServer() as server:
        res = {"llm": OpenAICompatibleResource(model="m", base_url=server.base_url, api_key="k"),
               "io_manager": ParquetIOManager(root=str(tmp_path / "out")),
               "ai_cache": ResultCacheResource(path=str(tmp_path / "journal.sqlite"))}
        assert dg.materialize([notes], resources=res).success
        result = dg.materialize([notes, answers], resources=res, raise_on_error=False,
                                selection=dg.AssetSelection.assets("answers").without_checks())
        assert result.success and not result.get_asset_check_evaluations()
        assert "Note: the golden note" not in server.stats().by_key  # the golden row was not paid for
        assert server.stats().requests == 4
        gated = dg.materialize([notes, answers], resources=res, raise_on_error=False,
                               selection=dg.AssetSelection.assets("answers"))
        assert not gated.success  # selected, the gate still blocks
        (verdict,) = gated.get_asset_check_evaluations()
        assert verdict.check_name == "golden_set" and not verdict.passed
        assert json.loads(json.dumps(verdict.metadata["golden_rows"].value)) == 1


DEFINITIONS = '''
import os
import dagster as dg
import pyarrow as pa
from ai_assets import RunOptions
from ai_assets.dagster import OpenAICompatibleResource, ParquetIOManager, ResultCacheResource, prompt_asset
from ai_assets.dagster.gates import GoldenSet

DAYS = dg.StaticPartitionsDefinition(["a", "b"])


@dg.asset(partitions_def=DAYS)
def reviews(context):
    return pa.table({"text": [f"{context.partition_key} review {i}" for i in range(5)]})


golden = GoldenSet(rows=pa.table({"text": ["g1", "g2", "g3"], "expected": ["x", "y", "z"]}), min_score=0.0)
verdicts = prompt_asset("verdicts", reviews, template="Judge: {text}", options=RunOptions(on_error="null"),
                        partitions_def=DAYS, golden_set=golden, dead_letter=True, max_error_rate=1.0)
defs = dg.Definitions(assets=[reviews, verdicts], resources={
    "llm": OpenAICompatibleResource(model="gpt-4o-mini", base_url=os.environ["FAKE_BASE"], api_key="k"),
    "io_manager": ParquetIOManager(root=os.environ["WAREHOUSE"]),
    "ai_cache": ResultCacheResource(path=os.environ["WAREHOUSE"] + "/journal.sqlite")})
'''


def test_an_estimate_counts_the_golden_rows_a_real_run_pays_for_once(tmp_path: Path) -> None:
    """The estimate's promise (docs/cost.md): what a run would send. A real run first sends the golden set's rows
    (once; afterwards the journal answers them), and the estimate left them out: 3 golden rows here, up to
    ``max_rows`` = 1,000 in general, unpriced. Run as users run it, ``python -m ai_assets.dagster.estimate``."""
    import os
    import subprocess
    import sys

    (tmp_path / "defs.py").write_text(DEFINITIONS)
    with FakeOpenAIServer() as server:
        env = {**os.environ, "FAKE_BASE": server.base_url, "WAREHOUSE": str(tmp_path / "warehouse")}

        def estimate() -> list[dict[str, object]]:
            done = subprocess.run([sys.executable, "-m", "ai_assets.dagster.estimate", "-f", str(tmp_path / "defs.py"),
                                   "--select", "verdicts", "--partition", "a", "--partition", "b", "--json"],
                                  env=env, capture_output=True, text=True, timeout=300, check=True)
            rows: list[dict[str, object]] = json.loads(done.stdout.splitlines()[-1])
            return rows

        before = {r["partition"]: r for r in estimate()}
        assert server.stats().requests == 0
        assert set(before) == {"(golden_set)", "a", "b"}  # the golden rows once, not once per partition
        assert before["(golden_set)"]["to send"] == 3 and before["a"]["to send"] == 5
        assert isinstance(before["(golden_set)"]["live $"], float) and before["(golden_set)"]["live $"] > 0

        os.environ.update(FAKE_BASE=env["FAKE_BASE"], WAREHOUSE=env["WAREHOUSE"])
        try:
            from ai_assets.dagster.estimate import load_definitions

            defs = load_definitions(tmp_path / "defs.py")
            result = dg.materialize(list(defs.assets or []), partition_key="a", resources=defs.resources)
        finally:
            del os.environ["FAKE_BASE"], os.environ["WAREHOUSE"]
        assert result.success and server.stats().requests == 3 + 5  # what the estimate said, paid once
        assert {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()} == {
            "reviews", "verdicts", "verdicts_dead_letter"}
        after = {r["partition"]: r for r in estimate()}
        assert after["(golden_set)"]["to send"] == 0 and after["(golden_set)"]["in journal"] == 3
        assert after["a"]["to send"] == 0 and after["b"]["to send"] == 5


ONE_D = dg.StaticPartitionsDefinition(["ref", "split"])


@dg.asset(partitions_def=ONE_D)
def signs(context: dg.AssetExecutionContext) -> pa.Table:
    texts = ["a [up]", "b [up]"] if context.partition_key == "ref" else ["c [up]", "d [down]"]
    return pa.table({"text": texts})


def test_a_partition_whose_vectors_cancel_out_is_named_as_such_by_the_drift_check(tmp_path: Path) -> None:
    """OpenAI's embeddings API lets a caller ask for any ``dimensions`` (text-embedding-3), so 1-dimensional vectors
    are a served shape; their mean direction is zero when half point each way. The check failed (rightly) but said
    "no usable vector ... no rows, every row failed" beside ``vectors_used: 2``, sending the user to look for
    failures that did not happen."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from ai_assets.dagster import embed_asset
    from ai_assets.dagster.gates import DriftCheck
    from tests.hostile import Answer, hostile_server
    from tests.test_quality_gates import vector_body

    vectors = embed_asset("vectors", signs, column="text", partitions_def=ONE_D, cache_key=None,
                          drift=DriftCheck("ref", max_distance=0.3), max_error_rate=1.0,
                          options=RunOptions(batch_size=1, on_error="null"))
    instance = dg.DagsterInstance.ephemeral()
    with hostile_server() as hostile:
        hostile.reset(**{"[up]": Answer(vector_body([1.0])), "[down]": Answer(vector_body([-1.0]))})
        res = {"embedder": OpenAICompatibleResource(model="m", base_url=hostile.base_url, api_key="k"),
               "io_manager": ParquetIOManager(root=str(tmp_path / "out"))}
        checks = {}
        for day in ("ref", "split"):
            result = dg.materialize([signs, vectors], partition_key=day, resources=res, instance=instance,
                                    selection=[signs, vectors])
            checks[day] = next(e for e in result.get_asset_check_evaluations() if e.check_name == "embedding_drift")
    assert checks["ref"].passed
    split = checks["split"]
    assert not split.passed and split.metadata["vectors_used"].value == 2
    reason = split.metadata["reason"].value
    assert "cancel out" in reason and "no usable vector" not in reason


@dg.asset
def plain_notes() -> pa.Table:
    return pa.table({"text": [f"note {i}" for i in range(3)]})


def test_a_golden_set_without_a_template_column_is_named_in_the_error(tmp_path: Path) -> None:
    """A golden file is a table of its own (GoldenSet's docstring: the template's columns and ``expected``); when it
    lacks a column the template names, the error said "template ... names column(s) ['text'] not in the table
    (columns: ['body'])", which reads as the asset's upstream table being wrong."""
    gate = GoldenSet(rows=pa.table({"body": ["note 1"], "expected": ["x"]}))
    answers = prompt_asset("answers", plain_notes, template="Note: {text}", golden_set=gate)
    with FakeOpenAIServer() as server:
        res = {"llm": OpenAICompatibleResource(model="m", base_url=server.base_url, api_key="k"),
               "io_manager": ParquetIOManager(root=str(tmp_path / "out")),
               "ai_cache": ResultCacheResource(path=str(tmp_path / "journal.sqlite"))}
        with pytest.raises(Exception, match=r"golden set rows: template 'Note: \{text\}' names column\(s\) \['text'\]"):
            dg.materialize([plain_notes, answers], resources=res)
        assert server.stats().requests == 0


def test_a_null_field_of_a_struct_inside_a_list_in_a_parquet_golden_file_constrains_nothing(tmp_path: Path) -> None:
    """The Parquet format (and Arrow) gives every element of a ``list<struct>`` every field of the struct, so a
    golden file that names only ``aspects[0].name`` stores ``score: null`` beside it. Nulls were dropped from the
    top-level struct only, so the nested null demanded an answer without a score and a right answer missed."""
    import pyarrow.parquet as pq

    expected = pa.array([{"aspects": [{"name": "battery", "score": None}]}],
                        pa.struct([("aspects", pa.list_(pa.struct([("name", pa.string()), ("score", pa.int64())])))]))
    pq.write_table(pa.table({"text": ["lasts two days"], "expected": expected}), tmp_path / "g.parquet")
    (row,) = GoldenSet(path=str(tmp_path / "g.parquet")).golden()
    assert matches({"aspects": [{"name": "Battery", "score": 5}]}, row.expected)
    assert not matches({"aspects": [{"name": "screen", "score": 5}]}, row.expected)
