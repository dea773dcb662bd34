"""The statistics of a certified cascade: which proxy answers can be kept so that a recall, precision or accuracy
target holds with probability at least 1 - delta, learned from a sample of oracle answers.

We follow BARGAIN (Zeighami, Shankar, Parameswaran: "Cut Costs, Not Accuracy: LLM-Powered Data Processing with
Guarantees", SIGMOD 2026; github.com/szeighami/BARGAIN, its ``BARGAIN_A`` / ``BARGAIN_P`` / ``BARGAIN_R``):

* the proxy scores every row; the rows it is most sure of are the candidates to keep, in ``CANDIDATES`` nested
  sets (the top 1/M, 2/M, ... of the rows by score: BARGAIN's ``M = 20`` thresholds), chosen from the scores alone,
  before any oracle answer is seen;
* a uniform sample of the rows, drawn without replacement, goes to the oracle;
* the candidates are tested one after another, most trusted first, each at level delta, and the walk stops at the
  first that fails (fixed-sequence testing: no union bound over the thresholds, the family-wise error stays at
  delta; BARGAIN's loop ``if not is_confident_above_target: break``);
* Accuracy keeps the proxy's answer above the threshold and asks the oracle for the rest, so the output's accuracy
  is at least the target when the kept answers' accuracy is at least the adjusted target
  ``(target * N - oracle_rows) / kept_rows`` (BARGAIN_A); Precision keeps the proxy's positives above the
  threshold (the oracle's own positives are right, so precision over all output positives is at least that of the
  kept ones: BARGAIN_P); Recall keeps the proxy's negatives above the threshold and the oracle labels the rest
  (BARGAIN_R; SUPG's recall target, Kang et al., VLDB 2020, bounds the same ratio of positives kept to all
  positives, with an upper bound on the positives lost and a lower bound on those found, delta / 2 each).

Where BARGAIN tests each candidate with a betting confidence sequence (it samples adaptively), we sample once, so
each test is the exact one-sided binomial (Clopper-Pearson) bound on the sampled rows that fall in the set: also
valid at every sample size, with no normal approximation (SUPG's CIs are asymptotic). Sampling without replacement
only narrows the binomial's spread (Hoeffding 1963, section 6), so the bound stays conservative.

Assumptions, stated with every result: the sample is uniform over the rows (i.i.d. for a threshold reused on new
data drawn the same way), and the oracle's answer is the truth.
"""

from __future__ import annotations

import functools
import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ai_assets.runtime.errors import ConfigError

CANDIDATES = 20
"""How many nested sets of trusted rows are tested (BARGAIN's ``M``)."""


@dataclass(frozen=True)
class _Target:
    value: float

    kind = "target"

    def __post_init__(self) -> None:
        if isinstance(self.value, bool) or not isinstance(self.value, int | float) or not 0.0 < self.value < 1.0:
            raise ConfigError(f"{type(self).__name__}({self.value!r}): a target is a number in (0, 1)")

    def __str__(self) -> str:
        return f"{self.kind} >= {self.value:g}"


@dataclass(frozen=True)
class Recall(_Target):
    """At least ``value`` of the rows the oracle labels True are labelled True (the proxy keeps only negatives)."""

    kind = "recall"


@dataclass(frozen=True)
class Precision(_Target):
    """At least ``value`` of the rows labelled True are True for the oracle (the proxy keeps only positives)."""

    kind = "precision"


@dataclass(frozen=True)
class Accuracy(_Target):
    """At least ``value`` of the rows get the oracle's label (the proxy keeps the answers it is surest of)."""

    kind = "accuracy"


Target = Recall | Precision | Accuracy


