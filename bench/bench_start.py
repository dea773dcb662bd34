"""What starting costs: importing the packages, loading the demo's definitions, and one CLI run per partition,
each against Dagster alone, each case in a fresh process (``--repeat`` times, interleaved, median kept).

Cases:
* ``import dagster`` / ``import ai_assets`` / ``import ai_assets.dagster``, and both with every public name read
  (every module behind them, and Dagster: the packages import their modules on first use), each timed inside the
  process, so the interpreter's own start is left out;
* ``dagster definitions validate -f definitions.py`` (the demo) against the same for a one-asset file;
* ``dagster asset materialize -f definitions.py --select raw_reviews --partition 2024-11-01`` (ingest of one day's
  JSONL into Parquet: the CLI loads the definitions, then the multiprocess executor loads them again in the step's
  process) against the same for a trivial partitioned asset, DAGSTER_HOME in a temp dir;
* with ``--baseline`` (a checkout of an earlier commit), the demo's cases again with that code, in the same run.

Bytecode is cached as an installed package's is (``PYTHONDONTWRITEBYTECODE`` is dropped and the ``.pyc`` files go
to a temp dir, ``PYTHONPYCACHEPREFIX``), after one warm-up round that is not counted: otherwise every run would
compile ai_assets' sources (~0.15 s) and none of Dagster's.

Prints each median and the ratios the targets are about (ours / Dagster alone, and ours / baseline).

    python bench/bench_start.py [--repeat 5] [--baseline /tmp/baseline]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
import results as results_file  # noqa: E402

DAGSTER = str(Path(sys.executable).with_name("dagster"))
PARTITION = "2024-11-01"
TRIVIAL = '''import dagster as dg

daily = dg.DailyPartitionsDefinition(start_date="2024-11-01", end_date="2024-11-04")


@dg.asset(partitions_def=daily)
def raw_reviews() -> list[str]:
    return ["a review"]


defs = dg.Definitions(assets=[raw_reviews])
'''
EVERY_NAME = ("import ai_assets, ai_assets.dagster\n"
              "for m in (ai_assets, ai_assets.dagster):\n    [getattr(m, n) for n in m.__all__]")
BASELINE_CASES = ("import ai_assets", "import ai_assets.dagster", "every public name", "validate demo",
                  "materialize demo")


def import_seconds(statements: str, root: Path, pycache: Path) -> tuple[float, float]:
    """Wall and CPU seconds ``statements`` take in a fresh interpreter whose code is at ``root``."""
    code = (f"import time\nt, c = time.perf_counter(), time.process_time()\n{statements}\n"
            "print(time.perf_counter() - t, time.process_time() - c)")
    out = subprocess.run([sys.executable, "-c", code], cwd=root, env=env(root, pycache), check=True,
                         capture_output=True, text=True, timeout=300)
    wall, cpu = out.stdout.strip().splitlines()[-1].split()
    return float(wall), float(cpu)


def cli_seconds(args: list[str], root: Path, pycache: Path, home: Path) -> tuple[float, float]:
    """Wall and CPU seconds of one ``dagster`` command run at ``root`` (start, definitions, run, exit); the CPU
    seconds count its step subprocesses too, and move less than wall time on a busy machine."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run([DAGSTER, *args], check=False, cwd=root, env=env(root, pycache, home), capture_output=True,
                          text=True, timeout=600)
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"dagster {' '.join(args)} failed at {root}:\n{done.stderr[-3000:]}")
    return seconds, after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime


def env(root: Path, pycache: Path, home: Path | None = None) -> dict[str, str]:
    out = dict(os.environ, PYTHONPATH=str(root), PYTHONWARNINGS="ignore", PYTHONPYCACHEPREFIX=str(pycache))
    out.pop("PYTHONDONTWRITEBYTECODE", None)
    out.pop("OPENAI_API_KEY", None)
    out.pop("OPENAI_BASE_URL", None)
    if home is not None:
        out["DAGSTER_HOME"] = str(home)
        out["AI_ASSETS_OUT"] = str(home / "out")
    return out


def cases(trivial: Path, baseline: Path | None) -> dict[str, tuple[str, list[str] | str, Path]]:
    """Each case: (kind, module or CLI arguments, code root)."""
    demo = ["-f", "definitions.py"]
    materialize = ["asset", "materialize", "--select", "raw_reviews", "--partition", PARTITION]
    out: dict[str, tuple[str, list[str] | str, Path]] = {
        "import dagster": ("import", "import dagster", ROOT),
        "import ai_assets": ("import", "import ai_assets", ROOT),
        "import ai_assets.dagster": ("import", "import ai_assets.dagster", ROOT),
        "every public name": ("import", EVERY_NAME, ROOT),
        "validate trivial": ("cli", ["definitions", "validate", "-f", str(trivial)], ROOT),
        "validate demo": ("cli", ["definitions", "validate", *demo], ROOT),
        "materialize trivial": ("cli", [*materialize[:2], "-f", str(trivial), *materialize[2:]], ROOT),
        "materialize demo": ("cli", [*materialize[:2], *demo, *materialize[2:]], ROOT),
    }
    if baseline is not None:
        for name in BASELINE_CASES:
            kind, what, _ = out[name]
            out[f"{name} (baseline)"] = (kind, what, baseline)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--baseline", type=Path, default=None, help="a checkout of an earlier commit")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        trivial = Path(tmp) / "trivial_definitions.py"
        trivial.write_text(TRIVIAL)
        todo = cases(trivial, args.baseline)
        runs: dict[str, list[float]] = {name: [] for name in todo}
        cpu: dict[str, list[float]] = {name: [] for name in todo}
        pycache = Path(tmp) / "pycache"
        for attempt in range(-1, args.repeat):  # interleaved, so a slow moment of the machine hits every case alike
            for index, (name, (kind, what, root)) in enumerate(todo.items()):
                home = Path(tmp) / f"home-{attempt}-{index}"
                home.mkdir()
                wall, used = (import_seconds(str(what), root, pycache) if kind == "import"
                              else cli_seconds(list(what), root, pycache, home))
                if attempt >= 0:  # round -1 warms the bytecode cache
                    runs[name].append(wall)
                    cpu[name].append(used)
    figures = {name: statistics.median(seconds) for name, seconds in runs.items()}
    cpu_figures = {name: statistics.median(seconds) for name, seconds in cpu.items()}
    print(f"median of {args.repeat} runs, seconds (each a fresh process): wall, and CPU")
    for name, seconds in figures.items():
        print(f"  {name:<40} {seconds:7.2f} s   (min {min(runs[name]):.2f}, max {max(runs[name]):.2f})"
              f"   CPU {cpu_figures[name]:6.2f} s")
    ratios: dict[str, float] = {}
    for unit, values in (("wall", figures), ("CPU", cpu_figures)):
        ratios |= {
            f"every public name / import dagster ({unit})": values["every public name"] / values["import dagster"],
            f"validate demo / validate trivial ({unit})": values["validate demo"] / values["validate trivial"],
            f"materialize demo / materialize trivial ({unit})": (values["materialize demo"]
                                                                 / values["materialize trivial"]),
        }
        if args.baseline is not None:
            for name in BASELINE_CASES:
                ratios[f"{name}: ours / baseline ({unit})"] = values[name] / values[f"{name} (baseline)"]
    print("ratios")
    for name, ratio in ratios.items():
        print(f"  {name:<60} {ratio:6.2f}")
    results_file.save("start", {**figures, **{f"{name} (CPU)": seconds for name, seconds in cpu_figures.items()},
                                **ratios, "repeat": args.repeat})


if __name__ == "__main__":
    main()
