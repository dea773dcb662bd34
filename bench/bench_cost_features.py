"""What prompt-cache ordering and a model cascade save, against the fake server, in one run.

* Prompt cache: 2,000 questions over 20 documents (~1,300 tokens each) sent shuffled, with and without
  ``order_by_prefix``; the fake reports ``cached_tokens`` from an LRU of the last 8 prefix blocks (as a provider's
  cache that other traffic also uses). Priced at gpt-4o-mini's rates (cached input at half price).
* Cascade: 1,000 rows, the cheap model (gpt-4o-mini prices) gets 20 % wrong (the fake breaks the schema for them),
  those go to the strong model (gpt-4o prices); against sending every row to the strong model.

    python bench/bench_cost_features.py
"""

from __future__ import annotations

import random
import tempfile
from pathlib import Path

import pyarrow as pa
from pydantic import BaseModel

from ai_assets import Cascade, OpenAICompatibleProvider, RetryPolicy, RunOptions, prompt
from ai_assets.runtime.cache.sqlite import ResultCache
from ai_assets.runtime.prices import lookup
from ai_assets.testing import FakeOpenAIServer, Fault


class Verdict(BaseModel):
    label: str
    score: int


def prompt_cache(server: FakeOpenAIServer) -> None:
    rng = random.Random(7)
    documents = [f"Document {g}. " + " ".join(f"w{g}x{i}" for i in range(800)) for g in range(20)]
    rows = [(documents[g], f"question {q} about document {g}?") for g in range(20) for q in range(100)]
    rng.shuffle(rows)
    table = pa.table({"doc": [r[0] for r in rows], "question": [r[1] for r in rows]})
    prices = lookup("gpt-4o-mini")
    llm = OpenAICompatibleProvider("fake-model", base_url=server.base_url, api_key="k")
    for ordered in (False, True):
        server.reset()
        usage = prompt(table, "{doc}\n\nQuestion: {question}", provider=llm, prices=prices,
                       options=RunOptions(order_by_prefix=ordered, concurrency=16)).usage
        share = usage.cached_tokens / usage.prompt_tokens
        print(f"prompt cache  order_by_prefix={ordered!s:5}  cached share {share:.3f}  "
              f"cost ${usage.cost(prices):.4f}  ({usage.prompt_tokens:,} prompt tokens)")


def cascade(server: FakeOpenAIServer) -> None:
    table = pa.table({"text": [f"review {i} [hard]" if i % 5 == 0 else f"review {i}" for i in range(1000)]})
    cheap, strong = lookup("gpt-4o-mini"), lookup("gpt-4o")
    assert cheap is not None and strong is not None
    llm = OpenAICompatibleProvider("unused", base_url=server.base_url, api_key="k")
    options = RunOptions(retry=RetryPolicy(max_attempts=2, base_wait=0.01), on_error="null")
    server.set_faults(Fault("schema_violation", match="[hard]", model="cheap", attempts=None))
    with tempfile.TemporaryDirectory() as folder:
        journal = ResultCache(Path(folder) / "journal.sqlite")
        server.reset()
        out = prompt(table, "Judge: {text}", provider=llm, return_format=Verdict, cache=journal, options=options,
                     cascade=Cascade(["cheap", "strong"], prices={"cheap": cheap, "strong": strong}))
        sent = server.stats().models
        server.reset()
        again = prompt(table, "Judge: {text}", provider=llm, return_format=Verdict, cache=journal, options=options,
                       cascade=Cascade(["cheap", "strong"], prices={"cheap": cheap, "strong": strong}))
        rerun_requests = server.stats().chat_requests
    server.set_faults()
    server.reset()
    alone = prompt(table, "Judge: {text}", provider=llm, return_format=Verdict, model="strong", prices=strong,
                   options=options).usage
    valid = out.table.column("response_error").null_count
    print(f"cascade  requests {sent}  valid {valid}/1000  cost ${out.usage.cost(None):.5f} vs strong alone "
          f"${alone.cost(strong):.5f} ({out.usage.cost(None) / alone.cost(strong):.2f}x)  "
          f"re-run requests {rerun_requests}, cost ${again.usage.cost(None):.5f}")


def main() -> None:
    with FakeOpenAIServer() as server:
        prompt_cache(server)
        cascade(server)


if __name__ == "__main__":
    main()
