"""Bad input gets a clear error naming the file, row or setting; nothing is sent or paid for because of it."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pyarrow as pa
import pytest

from ai_assets import ConfigError, OpenAICompatibleProvider, ResultCache, embed_text, prompt
from ai_assets.dagster import prompt_asset
from ai_assets.dagster.components import Daily, PromptComponent
from ai_assets.functions.ingest import read_source
from ai_assets.functions.templates import check_template
from ai_assets.testing import FakeOpenAIServer


def test_a_csv_with_invalid_utf8_fails_naming_the_file_and_row(tmp_path: Path) -> None:
    path = tmp_path / "reviews.csv"
    path.write_bytes(b"id,text\n1,fine\n2,caf\xe9 latin-1\n3,also fine\n")
    with pytest.raises(ConfigError, match=r"reviews\.csv: row 2: column 'text' is not valid UTF-8"):
        read_source(str(path))
    kept = read_source(str(path), bad_rows="null")
    assert kept.schema.field("text").type == pa.string()  # never a binary column of b'...' reprs
    assert kept.column("text").to_pylist() == ["fine", None, "also fine"]
    assert kept.column("ingest_error").to_pylist()[1] == "column 'text' is not valid UTF-8"


@pytest.mark.parametrize(("template", "message"), [
    ("{review", "expected '}' before end of string"),
    ("review}", "Single '}' encountered"),
    ("{a.b}", "attribute and index lookups"),
    ("{a[0]}", "attribute and index lookups"),
    ("{text:>10}", "format specs are not supported"),
    ("{}", "every field must name a column"),
])
def test_a_template_that_cannot_render_is_refused_at_definition_time(template: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("(", r"\(")):
        check_template(template)
    with pytest.raises(ConfigError):
        prompt_asset("answers", "raw", template=template)
    with pytest.raises(ValueError, match="template"):
        PromptComponent(name="answers", upstream="raw", template=template)


def test_a_template_reading_a_dotted_field_is_a_config_error_not_a_key_error(
        server: FakeOpenAIServer, llm: OpenAICompatibleProvider) -> None:
    table = pa.table({"a": ["x"], "a.b": ["y"]})
    with pytest.raises(ConfigError, match="attribute and index lookups"):
        prompt(table, "{a.b}", provider=llm)
    assert server.stats().requests == 0


def test_an_output_column_may_not_replace_an_input_column(llm: OpenAICompatibleProvider) -> None:
    table = pa.table({"text": ["x"]})
    with pytest.raises(ConfigError, match="output_column 'text' would replace the input column 'text'"):
        prompt(table, "Review: {text}", provider=llm, output_column="text")
    with pytest.raises(ConfigError, match="would replace the input column"):
        embed_text(table, "text", provider=llm, output_column="text")
    with pytest.raises(ConfigError, match="would replace the input column"):
        prompt_asset("text", "raw", template="{text}")


def test_a_bad_date_in_a_component_names_the_setting() -> None:
    with pytest.raises(ValueError, match=r"partitions.daily: '2024-13-01' is not a date \(YYYY-MM-DD\)"):
        Daily(start="2024-13-01")


def test_a_corrupt_journal_names_its_file(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(ConfigError, match=rf"journal {path}: .*not a readable SQLite journal"):
        ResultCache(path)


def test_a_journal_opened_read_only_names_its_file_on_write(tmp_path: Path) -> None:
    """A read-only journal (here a read-only connection: tests run as root, which writes through file modes)."""
    path = tmp_path / "journal.sqlite"
    ResultCache(path).put("k", 1)
    cache = ResultCache(path)
    cache._db.close()
    cache._db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False, isolation_level=None)
    with pytest.raises(ConfigError, match=rf"journal {path}: .*read-only"):
        cache.put("k2", 2)


def test_a_folder_s_defaults_fill_what_a_component_leaves_out(tmp_path: Path) -> None:
    """``defaults.yaml`` beside a ``defs.yaml`` holds the settings its components share (written once instead of on
    every component); a component's own value wins; a key that is no shared setting names the file."""
    import dagster as dg

    from ai_assets.dagster.components import EmbedComponent, IngestComponent

    (tmp_path / "defaults.yaml").write_text(
        'partitions: {static: ["a", "b"]}\ngroup_name: shared\nretries: 3\noptions: {concurrency: 2}\n')
    ingest = IngestComponent(name="raw", path="x/{partition}.jsonl").with_folder_defaults(tmp_path).asset()
    assert ingest.partitions_def == dg.StaticPartitionsDefinition(["a", "b"])
    assert ingest.group_names_by_key[dg.AssetKey("raw")] == "shared"
    own = EmbedComponent(name="vectors", upstream="raw", column="text", group_name="mine",
                         options={"concurrency": 9}).with_folder_defaults(tmp_path)  # type: ignore[arg-type]
    assert own.group_name == "mine" and own.retries == 3
    assert own.run_options() is not None and own.run_options().concurrency == 9  # type: ignore[union-attr]
    (tmp_path / "defaults.yaml").write_text("group_name: shared\ntemplate: '{text}'\n")
    with pytest.raises(ConfigError, match=r"defaults\.yaml: \['template'\] are not shared settings"):
        IngestComponent(name="raw", path="x.jsonl").with_folder_defaults(tmp_path)
