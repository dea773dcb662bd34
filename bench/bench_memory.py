"""Peak memory and throughput of a large partition, streamed, against the fake server (5 ms, 64 in flight, SQLite
journal), each case in a fresh process so that its peak RSS is its own.

Cases, at ``--small`` and ``--rows`` rows:
* ``plain``: ``prompt()`` over a ``RecordBatchReader`` of a Parquet file, writing the output batches to Parquet;
* ``dagster``: a Dagster materialization ingest (JSONL) -> prompt -> Delta Lake, one partition;
* ``table``: ``prompt()`` over a ``pyarrow.Table`` (the table path), at ``--small`` rows only, and the same with
  the code at ``--baseline`` (a checkout of an earlier commit) when given;
* with ``--baseline``, also ``dagster`` at ``--rows`` with the baseline's code: rows/s, peak RSS and the bytes
  that went through a spool file before reaching the store.

Prints each case's rows/s and peak RSS, and the ratios the targets are about.

    python bench/bench_memory.py [--rows 1000000] [--small 100000] [--baseline /tmp/baseline]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
import results as results_file  # noqa: E402

CHILD = r'''
import json, resource, sys, time
from pathlib import Path
case, rows, folder, tag = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3]), sys.argv[4]
import pyarrow as pa, pyarrow.parquet as pq
from ai_assets import OpenAICompatibleProvider, ResultCache, RunOptions, prompt
from ai_assets.testing import FakeOpenAIServer

def peak_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

import ai_assets.runtime.spool as spool_module  # counts what goes through a spool file (Arrow IPC) on its way
spooled = [0]
_write = spool_module.Spool.write
def _counted(self, batch):
    spooled[0] += batch.nbytes
    _write(self, batch)
spool_module.Spool.write = _counted

kwargs = {"track": False} if "track" in FakeOpenAIServer.__init__.__code__.co_varnames else {}
with FakeOpenAIServer(latency=0.005, **kwargs) as server:
    llm = OpenAICompatibleProvider("bench", base_url=server.base_url, api_key="bench")
    options = RunOptions(concurrency=64, on_error="null")
    journal = ResultCache(folder / f"{case}-{tag}.sqlite")
    started = time.perf_counter()
    if case == "table":
        table = pq.read_table(folder / "source.parquet")
        started = time.perf_counter()
        out = prompt(table, "{text}", provider=llm, options=options, cache=journal)
        assert out.table.num_rows == rows
    elif case == "plain":
        source = pq.ParquetFile(folder / "source.parquet")
        reader = pa.RecordBatchReader.from_batches(source.schema_arrow, source.iter_batches(batch_size=10_000))
        out = prompt(reader, "{text}", provider=llm, options=options, cache=journal)
        writer, written = None, 0
        for batch in out:
            writer = writer or pq.ParquetWriter(folder / "plain-out.parquet", batch.schema)
            writer.write_batch(batch)
            written += batch.num_rows
        writer.close()
        assert written == rows, written
    else:
        import dagster as dg
        from ai_assets.dagster import (DeltaIOManager, OpenAICompatibleResource, ParquetIOManager,
                                       ResultCacheResource, ingest_asset, prompt_asset)
        part = dg.StaticPartitionsDefinition(["p"])
        raw = ingest_asset("raw", path=str(folder / "{partition}.jsonl"), partitions_def=part)
        answers = prompt_asset("answers", raw, template="{text}", options=options, io_manager_key="delta",
                               partitions_def=part)
        result = dg.materialize([raw, answers], partition_key="p", resources={
            "llm": OpenAICompatibleResource(model="bench", base_url=server.base_url, api_key="bench"),
            "ai_cache": ResultCacheResource(path=str(folder / f"{case}-{tag}.sqlite")),
            "io_manager": ParquetIOManager(root=str(folder / "parquet")),
            "delta": DeltaIOManager(root=str(folder / f"delta-{tag}"))})
        assert result.success
    elapsed = time.perf_counter() - started
stored = sum(f.stat().st_size for f in (folder / f"delta-{tag}").rglob("*.parquet")) / 1e6 if case == "dagster" else 0.0
print(json.dumps({"rows_per_s": rows / elapsed, "peak_mb": peak_mb(), "spooled_mb": spooled[0] / 1e6,
                  "stored_mb": stored}), flush=True)
import os
os._exit(0)  # deltalake can abort at exit after reads (delta-rs #2184)
'''


def prepare(folder: Path, rows: int) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    texts = [f"review {i}: the battery lasts two days and the screen is sharp" for i in range(rows)]
    pq.write_table(pa.table({"id": list(range(rows)), "text": texts}), folder / "source.parquet",
                   row_group_size=65_536)  # a realistic file: not one row group of a million rows
    with (folder / "p.jsonl").open("w") as handle:
        for i, text in enumerate(texts):
            handle.write(json.dumps({"id": i, "text": text}) + "\n")


def run(case: str, rows: int, folder: Path, python_path: str | None = None) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": python_path or str(ROOT)}
    tag = "baseline" if python_path else "current"
    out = subprocess.run([sys.executable, "-c", CHILD, case, str(rows), str(folder), tag], env=env, check=False,
                         capture_output=True, text=True, cwd=python_path or ROOT)
    if out.returncode != 0:
        raise RuntimeError(f"case {case} at {rows} rows failed:\n{out.stderr[-3000:]}")
    result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--small", type=int, default=100_000)
    parser.add_argument("--baseline", default=None,
                        help="a checkout of an earlier commit, for its table path and its 1M-row materialization")
    args = parser.parse_args()
    results: dict[tuple[str, int], dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for rows in (args.small, args.rows):
            folder = Path(tmp) / str(rows)
            folder.mkdir()
            prepare(folder, rows)
            cases = ["table", "plain", "dagster"] if rows == args.small else ["plain", "dagster"]
            for case in cases:
                results[(case, rows)] = run(case, rows, folder)
                got = results[(case, rows)]
                print(f"  {case:<8} {rows:>9,} rows  {got['rows_per_s']:8.0f} rows/s  peak RSS {got['peak_mb']:6.0f} MB"
                      f"  spooled {got['spooled_mb']:5,.0f} MB", flush=True)
            if args.baseline and rows == args.small:
                results[("baseline table", rows)] = run("table", rows, folder, args.baseline)
                print(f"  baseline table path {rows:>9,} rows  "
                      f"{results[('baseline table', rows)]['rows_per_s']:8.0f} rows/s  "
                      f"peak RSS {results[('baseline table', rows)]['peak_mb']:6.0f} MB", flush=True)
            if args.baseline and rows == args.rows:
                results[("baseline dagster", rows)] = run("dagster", rows, folder, args.baseline)
    big, small = args.rows, args.small
    print(f"5 ms latency, 64 in flight, SQLite journal; limit {64 / 0.005:,.0f} rows/s")
    for case in ("plain", "dagster"):
        print(f"  {case:<8} peak RSS {results[(case, big)]['peak_mb']:.0f} MB at {big:,} rows "
              f"(target <= 1024), {results[(case, big)]['peak_mb'] / results[(case, small)]['peak_mb']:.2f}x the "
              f"figure at {small:,} (target <= 1.5)")
    reference = results.get(("baseline table", small), results[("table", small)])
    for case in ("plain", "dagster"):
        print(f"  {case:<8} {results[(case, big)]['rows_per_s'] / reference['rows_per_s']:.2f} of the "
              f"{'baseline' if ('baseline table', small) in results else 'current'} table path's rows/s at "
              f"{small:,} (target >= 1.0)")
    if ("baseline dagster", big) in results:
        now, before = results[("dagster", big)], results[("baseline dagster", big)]
        print(f"  dagster at {big:,} rows against the baseline's: {now['rows_per_s'] / before['rows_per_s']:.2f}x "
              f"rows/s, {now['peak_mb'] / before['peak_mb']:.2f}x peak RSS; spooled {now['spooled_mb']:,.0f} MB vs "
              f"{before['spooled_mb']:,.0f} MB of Arrow before the store (the Delta table: "
              f"{now['stored_mb']:,.0f} MB of Parquet)")
    results_file.save("memory", {f"{case} {rows}": figures for (case, rows), figures in results.items()})


if __name__ == "__main__":
    main()
