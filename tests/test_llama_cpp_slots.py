"""The embedded llama.cpp under CPU load: a cut request stops in the engine before its row is retried, and the
timeout follows the engine's measured speed.

Behaviour modelled: llama.cpp's server cannot cancel a non-streamed request whose client went away (its HTTP thread
blocks until the answer is complete), while a streamed one is cancelled at the first write to the closed connection
(llama.cpp issue #9273); ``GET /slots`` reports each slot's ``is_processing`` (llama.cpp server README, /slots).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator

import pyarrow as pa
import pytest

from ai_assets import LlamaCppProvider, PromptParams, RetryPolicy, RunOptions, prompt

pytestmark = pytest.mark.slow
TEXTS = ["Loud but comfortable.", "Battery died in a day.", "Screen is sharp."]


@pytest.fixture
def cpu_load() -> Iterator[None]:
    """Two busy processes on the machine, as on a shared 2-core box (killed by their own pids)."""
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2)]
    try:
        yield
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()


def busy_slots(provider: LlamaCppProvider) -> list[int]:
    with urllib.request.urlopen(provider.base_url.removesuffix("/v1") + "/slots", timeout=10) as response:
        return [s["id"] for s in json.loads(response.read()) if s["is_processing"]]


def test_a_cut_request_is_cancelled_in_llama_cpp_before_its_row_is_retried(cpu_load: None) -> None:
    """Every attempt is cut (a deadline far below the engine's speed): each row costs exactly max_attempts
    requests, each failure says llama.cpp freed its slot, and no slot is left decoding after the call. Before,
    the cut requests kept decoding in their slots (the non-streamed request cannot be cancelled)."""
    with LlamaCppProvider(parallel=2, slack=0.001) as provider:
        out = prompt(pa.table({"text": TEXTS}), "Write a long story about {text}", provider=provider,
                     params=PromptParams(max_output_tokens=400, extra_body={"ignore_eos": True}),
                     options=RunOptions(timeout_s=0.3, concurrency=2, on_error="null",
                                        retry=RetryPolicy(max_attempts=2, base_wait=0.0)))
        left = busy_slots(provider)
        assert left == []  # before: [1], a cut request still decoding in its slot
        assert out.usage.requests == len(TEXTS) * 2  # requests per row == max_attempts, never more
        errors = out.table.column("response_error").to_pylist()
        assert all(e is not None and "freed slot" in e for e in errors), errors


def test_under_cpu_load_each_row_costs_one_request(cpu_load: None) -> None:
    """A 1 s timeout is too short for 120 tokens on a loaded machine; the local engine's deadline follows its
    measured speed instead (timeout_s is only its floor), so no row is cut and retried: one request a row.
    Before, every row was cut at 1 s and sent again while its first request still decoded."""
    with LlamaCppProvider(parallel=2) as provider:
        out = prompt(pa.table({"text": TEXTS}), "Write a long story about {text}", provider=provider,
                     params=PromptParams(max_output_tokens=120, extra_body={"ignore_eos": True}),
                     options=RunOptions(timeout_s=1.0, concurrency=4, on_error="null"))
        assert out.table.column("response_error").to_pylist() == [None] * len(TEXTS)
        assert out.usage.requests == len(TEXTS)
        assert out.usage.completion_tokens == 120 * len(TEXTS)
        time.sleep(0.2)
        assert busy_slots(provider) == []
