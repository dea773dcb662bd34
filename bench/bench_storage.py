"""Bytes per row in each store, for sizing a deployment: a review (~250 characters) with a structured answer
(sentiment, three aspects, a summary) and a 1,536-d embedding (text-embedding-3-small's size), against the fake
server. Writes ``--rows`` rows to Parquet, Delta, LanceDB and Iceberg (a SQLite catalog), and the answers to the
SQLite and Postgres journals, then prints the bytes on disk per row of each and each table write's rows per second.

    python bench/bench_storage.py [--rows 20000]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import pyarrow as pa
from pydantic import BaseModel, Field

from ai_assets import OpenAICompatibleProvider, ResultCache, RunOptions, embed_text, open_cache, prompt
from ai_assets.storage.base import PARTITION_COLUMN
from ai_assets.storage.delta import DeltaStore
from ai_assets.storage.iceberg import IcebergStore
from ai_assets.storage.lance import LanceStore
from ai_assets.storage.parquet import ParquetStore
from ai_assets.testing import FakeOpenAIServer

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root: the service starters are in tests/
import results

from tests.services import postgres_server

DIM = 1536
WORDS = ["battery", "screen", "camera", "price", "delivery", "support", "sound", "fit", "colour", "weight"]


class Insight(BaseModel):
    sentiment: Literal["positive", "negative", "mixed"]
    aspects: list[str] = Field(max_length=3)
    summary: str = Field(max_length=80)


def reviews(n: int) -> pa.Table:
    texts = [f"Review {i}: I bought this phone three weeks ago. The {WORDS[i % 10]} is "
             f"{'great' if i % 3 else 'poor'} and the {WORDS[(i * 7) % 10]} "
             f"{'could be better' if i % 2 else 'works as described'}; delivery took {i % 9 + 1} days and the box "
             f"was {'fine' if i % 4 else 'dented'}. Would {'' if i % 5 else 'not '}buy again." for i in range(n)]
    return pa.table({"review_id": [f"r{i:08d}" for i in range(n)], "product": [f"phone {i % 50}" for i in range(n)],
                     "text": texts, PARTITION_COLUMN: ["2024-11-01"] * n})


def size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.is_dir() else path.stat().st_size


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=20_000)
    args = parser.parse_args()
    n = args.rows
    with tempfile.TemporaryDirectory() as tmp, FakeOpenAIServer(embedding_dim=DIM, track=False) as server, \
            postgres_server() as pg:
        folder = Path(tmp)
        llm = OpenAICompatibleProvider("gpt-4o-mini", base_url=server.base_url, api_key="bench",
                                       embedding_model="text-embedding-3-small")
        options = RunOptions(concurrency=64, batch_size=100)
        journal = ResultCache(folder / "journal.sqlite")
        postgres = open_cache(pg.url)
        source = reviews(n)
        answered = prompt(source, "Product: {product}\nReview: {text}", provider=llm, return_format=Insight,
                          options=options, cache=journal).table
        table = embed_text(answered, "text", provider=llm, options=options, cache=journal).table
        text_only = table.drop_columns(["embedding", "embedding_error"])
        iceberg = {"type": "sql", "uri": f"sqlite:///{folder}/iceberg/catalog.db",
                   "warehouse": f"file://{folder}/iceberg"}
        (folder / "iceberg").mkdir()
        writes: dict[str, Callable[[], object]] = {
            "Parquet": lambda: ParquetStore(str(folder / "parquet")).write(table, ["2024-11-01"]),
            "Delta": lambda: DeltaStore(str(folder / "delta")).write(table, ["2024-11-01"]),
            "LanceDB": lambda: LanceStore(str(folder / "lancedb"), "t").write(table, ["2024-11-01"]),
            "Iceberg": lambda: IcebergStore(iceberg, "bench.t", run_id="bench").write(table, ["2024-11-01"]),
        }
        seconds = {}
        for name, write in writes.items():
            started = time.perf_counter()
            write()
            seconds[name] = time.perf_counter() - started
        DeltaStore(str(folder / "delta_no_vectors")).write(text_only, ["2024-11-01"])
        IcebergStore(iceberg, "bench.t_no_vectors").write(text_only, ["2024-11-01"])
        prompt(source, "Product: {product}\nReview: {text}", provider=llm, return_format=Insight, options=options,
               cache=postgres)
        embed_text(answered, "text", provider=llm, options=options, cache=postgres)
        journal.close()
        import psycopg2

        connection = psycopg2.connect(host="127.0.0.1", port=pg.port, user="postgres", dbname="ai_assets")
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_total_relation_size('ai_assets_journal')")
            pg_bytes = int(cursor.fetchone()[0])
        connection.close()
        postgres.close()
        figures = {
            "Parquet (answers + 1,536-d vector)": size(folder / "parquet"),
            "Delta (answers + 1,536-d vector)": size(folder / "delta"),
            "Delta (answers only)": size(folder / "delta_no_vectors"),
            "LanceDB (answers + 1,536-d vector)": size(folder / "lancedb"),
            "Iceberg (answers + 1,536-d vector)": size(folder / "iceberg" / "bench" / "t"),
            "Iceberg (answers only)": size(folder / "iceberg" / "bench" / "t_no_vectors"),
            "SQLite journal (answer + vector entries)": size(folder / "journal.sqlite"),
            "Postgres journal (answer + vector entries)": pg_bytes,
        }
        print(f"{n:,} rows; source text {sum(len(t) for t in source.column('text').to_pylist()) / n:.0f} chars/row")
        for name, total in figures.items():
            print(f"  {name:<44} {total / n:8.0f} bytes/row")
        for name, took in seconds.items():
            print(f"  {name + ' write (one partition, one commit)':<44} {n / took:8.0f} rows/s")
        results.save("storage", {"rows": n, **{name: total / n for name, total in figures.items()},
                                 **{f"{name} write rows/s": n / took for name, took in seconds.items()}})
    os._exit(0)  # deltalake can abort at interpreter exit after reads (delta-rs #2184)


if __name__ == "__main__":
    main()
