"""Peak memory of an image partition streamed through Dagster: ingest (a glob of JPEG files) -> decode and resize to
224 px -> EfficientNet-Lite0 embeddings -> Parquet, one partition, each size in a fresh process so that its peak RSS
is its own. The images are generated (unique noise, a few hundred KB each) and deleted afterwards.

Prints images/s and peak RSS at ``--small`` and ``--images``, and their ratio.

    python bench/bench_images.py [--images 20000] [--small 2000] [--kb 300]
"""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
import results as results_file  # noqa: E402

CHILD = r"""
import json, os, resource, sys, time
from pathlib import Path
import dagster as dg
from ai_assets import ImageSpec, RunOptions
from ai_assets.dagster import (EfficientNetResource, ParquetIOManager, ResultCacheResource, decode_images_asset,
                               embed_image_asset, ingest_asset)
folder, count = Path(sys.argv[1]), int(sys.argv[2])
part = dg.StaticPartitionsDefinition(["p"])
images = ingest_asset("images", path=str(folder / "{partition}" / "*.jpg"), format="files", partitions_def=part)
small = decode_images_asset("small", images, column="bytes", spec=ImageSpec(mode="RGB", size=(224, 224)),
                            partitions_def=part)
vectors = embed_image_asset("vectors", small, column="image", options=RunOptions(batch_size=32),
                            partitions_def=part)
started = time.perf_counter()
with dg.DagsterInstance.ephemeral() as instance:
    result = dg.materialize([images, small, vectors], partition_key="p", instance=instance, resources={
        "image_embedder": EfficientNetResource(),
        "ai_cache": ResultCacheResource(path=str(folder / "journal.sqlite")),
        "io_manager": ParquetIOManager(root=str(folder / "out"))})
    assert result.success
elapsed = time.perf_counter() - started
rows = ParquetIOManager(root=str(folder / "out")).store(dg.AssetKey("vectors"), {}).read(["p"]).num_rows
assert rows == count, rows
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"images_per_s": count / elapsed, "peak_mb": peak}), flush=True)
os._exit(0)
"""


def generate(folder: Path, count: int, kb: int) -> int:
    """``count`` distinct JPEGs of about ``kb`` KB (noise compresses badly, so the size is real); total bytes."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    side = int((kb * 1024 / 0.9) ** 0.5)  # noise at JPEG quality 90 takes about 0.9 bytes a pixel
    base = rng.integers(0, 256, size=(side, side, 3), dtype=np.uint8)
    total = 0
    folder.mkdir(parents=True)
    for i in range(count):
        base[i % side, :, :] = rng.integers(0, 256, size=(side, 3), dtype=np.uint8)  # every image its own
        out = io.BytesIO()
        Image.fromarray(base).save(out, format="JPEG", quality=90)
        (folder / f"{i:06d}.jpg").write_bytes(out.getvalue())
        total += out.tell()
    return total


def measure(count: int, kb: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        total = generate(Path(tmp) / "p", count, kb)
        took = time.perf_counter() - started
        print(f"  generated {count:,} images, {total / count / 1024:.0f} KB each ({took:.0f}s)", flush=True)
        done = subprocess.run([sys.executable, "-c", CHILD, tmp, str(count)], cwd=ROOT, capture_output=True,
                              text=True, check=False)
        if done.returncode != 0:
            raise SystemExit(done.stderr[-4000:])
        figures: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
        return figures


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=20_000)
    parser.add_argument("--small", type=int, default=2_000)
    parser.add_argument("--kb", type=int, default=300)
    args = parser.parse_args()
    results = {}
    for count in (args.small, args.images):
        results[count] = measure(count, args.kb)
        print(f"{count:>7,} images: {results[count]['images_per_s']:7.1f} images/s, "
              f"peak RSS {results[count]['peak_mb']:6.0f} MB", flush=True)
    big, small = results[args.images], results[args.small]
    print(f"peak RSS {args.images:,} / {args.small:,} images: {big['peak_mb'] / small['peak_mb']:.2f}x "
          f"(target: at most 1,536 MB at {args.images:,})")
    results_file.save("images", {str(count): figures for count, figures in results.items()})


if __name__ == "__main__":
    main()
