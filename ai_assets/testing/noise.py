"""A cheap model that is wrong on some rows, in a controlled, seeded way, with a confidence that says how likely.

Without noise every model of the fake server gives the same structured answer to the same prompt (the instance
seeded by the prompt), so that answer is the truth a test knows. With ``Noise(model="cheap", label="match")``
the answers of ``"cheap"`` get a confidence ``c``, uniform on [0.5, 1) per prompt, and their ``label`` is wrong
with probability ``(1 - c) * rate / 0.25`` (a bool flipped, an enum moved to another option): about ``rate`` of the
prompts on average. At ``rate=0.25`` the confidence is calibrated (the chance of being right is ``c``), the
setting of the proxy scores in SUPG (Kang et al., VLDB 2020) and BARGAIN (SIGMOD 2026) evaluations; other rates
keep the confidence informative but over- or under-confident, as LLM verbalised confidences are (Xiong et al.,
"Can LLMs Express Their Uncertainty?", ICLR 2024). Requests naming other models are answered as before.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ai_assets.testing.schema_instance import seed_of

SCALE = 10**9


@dataclass(frozen=True)
class Noise:
    """``model``'s mistakes on ``label`` (about ``rate`` of the prompts, 0 to 0.5), with its confidence written to
    ``confidence`` where the schema has that field; ``seed`` picks which prompts."""

    model: str
    label: str
    confidence: str | None = "confidence"
    rate: float = 0.2
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0.0 <= self.rate <= 0.5:
            raise ValueError(f"Noise(rate={self.rate!r}): give a share of wrong answers in [0, 0.5]")

    def draw(self, key: str) -> tuple[float, bool]:
        """The confidence for prompt ``key`` and whether the answer is wrong."""
        confidence = 0.5 + 0.5 * (seed_of(f"{self.seed}:c:{key}") % SCALE) / SCALE
        wrong = (seed_of(f"{self.seed}:w:{key}") % SCALE) / SCALE < (1.0 - confidence) * self.rate / 0.25
        return confidence, wrong

    def apply(self, value: Any, key: str, schema: dict[str, Any]) -> Any:
        """``value`` (the true answer to ``key``) as this model gives it."""
        if not isinstance(value, dict) or self.label not in value:
            return value
        confidence, wrong = self.draw(key)
        out = dict(value)
        if wrong:
            out[self.label] = _other(value[self.label], schema.get("properties", {}).get(self.label, {}), schema)
        if self.confidence is not None and self.confidence in out:
            out[self.confidence] = round(confidence, 6)
        return out


def _other(label: Any, field: dict[str, Any], schema: dict[str, Any]) -> Any:
    """A wrong value for ``label``: the other bool, or the next option of an enum."""
    if isinstance(label, bool):
        return not label
    if "$ref" in field:
        field = schema.get("$defs", {}).get(field["$ref"].rsplit("/", 1)[-1], {})
    options = field.get("enum")
    if options and label in options and len(options) > 1:
        return options[(options.index(label) + 1) % len(options)]
    return label


def noisy(rules: list[Noise], model: object, value: Any, key: str, schema: dict[str, Any]) -> Any:
    """``value`` as ``model`` answers it: through the first rule naming that model, if any."""
    rule = next((r for r in rules if r.model == model), None)
    return value if rule is None else rule.apply(value, key, schema)