@dataclass(frozen=True)
class Learned:
    """A threshold and the evidence for it: rows whose trust score is >= ``threshold`` keep the proxy's answer
    (``math.inf``: none do)."""

    threshold: float
    sample_rows: int
    population: int
    """The rows it was learned on."""
    bound: float | None
    """The tested lower bound on the target's measure for the chosen set (None when no set passed)."""

    def as_entry(self) -> dict[str, Any]:
        return {"threshold": None if math.isinf(self.threshold) else self.threshold, "sample_rows": self.sample_rows,
                "population": self.population, "bound": self.bound}

    @classmethod
    def from_entry(cls, value: Mapping[str, Any]) -> Learned:
        threshold = value.get("threshold")
        return cls(math.inf if threshold is None else float(threshold), int(value["sample_rows"]),
                   int(value["population"]), None if value.get("bound") is None else float(value["bound"]))


@dataclass(frozen=True)
class Certificate:
    """What a certified cascade guaranteed on one call, and what it cost."""

    target: Target
    delta: float
    learned: Learned
    reused: bool
    """The threshold came from the journal (learned by an earlier run with the same prompt, models and settings)."""
    rows: int
    """Rows the guarantee covers (those not skipped for an empty input)."""
    oracle_rows: int
    """Rows answered by the oracle: the sample and every row the threshold does not trust."""
    cost_usd: float | None
    """What this call cost (both models, each at its prices); None where no prices are known."""
    all_oracle_cost_usd: float | None
    """What sending every row to the oracle would have cost, from the oracle's cost per row in this call (None when
    the oracle was paid for nothing in this call: a re-run from the journal)."""

    @property
    def guarantee(self) -> str:
        return statement(self.target, self.delta, self.learned)

    @property
    def oracle_share(self) -> float:
        return self.oracle_rows / self.rows if self.rows else 0.0

    def summary(self) -> dict[str, Any]:
        """Plain values for logs and Dagster metadata."""
        threshold = self.learned.threshold
        ratio = None if not self.all_oracle_cost_usd or self.cost_usd is None \
            else round(self.cost_usd / self.all_oracle_cost_usd, 4)
        return {"guarantee": self.guarantee, "threshold": None if math.isinf(threshold) else round(threshold, 6),
                "threshold_reused": self.reused, "oracle_share": round(self.oracle_share, 4),
                "oracle_rows": self.oracle_rows, "rows": self.rows, "sample_rows": self.learned.sample_rows,
                "cost_usd": self.cost_usd, "all_oracle_cost_usd": self.all_oracle_cost_usd,
                "cost_vs_all_oracle": ratio}


def sample_rows(rows: Sequence[int], budget: int, seed: int) -> list[int]:
    """A uniform sample of ``budget`` of ``rows`` without replacement (all of them when fewer), seeded."""
    return sorted(random.Random(seed).sample(list(rows), min(budget, len(rows))))


@functools.lru_cache(maxsize=4096)
def _log_choose(n: int) -> np.ndarray:
    """log C(n, i) for i = 0..n."""
    logs = [math.lgamma(i + 1) for i in range(n + 1)]
    return np.array([logs[n] - logs[i] - logs[n - i] for i in range(n + 1)])


def _upper_tail(k: int, n: int, p: float) -> float:
    """P(Binomial(n, p) >= k)."""
    if k <= 0:
        return 1.0
    if p <= 0.0:
        return 0.0
    if p >= 1.0:
        return 1.0
    i = np.arange(k, n + 1)
    logs = _log_choose(n)[k:] + i * math.log(p) + (n - i) * math.log1p(-p)
    return float(np.exp(logs).sum())


def lower_bound(k: int, n: int, alpha: float) -> float:
    """The one-sided Clopper-Pearson lower confidence bound, level 1 - ``alpha``, on a proportion seen ``k`` times
    in ``n`` draws: the largest p with P(Binomial(n, p) >= k) <= alpha (0 when k == 0 or n == 0)."""
    if n <= 0 or k <= 0:
        return 0.0
    low, high = 0.0, k / n
    for _ in range(48):  # bisection to ~4e-15
        mid = (low + high) / 2
        if _upper_tail(k, n, mid) <= alpha:
            low = mid
        else:
            high = mid
    return low


def upper_bound(k: int, n: int, alpha: float) -> float:
    """The one-sided Clopper-Pearson upper bound, level 1 - ``alpha`` (1 when n == 0)."""
    return 1.0 if n <= 0 else 1.0 - lower_bound(n - k, n, alpha)


