"""Certified cascades (issue 30): does the stated target hold in >= 1 - delta of 200 seeded runs, and what share of
the rows still goes to the oracle, at what cost against sending every row to it?

The task has a known truth: the fake server's answer is the truth for every model, "strong" (the oracle, gpt-4o
prices) gives it; ``Noise`` makes "cheap" (the proxy, gpt-4o-mini prices) wrong on about 10 % of the prompts with
a confidence that says how likely. Per target: one real certified run through the fake server (journalled), the
proxy's and the oracle's answer to every row (from the same journal), then 199 more seeded runs replayed from
those answers with the same ``sample_rows`` and ``learn`` (``tests/certified_replay.py``: no network per run),
and a re-run of the real one, counted on the server.

    python bench/bench_certified_cascade.py [--rows 5000] [--budget 500] [--runs 200]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
from pydantic import BaseModel, Field

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root: the replay is in tests/

from results import save

from ai_assets import Cascade, OpenAICompatibleProvider, prompt
from ai_assets.runtime.cache.sqlite import ResultCache
from ai_assets.runtime.guarantees import Accuracy, Precision, Recall, Target
from ai_assets.runtime.prices import lookup
from ai_assets.runtime.usage import Usage
from ai_assets.testing import FakeOpenAIServer, Noise
from tests.certified_replay import replay

DELTA, NOISE = 0.05, 0.1
TEMPLATE = "Is {text} about cats?"


class Match(BaseModel):
    match: bool
    confidence: float = Field(ge=0, le=1)


def one(server: FakeOpenAIServer, target: Target, rows: int, budget: int, runs: int) -> dict[str, float | str]:
    cheap, strong = lookup("gpt-4o-mini"), lookup("gpt-4o")
    assert cheap is not None and strong is not None
    llm = OpenAICompatibleProvider("unused", base_url=server.base_url, api_key="k")
    table = pa.table({"text": [f"item {i}" for i in range(rows)]})
    cascade = Cascade(["cheap", "strong"], target=target, delta=DELTA, label_budget=budget, label_field="match",
                      confidence_field="confidence", prices={"cheap": cheap, "strong": strong})
    with tempfile.TemporaryDirectory() as folder:
        journal = ResultCache(Path(folder) / "journal.sqlite")
        server.reset()
        out = prompt(table, TEMPLATE, provider=llm, return_format=Match, cascade=cascade, cache=journal)
        server.reset()
        prompt(table, TEMPLATE, provider=llm, return_format=Match, cascade=cascade, cache=journal)
        rerun_requests = server.stats().requests
        proxy = prompt(table, TEMPLATE, provider=llm, return_format=Match, model="cheap", cache=journal)
        oracle = prompt(table, TEMPLATE, provider=llm, return_format=Match, model="strong", cache=journal,
                        prices=strong)
    answers = proxy.table.column("response").to_pylist()
    truth = [a["match"] for a in oracle.table.column("response").to_pylist()]
    labels, confidence = [a["match"] for a in answers], [a["confidence"] for a in answers]
    proxy_cost = out.usage.models["cheap"].cost(cheap)
    return replayed(target, DELTA, out.usage, proxy_cost, labels, confidence, truth, budget, runs, rerun_requests)


def replayed(target: Target, delta: float, usage: Usage, proxy_cost: float, labels: list[Any],
             confidence: list[float | None], truth: list[Any], budget: int, runs: int,
             rerun_requests: int) -> dict[str, float | str]:
    """The figures of ``runs`` seeded runs replayed from one real run's answers (its ``usage`` and certificate):
    how often the target held, the oracle's share and the cost against all-oracle (the proxy's ``proxy_cost``
    included)."""
    replays = [replay(target, delta, budget, seed, labels, confidence, truth) for seed in range(runs)]
    certificate = usage.certificate
    assert certificate is not None
    all_oracle = certificate.all_oracle_cost_usd or 0.0
    ratios = [(proxy_cost + r.oracle_share * all_oracle) / all_oracle for r in replays] if all_oracle else [0.0]
    rows = len(truth)
    return {
        "target": str(target), "delta": delta, "rows": rows, "label_budget": budget, "runs": runs,
        "proxy_error_rate": round(sum(p != t for p, t in zip(labels, truth, strict=True)) / rows, 4),
        "held_share": sum(r.measure >= target.value for r in replays) / runs,
        "worst_measure": round(min(r.measure for r in replays), 4),
        "mean_measure": round(statistics.fmean(r.measure for r in replays), 4),
        "mean_oracle_share": round(statistics.fmean(r.oracle_share for r in replays), 4),
        "mean_cost_vs_all_oracle": round(statistics.fmean(ratios), 4),
        "real_run_oracle_share": round(certificate.oracle_share, 4),
        "real_run_cost_vs_all_oracle": certificate.summary()["cost_vs_all_oracle"],
        "rerun_requests": rerun_requests,
    }


def run_targets(name: str, one: Callable[[FakeOpenAIServer, Target, int, int, int], dict[str, float | str]],
                noise: Noise | None = None) -> None:
    """The command line of a certified-cascade bench: ``one`` per target on a fake server, printed and saved."""
    parser = argparse.ArgumentParser(description=(sys.modules["__main__"].__doc__ or "").split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=5000)
    parser.add_argument("--budget", type=int, default=500)
    parser.add_argument("--runs", type=int, default=200)
    args = parser.parse_args()
    figures = {}
    with FakeOpenAIServer() as server:
        if noise is not None:
            server.set_noise(noise)
        for target in (Recall(0.95), Precision(0.9), Accuracy(0.95)):
            result = one(server, target, args.rows, args.budget, args.runs)
            figures[target.kind] = result
            print(" | ".join(f"{k} {v}" for k, v in result.items()), flush=True)
    save(name, figures)


def main() -> None:
    run_targets("certified_cascade", one, Noise(model="cheap", label="match", rate=NOISE, seed=3))


if __name__ == "__main__":
    main()
