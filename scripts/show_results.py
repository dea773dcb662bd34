"""Print where the demo's results are, with a few rows of each table."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import lancedb

from ai_assets import SentenceTransformersProvider
from ai_assets.storage.delta import DeltaStore
from ai_assets.storage.lance import LanceStore
from ai_assets.storage.parquet import ParquetStore

out = Path(os.environ.get("AI_ASSETS_OUT", Path(__file__).resolve().parents[1] / "out"))
partition = sys.argv[1] if len(sys.argv) > 1 else "2024-11-01"

insights = ParquetStore(str(out / "parquet" / "review_insights"))
embeddings = LanceStore(str(out / "lancedb"), "review_embeddings")
topics = DeltaStore(str(out / "delta" / "review_topics"))

print(f"\nResults for partition {partition}:")
print(f"  LLM extraction (Parquet): {insights.path_for(partition)}")
for row in insights.read([partition]).select(["review_id", "review_insights", "review_insights_error"]).slice(0, 3) \
        .to_pylist():  # a failed row has no value: show why it failed
    shown = row["review_insights"] if row["review_insights"] is not None else f"error: {row['review_insights_error']}"
    print(f"    {row['review_id']}: {shown}")
vectors = embeddings.read([partition])
print(f"  Embeddings (LanceDB):     {embeddings.uri}  {vectors.num_rows} rows, "
      f"{vectors.schema.field('review_embeddings').type}")
table = topics.read([partition])
print(f"  Topics (Delta Lake):      {topics.uri}")
for row in table.select(["review_id", "review", "review_topics"]).slice(0, 5).to_pylist():
    label = row["review_topics"]
    print(f"    {row['review_id']}: {label['label']:<8} {label['score']:.2f}  {row['review'][:60]}")
images = DeltaStore(str(out / "delta" / "product_image_classes")).read()
print(f"  Product images (Delta):   {out / 'delta' / 'product_image_classes'}")
for row in images.select(["path", "product_image_classes", "image_error"]).to_pylist():
    label = row["product_image_classes"]
    shown = f"{label['label']:<8} {label['score']:.2f}" if label else f"error: {row['image_error'][:60]}"
    print(f"    {Path(row['path']).name:<28} {shown}")
summaries = ParquetStore(str(out / "parquet" / "product_doc_summaries")).read()
print(f"  Document summaries:       {out / 'parquet' / 'product_doc_summaries'}")
for row in summaries.select(["path", "product_doc_summaries", "product_doc_summaries_error"]).to_pylist():
    shown = row["product_doc_summaries"] or f"error: {row['product_doc_summaries_error']}"
    print(f"    {Path(row['path']).name:<28} {shown[:70]}")
chunks = LanceStore(str(out / "lancedb"), "product_doc_chunk_vectors")
print(f"  Document chunks (LanceDB): {chunks.uri}  {chunks.read().num_rows} chunks, vector + full-text indexes")
query = "how long is the warranty"
vector = SentenceTransformersProvider(device="cpu").model.encode([query], normalize_embeddings=True)[0]
hit = (lancedb.connect(str(out / "lancedb")).open_table("product_doc_chunk_vectors")
       .search(query_type="hybrid", vector_column_name="product_doc_chunk_vectors").vector(vector).text(query)
       .limit(1).to_arrow().to_pylist()[0])
print(f"    hybrid query {query!r}: {Path(hit['path']).name} page {hit['page_number']}: "
      f"{' '.join(hit['chunk'].split())[:60]}")
print(f"  Journal:                  {out / 'cache.sqlite'}\n")
sys.stdout.flush()
os._exit(0)  # deltalake can abort at interpreter exit after reads (delta-rs #2184); the demo must exit 0
