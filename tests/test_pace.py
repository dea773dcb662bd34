"""The local engine's deadline from its measured speed (``ai_assets.runtime.pace``): pure, so fast.

Modelled: llama.cpp reports each answer's speeds as ``timings.prompt_per_second`` / ``predicted_per_second``
(server README, /completion response); a value it cannot measure comes back 0 or absent, and a JSON encoder may
give inf/NaN for a zero-length phase.
"""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ai_assets import ConfigError
from ai_assets.runtime.pace import Pace

speeds = st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True))
tokens = st.integers(min_value=-10, max_value=10**7)


@given(st.lists(st.tuples(speeds, speeds), max_size=20), tokens, tokens)
def test_a_deadline_is_finite_and_at_least_the_floor_whatever_was_measured(
        seen: list[tuple[float | None, float | None]], prompt_tokens: int, max_tokens: int) -> None:
    pace = Pace(slack=4.0, floor_s=2.0)
    for prefill, decode in seen:
        pace.observe(prefill, decode)
    deadline = pace.deadline_s(prompt_tokens, max_tokens)
    assert math.isfinite(deadline) and deadline >= 2.0
    assert pace.deadline_s(prompt_tokens, max_tokens + 100) >= deadline


def test_the_deadline_follows_the_measured_speed() -> None:
    pace = Pace(slack=4.0, floor_s=1.0)
    pace.observe(200.0, 20.0)
    assert pace.measured
    assert pace.deadline_s(100, 200) == pytest.approx(4 * (100 / 200 + 200 / 20))
    pace.observe(200.0, 2.0)  # the machine got ten times slower: the deadline grows with it
    assert pace.deadline_s(100, 200) > 4 * (100 / 200 + 200 / 20)


def test_a_cut_request_only_slows_the_estimate() -> None:
    pace = Pace()
    pace.observe(100.0, 50.0)
    before = pace.deadline_s(10, 100)
    pace.observe_cut(5, 10.0)  # 0.5 tokens/s: its retry gets far longer
    assert pace.decode_tps == pytest.approx(0.5)
    assert pace.deadline_s(10, 100) > 50 * before / 2
    pace.observe_cut(10_000, 1.0)  # faster than measured: never speeds the estimate up
    assert pace.decode_tps == pytest.approx(0.5)
    pace.observe_cut(3, float("nan"))
    assert pace.decode_tps == pytest.approx(0.5)


@pytest.mark.parametrize("bad", [{"slack": 0.0}, {"slack": float("nan")}, {"floor_s": -1.0},
                                 {"floor_s": float("inf")}])
def test_bad_settings_are_refused_by_name(bad: dict[str, float]) -> None:
    with pytest.raises(ConfigError, match="slack"):
        Pace(**bad)


def test_a_request_still_progressing_at_its_deadline_gets_what_its_own_pace_needs() -> None:
    """The machine slowed after the warm-up (CI at load: one row of three was cut at its deadline and retried):
    a request that is making progress gets slack x its own remaining time, within 3 deadlines more; before its
    first token, the deadline once more."""
    pace = Pace(slack=4.0, floor_s=1.0)
    assert pace.extension_s(tokens=60, elapsed_s=6.0, max_tokens=120, deadline_s=10.0) == 24.0  # 4 x 6 s left
    assert pace.extension_s(tokens=119, elapsed_s=6.0, max_tokens=120, deadline_s=10.0) == 1.0  # the floor
    assert pace.extension_s(tokens=1, elapsed_s=10.0, max_tokens=1000, deadline_s=10.0) == 30.0  # at most 3 more
    assert pace.extension_s(tokens=0, elapsed_s=10.0, max_tokens=120, deadline_s=10.0) == 10.0


@given(st.integers(-5, 10_000), st.floats(allow_nan=True, allow_infinity=True), st.integers(1, 10_000),
       st.floats(0.001, 1e6))
def test_an_extension_is_finite_and_bounded(tokens: int, elapsed: float, most: int, deadline: float) -> None:
    extra = Pace(slack=4.0, floor_s=1.0).extension_s(tokens, elapsed, most, deadline)
    assert math.isfinite(extra) and 0 < extra <= max(3 * deadline, 1.0)
