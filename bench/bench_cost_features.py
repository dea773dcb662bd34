"""What a model cascade saves, against the fake server, in one run (prompt-cache ordering has its own bench:
``bench/bench_prompt_cache.py``).

* Cascade: 1,000 rows, the cheap model (gpt-4o-mini prices) gets 20 % wrong (the fake breaks the schema for them),
  those go to the strong model (gpt-4o prices); against sending every row to the strong model.

    python bench/bench_cost_features.py
"""

from __future__ import annotations

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
        cascade(server)


if __name__ == "__main__":
    main()
