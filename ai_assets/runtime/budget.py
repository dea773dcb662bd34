"""Spending caps: stop sending once what a run has spent, plus what it has in flight, reaches the cap.

``RunOptions(max_tokens=)`` caps tokens billed (prompt + completion, every attempt counted); ``max_cost=`` caps US
dollars at the run's prices. A request is let through only while ``spent + in flight + its own estimate`` stays
within the cap (its completion estimate: its ``max_output_tokens`` cap, else the average completion of this run's
answers so far), so a run stops within one window of requests of it: the requests already in flight finish,
their answers go into the journal, and the run fails with ``BudgetExceededError`` saying what was billed once
they have. The next run starts from the journal: it never pays again for what this one got. In batch mode the
estimate of every line is held before the line is submitted, and none is submitted past the cap.
"""

from __future__ import annotations

from ai_assets.runtime.errors import AIAssetsError, AttemptUsage, ConfigError
from ai_assets.runtime.limits import TokenCost
from ai_assets.runtime.usage import Prices


class BudgetExceededError(AIAssetsError):
    """A run's spending cap is reached: no more requests are sent; answers so far are in the journal."""

    def __init__(self, message: str, *, tokens: int, cost: float | None) -> None:
        super().__init__(message)
        self.tokens = tokens
        self.cost = cost

    def restate(self, budget: Budget) -> None:
        """Say what was really billed, once the requests in flight at the cap have finished."""
        self.args = (budget.describe(),)
        self.tokens, self.cost = budget.tokens, budget.cost


class Budget:
    def __init__(self, *, max_tokens: int | None = None, max_cost: float | None = None,
                 prices: Prices | None = None) -> None:
        if max_cost is not None and prices is None:
            raise ConfigError("RunOptions.max_cost needs prices: pass prices=Prices(...) or use a model with a "
                              "built-in price (ai_assets.runtime.prices)")
        self.max_tokens = max_tokens
        self.max_cost = max_cost
        self.prices = prices
        self.spent = AttemptUsage()
        self._in_flight = AttemptUsage()
        self._answers = 0

    def _cost(self, usage: AttemptUsage) -> float:
        assert self.prices is not None
        return self.prices.usage_cost(usage)

    def output_estimate(self, cost: TokenCost) -> int:
        """The completion tokens to hold for a request: its cap where it has one, else what answers of this run
        averaged so far (before the first answer: its prompt's size, within the default reservation)."""
        if cost.output_is_cap or not cost.output:
            return cost.output
        if self._answers:
            return min(cost.output, -(-self.spent.completion_tokens // self._answers))
        return min(cost.output, max(cost.prompt, 1))

    def reserve(self, cost: TokenCost) -> int:
        """Hold room for a request about to be sent (raises at the cap); the completion tokens held, to give back
        to ``release``."""
        output = self.output_estimate(cost)
        ahead = AttemptUsage(self.spent.prompt_tokens + self._in_flight.prompt_tokens + cost.prompt,
                             self.spent.completion_tokens + self._in_flight.completion_tokens + output,
                             self.spent.cached_tokens)  # what is in flight counts at the full input price
        over_tokens = self.max_tokens is not None and (ahead.prompt_tokens + ahead.completion_tokens
                                                       > self.max_tokens)
        over_cost = self.max_cost is not None and self._cost(ahead) > self.max_cost
        if over_tokens or over_cost:
            raise BudgetExceededError(self.describe(), tokens=self.tokens, cost=self.cost)
        self._in_flight.add(AttemptUsage(cost.prompt, output))
        return output

    def release(self, cost: TokenCost, output: int) -> None:
        self._in_flight.add(AttemptUsage(-cost.prompt, -output))

    def spend(self, billed: AttemptUsage) -> None:
        self.spent.add(billed)
        if billed.completion_tokens > 0:
            self._answers += 1

    @property
    def tokens(self) -> int:
        return self.spent.prompt_tokens + self.spent.completion_tokens

    @property
    def cost(self) -> float | None:
        return None if self.prices is None else self._cost(self.spent)

    def describe_caps(self) -> str:
        caps = []
        if self.max_tokens is not None:
            caps.append(f"max_tokens={self.max_tokens:,}")
        if self.max_cost is not None:
            caps.append(f"max_cost=${self.max_cost:,.4f}")
        return ", ".join(caps)

    def describe(self) -> str:
        spent = f"{self.tokens:,} tokens ({self.spent.prompt_tokens:,} in, {self.spent.completion_tokens:,} out)"
        if self.cost is not None:
            spent += f", ${self.cost:,.4f}"
        return (f"budget reached ({self.describe_caps()}): this run spent {spent}; no more requests were sent. "
                "Every answer so far is in the journal: raise the cap and run again to continue from there.")