def learn(target: Target, trust: Sequence[float], good: Mapping[int, bool], delta: float) -> Learned:
    """The lowest threshold on ``trust`` (the proxy's score per row, higher is surer; ``-inf``: never keep) whose
    kept rows meet ``target`` with probability >= 1 - ``delta``. ``good``: for each sampled row (a uniform sample,
    drawn before its answers were seen), whether the oracle's answer counts for the target there (Accuracy: the
    proxy agrees with the oracle; Precision and Recall: the oracle says True)."""
    scores = np.asarray(trust, dtype=float)
    rows = np.fromiter(good, dtype=np.int64, count=len(good))
    sampled = np.fromiter((good[r] for r in good), dtype=bool, count=len(good))
    best = Learned(math.inf, len(good), len(scores), None)
    for threshold in candidates(target, scores, len(good), delta):
        bound = _test(target, threshold, scores, scores[rows] >= threshold, sampled, delta)
        if bound is None:
            break  # fixed-sequence testing: the first failure ends the walk
        best = Learned(threshold, len(good), len(scores), bound)
    return best


def candidates(target: Target, scores: np.ndarray, sample: int, delta: float) -> list[float]:
    """The thresholds to test, most trusting first, from the scores, the sample's size and the target alone
    (never the oracle's answers, so the order is fixed before the tests): ``CANDIDATES`` kept sets growing evenly
    from the smallest whose share of a uniform sample could show the target (twice the draws that would show it
    were every one of them good) to every keepable row. Accuracy first keeps, untested, the rows the oracle's own
    answers already make up for (``(1 - target) * N``: BARGAIN_A's adjusted target <= 0 there)."""
    order = np.sort(scores[np.isfinite(scores)])[::-1]
    if not len(order):
        return []
    needed = 2 * math.ceil(math.log(delta) / math.log(target.value))
    smallest = math.ceil(needed * len(scores) / max(sample, 1))
    sizes: list[int] = []
    if isinstance(target, Accuracy):
        free = math.floor((1 - target.value) * len(scores))
        sizes.append(min(free, len(order)))
        smallest = max(smallest, free + 1)
    smallest = min(smallest, len(order))
    sizes += [round(smallest + (len(order) - smallest) * step / (CANDIDATES - 1)) for step in range(CANDIDATES)]
    out: list[float] = []
    for size in sizes:
        if size >= 1 and (not out or order[size - 1] < out[-1]):
            out.append(float(order[size - 1]))
    return out


def _test(target: Target, threshold: float, scores: np.ndarray, inside: np.ndarray, good: np.ndarray,
          delta: float) -> float | None:
    """The bound that shows ``target`` holds when rows scoring >= ``threshold`` keep the proxy's answer (``inside``:
    which sampled rows are among them; ``good``: what each sampled row says), or None when the sample does not show
    it at level ``delta``."""
    population = len(scores)
    kept = int((scores >= threshold).sum())
    hits, drawn = int(good[inside].sum()), int(inside.sum())
    if isinstance(target, Recall):
        outside = ~inside
        lost = kept * upper_bound(hits, drawn, delta / 2)  # positives among the kept negatives, at most
        found = (population - kept) * lower_bound(int(good[outside].sum()), int(outside.sum()), delta / 2)
        bound = found / (found + lost) if found + lost > 0 else 0.0
        return bound if bound >= target.value else None
    bound = lower_bound(hits, drawn, delta)
    need = target.value
    if isinstance(target, Accuracy):  # the oracle's rows are right: the kept ones need only make up the rest
        need = (target.value * population - (population - kept)) / kept
        if need <= 0:
            return bound
    return bound if bound >= need else None


def statement(target: Target, delta: float, learned: Learned) -> str:
    """The guarantee in words, with its assumptions."""
    return (f"{target} with probability >= {1 - delta:g} over the sample ({learned.sample_rows} oracle-labelled "
            f"rows drawn uniformly from {learned.population}; assumes the oracle is the truth and the rows are "
            "exchangeable with the sample)")
