"""The AI-function surface Daft and ai_query users look for: the Responses API, files and image URLs in prompts,
task functions and their assets, multi-label classification, and long partition keys in every store."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Literal

import dagster as dg
import pyarrow as pa
import pytest
from PIL import Image
from pydantic import BaseModel

from ai_assets import (
    FileColumn,
    ImageColumn,
    OpenAICompatibleProvider,
    PromptParams,
    ResultCache,
    RunOptions,
    analyze_sentiment,
    classify_text,
    embed_text,
    extract,
    fix_grammar,
    mask,
    prompt,
    similarity,
    summarize,
    translate,
)
from ai_assets.dagster import (
    OpenAICompatibleResource,
    ParquetIOManager,
    ResultCacheResource,
    extract_asset,
    fix_grammar_asset,
    ingest_asset,
    mask_asset,
    sentiment_asset,
    similarity_asset,
    summarize_asset,
    translate_asset,
)
from ai_assets.storage.parquet import ParquetStore
from ai_assets.testing import FakeOpenAIServer
from ai_assets.testing.documents import pdf
from tests.kinds import STORE_KINDS, local_io_manager

pytestmark = pytest.mark.slow
REVIEWS = pa.table({"text": ["Great screen, the battery dies by noon.", "Arrived late and the box was crushed.",
                             None, "Call Ana at ana@example.com about the hinge."]})


class Insight(BaseModel):
    sentiment: Literal["positive", "negative", "mixed"]
    aspects: list[str]
    stars: int | None


def test_the_same_structured_prompt_through_chat_and_responses_gives_the_same_table(
        server: FakeOpenAIServer, llm: OpenAICompatibleProvider) -> None:
    chat = prompt(REVIEWS, "Review: {text}", provider=llm, return_format=Insight, system_message="Extract.",
                  options=RunOptions(on_error="null"))
    responses = OpenAICompatibleProvider("fake-model", base_url=server.base_url, api_key="k", api="responses")
    via_responses = prompt(REVIEWS, "Review: {text}", provider=responses, return_format=Insight,
                           system_message="Extract.", options=RunOptions(on_error="null"))
    assert via_responses.table.equals(chat.table)
    paths = server.stats().paths
    assert paths["/v1/chat/completions"] == 3 and paths["/v1/responses"] == 3
    per_call = prompt(REVIEWS.slice(0, 1), "{text}", provider=llm, params=PromptParams(api="responses"))
    assert server.stats().paths["/v1/responses"] == 4 and per_call.usage.prompt_tokens > 0


def test_responses_requests_carry_the_portable_settings(llm: OpenAICompatibleProvider) -> None:
    params = PromptParams(api="responses", max_output_tokens=64, reasoning={"effort": "low", "summary": "auto"},
                          tools=[{"type": "web_search_preview"}], temperature=0.2)
    request = llm.chat_request([{"role": "system", "content": "Be brief."},
                                {"role": "user", "content": [{"type": "text", "text": "hi"},
                                                             {"type": "image_url", "image_url": {"url": "u"}}]}],
                               Insight, params.as_request())
    assert request["instructions"] == "Be brief." and request["max_output_tokens"] == 64
    assert request["reasoning"] == {"effort": "low", "summary": "auto"}  # passed through whole
    assert request["tools"] == [{"type": "web_search_preview"}]
    assert request["input"][0]["content"][1] == {"type": "input_image", "image_url": "u", "detail": "auto"}
    fmt = request["text"]["format"]
    assert fmt["type"] == "json_schema" and fmt["strict"] and fmt["schema"]["additionalProperties"] is False
    with pytest.raises(ValueError, match="only effort"):
        llm.chat_request([{"role": "user", "content": "x"}], None, {"reasoning": {"summary": "auto"}})


def minimal_pdf(text: str) -> bytes:
    return pdf(text)


def test_files_reach_the_server_as_file_parts_and_refused_types_are_row_errors(
        server: FakeOpenAIServer, llm: OpenAICompatibleProvider) -> None:
    png = io.BytesIO()
    Image.new("RGB", (4, 4)).save(png, format="BMP")
    table = pa.table({"path": ["/in/report.pdf", "/in/notes.txt", "/in/scan.bmp", "/in/big.pdf"],
                      "bytes": [minimal_pdf("Quarterly report"), b"plain notes", png.getvalue(),
                                b"%PDF" + b"x" * 2_000]})
    parts = ["Summarize this document:", FileColumn("bytes", filename_column="path", max_bytes=1_000)]
    out = prompt(table, parts, provider=llm, options=RunOptions(on_error="null"))
    errors = out.table.column("response_error").to_pylist()
    files = server.stats().file_parts
    assert sorted(files, key=lambda f: f["filename"]) == [
        {"type": "file", "filename": "notes.txt", "mime": "text/plain"},
        {"type": "file", "filename": "report.pdf", "mime": "application/pdf"},
        {"type": "file", "filename": "scan.bmp", "mime": "image/bmp"}]
    assert errors[0] is None and errors[1] is None
    assert "HTTP 400" in errors[2] and "Invalid file type image/bmp" in errors[2]
    assert errors[3] == "skipped: the file in column 'bytes' is 2,004 bytes, over max_bytes=1,000"
    server.reset()
    responses = OpenAICompatibleProvider("fake-model", base_url=server.base_url, api_key="k", api="responses")
    prompt(table.slice(0, 1), parts, provider=responses)
    assert server.stats().file_parts == [{"type": "input_file", "filename": "report.pdf", "mime": "application/pdf"}]


def wav(seconds: float = 0.2, rate: int = 8000) -> bytes:
    import wave

    out = io.BytesIO()
    with wave.open(out, "wb") as audio:
        audio.setnchannels(1)
        audio.setsampwidth(2)
        audio.setframerate(rate)
        audio.writeframes(bytes(int(seconds * rate) * 2))
    return out.getvalue()


def test_audio_files_reach_the_server_as_input_audio_parts(server: FakeOpenAIServer,
                                                          llm: OpenAICompatibleProvider) -> None:
    """A WAV or MP3 in a FileColumn goes as ``input_audio`` (base64 and its format), as chat models that hear
    take it; each distinct recording is a distinct prompt, journalled like any other."""
    clips = [wav(0.2), wav(0.3), b"ID3\x04\x00" + bytes(64)]
    table = pa.table({"path": ["a.wav", "b.wav", "c.mp3"], "audio": clips})
    out = prompt(table, ["Transcribe and summarize:", FileColumn("audio", filename_column="path")], provider=llm)
    assert out.table.column("response").null_count == 0
    got = server.stats().audio_parts
    assert [p["format"] for p in got] == ["wav", "wav", "mp3"]
    assert [abs(int(p["bytes"]) - len(c)) <= 2 for p, c in zip(got, clips, strict=True)] == [True] * 3
    assert server.stats().file_parts == []  # not sent as files
    assert len({k for k in server.stats().by_key if "<audio " in k}) == 3


def test_transcribe_returns_text_and_caches_like_prompt(tmp_path: Path, server: FakeOpenAIServer,
                                                        llm: OpenAICompatibleProvider) -> None:
    from ai_assets import transcribe
    from ai_assets.testing import Fault

    clips = [wav(0.2), wav(0.3), None, wav(0.2), wav(0.4)]
    table = pa.table({"path": ["/in/a.wav", "/in/b.wav", "/in/c.wav", "/in/d.wav", "/in/bad.wav"], "audio": clips})
    server.set_faults(Fault("400", match="audio bad.wav", attempts=None))
    cache = ResultCache(tmp_path / "journal.sqlite")
    out = transcribe(table, "audio", provider=llm, language="de", cache=cache, options=RunOptions(on_error="null"))
    texts = out.table.column("transcript").to_pylist()
    errors = out.table.column("transcript_error").to_pylist()
    assert texts[0] is not None and texts[0].startswith("Transcript (de) of ")
    assert texts[3] == texts[0]  # the same recording (the key is its bytes): sent once, answered for both
    assert texts[2] is None and errors[2] == "skipped: column 'audio' is null"
    assert texts[4] is None and "HTTP 400" in errors[4]
    assert server.stats().transcriptions == 3  # a (d joins it in flight), b, bad once (a 400 is final)
    assert server.stats().models == {"whisper-1": 3}
    again = transcribe(table, "audio", provider=llm, language="de", cache=cache, options=RunOptions(on_error="null"))
    assert again.table.column("transcript").to_pylist()[:4] == texts[:4]
    assert server.stats().transcriptions == 4  # only the failed row is sent again
    transcribe(table.slice(0, 1), "audio", provider=llm, language="de", cache=cache, model="gpt-4o-transcribe")
    assert server.stats().models["gpt-4o-transcribe"] == 1  # another model is another answer
    big = transcribe(table.slice(0, 1), "audio", provider=llm, max_bytes=10).table
    assert big.column("transcript_error")[0].as_py() == \
        f"skipped: the file in column 'audio' is {len(clips[0]):,} bytes, over max_bytes=10"


def test_a_folder_of_recordings_is_transcribed_by_an_asset_and_by_yaml(tmp_path: Path,
                                                                       server: FakeOpenAIServer) -> None:
    from ai_assets.dagster import transcribe_asset
    from ai_assets.dagster.components import TaskComponent

    folder = tmp_path / "calls"
    folder.mkdir()
    for i in range(3):
        (folder / f"call-{i}.wav").write_bytes(wav(0.1 * (i + 1)))
    calls = ingest_asset("calls", path=str(folder / "*.wav"), format="files")
    transcripts = transcribe_asset("transcripts", calls, language="en", model="gpt-4o-mini-transcribe")
    yaml = TaskComponent(name="yaml_transcripts", upstream="calls", task="transcribe", column="bytes",
                         language="fr").asset()
    resources = {"llm": OpenAICompatibleResource(model="m", base_url=server.base_url, api_key="k"),
                 "ai_cache": ResultCacheResource(path=str(tmp_path / "journal.sqlite")),
                 "io_manager": ParquetIOManager(root=str(tmp_path / "out"))}
    assert dg.materialize([calls, transcripts, yaml], resources=resources).success
    store = ParquetIOManager(root=str(tmp_path / "out"))
    got = store.store(dg.AssetKey("transcripts"), {}).read().column("transcripts").to_pylist()
    assert len(got) == 3 and all(t.startswith("Transcript (en) of call-") for t in got)
    french = store.store(dg.AssetKey("yaml_transcripts"), {}).read().column("yaml_transcripts").to_pylist()
    assert all(t.startswith("Transcript (fr)") for t in french)
    assert server.stats().models == {"gpt-4o-mini-transcribe": 3, "whisper-1": 3}


def test_a_per_call_model_replaces_the_model_of_its_role(server: FakeOpenAIServer,
                                                         llm: OpenAICompatibleProvider) -> None:
    """``model=`` on embed_text is the embedding model (it used to replace the chat model and leave the embedding
    model in place, so the request named text-embedding-3-small whatever was asked)."""
    table = pa.table({"text": ["a", "b"]})
    embed_text(table, "text", provider=llm, model="text-embedding-3-large")
    assert server.stats().models == {"text-embedding-3-large": 1}
    server.reset()
    prompt(table, "{text}", provider=llm, model="gpt-x")
    assert server.stats().models == {"gpt-x": 2}


def test_image_urls_pass_through_without_a_download(server: FakeOpenAIServer, llm: OpenAICompatibleProvider) -> None:
    table = pa.table({"url": ["https://images.example.com/a.jpg", "https://images.example.com/b.jpg"]})
    out = prompt(table, ["Describe:", ImageColumn("url", as_url=True)], provider=llm)
    assert out.table.column("response").null_count == 0
    assert all("<image " in key for key in server.stats().by_key)  # the model got a URL part, fetched nothing


def test_task_functions_return_their_types_and_cache_like_prompt(
        tmp_path: Path, server: FakeOpenAIServer, llm: OpenAICompatibleProvider) -> None:
    cache = ResultCache(tmp_path / "journal.sqlite")
    options = RunOptions(on_error="null")
    calls = {
        "extract": lambda: extract(REVIEWS, "text", {"product_part": "the part of the product mentioned",
                                                      "email": "an email address"}, provider=llm, cache=cache,
                                   options=options),
        "summarize": lambda: summarize(REVIEWS, "text", provider=llm, max_words=3, cache=cache, options=options),
        "translate": lambda: translate(REVIEWS, "text", "French", provider=llm, cache=cache, options=options),
        "sentiment": lambda: analyze_sentiment(REVIEWS, "text", provider=llm, cache=cache, options=options),
        "mask": lambda: mask(REVIEWS, "text", ["person", "email"], provider=llm, cache=cache, options=options),
        "grammar": lambda: fix_grammar(REVIEWS, "text", provider=llm, cache=cache, options=options),
    }
    types = {"extract": pa.struct([("product_part", pa.string()), ("email", pa.string())]), "summarize": pa.string(),
             "translate": pa.string(), "sentiment": pa.string(), "mask": pa.string(), "grammar": pa.string()}
    first = {}
    for name, call in calls.items():
        out = call()
        column = out.table.column(out.table.column_names[-2])
        assert column.type == types[name], name
        assert column.null_count == 1 and out.usage.requests == 3, name  # the null row is skipped
        first[name] = out.table
    assert set(first["sentiment"].column("sentiment").to_pylist()) <= {"positive", "negative", "neutral", "mixed",
                                                                        None}
    assert all(s is None or len(s.split()) <= 3 for s in first["summarize"].column("summary").to_pylist())
    server.reset()
    for name, call in calls.items():
        again = call()
        assert again.usage.requests == 0 and again.table.equals(first[name]), name
    assert server.stats().requests == 0

    pairs = pa.table({"a": ["battery life", "screen", None], "b": ["battery life", "delivery", "x"]})
    scored = similarity(pairs, "a", "b", provider=llm, cache=cache)
    values = scored.table.column("similarity")
    assert values.type == pa.float32() and values[0].as_py() == pytest.approx(1.0, abs=1e-5)
    assert -1 <= values[1].as_py() < 1 and values[2].as_py() is None


def test_multi_label_classification_orders_labels_above_the_threshold(server: FakeOpenAIServer,
                                                                      llm: OpenAICompatibleProvider) -> None:
    labels = {"battery": "battery life", "screen": "the display", "delivery": "shipping", "price": "the cost"}
    for method in ("embedding", "llm"):
        out = classify_text(REVIEWS, "text", labels, provider=llm, method=method,  # type: ignore[arg-type]
                            threshold=0.1, top_k=2, options=RunOptions(on_error="null"))
        column = out.table.column("classification")
        assert column.type == pa.list_(pa.struct([("label", pa.string()), ("score", pa.float32())])), method
        for row in column.to_pylist():
            if row is None:
                continue
            scores = [item["score"] for item in row]
            assert scores == sorted(scores, reverse=True) and len(row) <= 2, method
            assert all(s >= 0.1 for s in scores) and {i["label"] for i in row} <= set(labels), method


def test_task_assets_materialize(tmp_path: Path, server: FakeOpenAIServer) -> None:
    source = tmp_path / "reviews.jsonl"
    source.write_text('{"text": "Great screen, weak battery."}\n{"text": "Box crushed, call bob@x.org."}\n')
    raw = ingest_asset("raw", path=str(source))
    assets = [raw,
              extract_asset("parts", raw, column="text", fields=["part"]),
              summarize_asset("summary", raw, column="text", max_words=5),
              translate_asset("french", raw, column="text", to="French"),
              sentiment_asset("sentiment", raw, column="text"),
              mask_asset("masked", raw, column="text"),
              fix_grammar_asset("corrected", raw, column="text"),
              similarity_asset("self_similarity", raw, left="text", right="text")]
    result = dg.materialize(assets, resources={
        "llm": OpenAICompatibleResource(model="gpt-4o-mini", base_url=server.base_url, api_key="k"),
        "embedder": OpenAICompatibleResource(model="gpt-4o-mini", base_url=server.base_url, api_key="k"),
        "ai_cache": ResultCacheResource(path=str(tmp_path / "journal.sqlite")),
        "io_manager": ParquetIOManager(root=str(tmp_path / "out"))})
    assert result.success
    for asset in assets[1:]:
        materialization = result.asset_materializations_for_node(asset.key.path[-1])[0]
        assert materialization.metadata["dagster/row_count"].value == 2
        assert "ai/estimated_cost_usd" in materialization.metadata
        assert asset.descriptions_by_key[asset.key]  # every factory describes what it does
    similarities = ParquetStore(str(tmp_path / "out" / "self_similarity")).read().column("self_similarity")
    assert similarities.to_pylist() == pytest.approx([1.0, 1.0], abs=1e-5)


LONG = ["東京の天気" * 24, "東京の天気" * 24 + "!", "a/" * 150]


@pytest.mark.parametrize("backend", STORE_KINDS)
def test_long_unicode_partition_keys_round_trip(tmp_path: Path, backend: str) -> None:
    keys = dg.StaticPartitionsDefinition(LONG)

    @dg.asset(partitions_def=keys, io_manager_key="store")
    def rows(context) -> pa.Table:  # type: ignore[no-untyped-def]  # Dagster reads the annotation
        return pa.table({"key_length": [len(context.partition_key)] * 3})

    @dg.asset(partitions_def=keys, io_manager_key="store", ins={"rows": dg.AssetIn("rows")})
    def again(rows: pa.RecordBatchReader) -> pa.RecordBatchReader:
        return rows

    store = local_io_manager(backend, tmp_path)
    for key in LONG:
        assert dg.materialize([rows, again], partition_key=key, resources={"store": store}).success
    if backend == "parquet":
        stored = ParquetStore(str(tmp_path / "parquet" / "again"))
        assert sorted(stored.partitions()) == sorted(LONG)
        assert all(len(p.name.encode()) < 255 for p in (tmp_path / "parquet" / "again").iterdir())
    table = store.store(dg.AssetKey("again"), {}).read(None)
    assert sorted(set(table.column("_partition").to_pylist())) == sorted(LONG)  # the keys, exact
    assert table.num_rows == 9 and set(table.column("key_length").to_pylist()) == {len(k) for k in LONG}
