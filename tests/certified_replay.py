"""Replaying a certified cascade's choice under many seeds from one set of journalled answers.

A certified cascade's run is: the proxy's answer for every row (the same whatever the seed), a uniform sample the
seed draws, the oracle's answers on it, the threshold learned from them, and the oracle's answers for the rows the
threshold does not trust. With the proxy's and the oracle's answers for every row at hand (one real run each,
through the journal), a run under another seed is this replay, with no network: the same functions choose
(``sample_rows``, ``learn``), only the answers come from memory. The test and the bench share it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ai_assets.runtime.guarantees import Accuracy, Precision, Recall, Target, learn, sample_rows


@dataclass(frozen=True)
class Replay:
    """One seeded run: the measure it reached against the truth, and the share of rows the oracle answered."""

    seed: int
    measure: float
    oracle_share: float
    threshold: float


def trust_of(target: Target, label: Any, confidence: float | None) -> float:
    """The proxy's trust score as ``ai_assets.functions.certify`` computes it."""
    if confidence is None or label is None:
        return -math.inf
    if isinstance(target, Accuracy):
        return confidence
    return confidence if label is isinstance(target, Precision) else -math.inf


def measure(target: Target, output: Sequence[Any], truth: Sequence[Any]) -> float:
    """Recall, precision or accuracy of ``output`` against ``truth`` (1.0 where it is undefined: nothing to find,
    nothing labelled True)."""
    if isinstance(target, Accuracy):
        return sum(bool(o == t) for o, t in zip(output, truth, strict=True)) / len(truth)
    hits = sum(o is True and t is True for o, t in zip(output, truth, strict=True))
    if isinstance(target, Recall):
        positives = sum(t is True for t in truth)
        return hits / positives if positives else 1.0
    said = sum(o is True for o in output)
    return hits / said if said else 1.0


def replay(target: Target, delta: float, budget: int, seed: int, proxy: Sequence[Any],
           confidence: Sequence[float | None], truth: Sequence[Any]) -> Replay:
    """The run under ``seed``: the proxy's labels and confidences and the oracle's labels (the truth) per row."""
    trust = [trust_of(target, p, c) for p, c in zip(proxy, confidence, strict=True)]
    sample = sample_rows(range(len(trust)), budget, seed)
    if isinstance(target, Accuracy):
        good = {row: proxy[row] == truth[row] for row in sample}
    else:
        good = {row: truth[row] is True for row in sample}
    learned = learn(target, trust, good, delta)
    asked = set(sample) | {row for row, t in enumerate(trust) if t < learned.threshold}
    output = [truth[row] if row in asked else proxy[row] for row in range(len(trust))]
    return Replay(seed, measure(target, output, truth), len(asked) / len(trust), learned.threshold)
