"""How long a request to a local engine may take: from the engine's measured speed, not a fixed number.

A local engine (the embedded llama.cpp) computes on the same cores as everything else on the machine, so its speed
follows the machine's load: a fixed timeout that is generous on an idle laptop cuts every answer on a busy 2-core
box, and each cut answer is sent again to an engine that is slower still. Here a request's deadline is

    max(floor_s, slack * (prompt_tokens / prefill_tps + max_tokens / decode_tps))

counted from the moment the request has an engine slot of its own (time spent queued behind other requests is not
its time). ``prefill_tps`` and ``decode_tps`` start from a warm-up and follow every answer (llama.cpp reports
``timings.prompt_per_second`` and ``timings.predicted_per_second`` in each answer, measured with the other slots
busy); a request cut at its deadline slows the estimate with what it managed, so its retry is given longer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ai_assets.runtime.errors import ConfigError

SMOOTHING = 0.3
"""Weight of the newest measurement in the moving average."""
MIN_TPS = 0.01
"""No measurement is taken as slower than this (a stalled engine still gets a finite deadline)."""
UNMEASURED_TPS = 1.0
"""Speed assumed before any measurement: one token a second, a deadline that errs long."""


EXTENSION_AT_MOST = 3.0
"""A request still making progress at its deadline may run this many deadlines more (so one attempt takes at most
4 deadlines, which the engine's own bound on an attempt allows for)."""


@dataclass
class Pace:
    """The measured speed of one local engine, and the deadlines that follow from it."""

    slack: float = 4.0
    floor_s: float = 10.0
    prefill_tps: float = UNMEASURED_TPS
    decode_tps: float = UNMEASURED_TPS
    measured: bool = False

    def __post_init__(self) -> None:
        if not (self.slack > 0 and math.isfinite(self.slack)) or not (self.floor_s >= 0 and
                                                                      math.isfinite(self.floor_s)):
            raise ConfigError(f"Pace: slack > 0 and floor_s >= 0, both finite, got slack={self.slack!r}, "
                              f"floor_s={self.floor_s!r}")

    def expected_s(self, prompt_tokens: int, max_tokens: int) -> float:
        """Seconds a request should take at the measured speed."""
        return max(prompt_tokens, 0) / self.prefill_tps + max(max_tokens, 0) / self.decode_tps

    def deadline_s(self, prompt_tokens: int, max_tokens: int) -> float:
        """Seconds a request may take once it has a slot."""
        return max(self.floor_s, self.slack * self.expected_s(prompt_tokens, max_tokens))

    def extension_s(self, tokens: int, elapsed_s: float, max_tokens: int, deadline_s: float) -> float:
        """More seconds for a request still running at its deadline: ``slack`` times what its own pace so far
        needs for the rest (at least the floor, at most ``EXTENSION_AT_MOST`` deadlines), or the deadline once more
        before its first token. A machine that slowed after the warm-up then costs no retry; a stalled request is
        cut at the end of this."""
        if tokens <= 0 or not (elapsed_s > 0 and math.isfinite(elapsed_s)):
            return deadline_s
        rest = max(max_tokens - tokens, 1) * elapsed_s / tokens
        return min(max(self.floor_s, self.slack * rest), EXTENSION_AT_MOST * deadline_s)

    def observe(self, prefill_tps: float | None, decode_tps: float | None) -> None:
        """An answer's measured speeds (tokens/s); unreadable ones (None, NaN, 0, inf) are skipped."""
        self.prefill_tps = _mix(self.prefill_tps, prefill_tps, self.measured)
        self.decode_tps = _mix(self.decode_tps, decode_tps, self.measured)
        self.measured = self.measured or _usable(decode_tps)

    def observe_cut(self, tokens: int, elapsed_s: float) -> None:
        """A request cut at its deadline after ``tokens`` tokens in ``elapsed_s``: the engine is at most that fast
        now (only ever slows the estimate, so the retry gets a longer deadline)."""
        if not (elapsed_s > 0 and math.isfinite(elapsed_s)):
            return
        slower = max(min(self.decode_tps, max(tokens, 1) / elapsed_s), MIN_TPS)
        self.prefill_tps = max(self.prefill_tps * slower / self.decode_tps, MIN_TPS)  # the same machine, as slowed
        self.decode_tps = slower

    def describe(self) -> str:
        return f"prefill {self.prefill_tps:.1f} tokens/s, decode {self.decode_tps:.1f} tokens/s, slack {self.slack:g}x"


def _usable(value: float | None) -> bool:
    return value is not None and math.isfinite(value) and value > 0


def _mix(old: float, new: float | None, measured: bool) -> float:
    if not _usable(new):
        return old
    assert new is not None
    value = new if not measured else (1 - SMOOTHING) * old + SMOOTHING * new
    return max(value, MIN_TPS)
