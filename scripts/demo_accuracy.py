"""How right the demo's answers are on one day of reviews, printed by ``./scripts/demo`` after the reviews step.

The reference is each review's own star rating (``rating`` in data/reviews), read with the usual star scale:
1-2 stars negative, 3 mixed, 4-5 positive. A row that failed counts as a disagreement and its error is printed.

    .venv/bin/python scripts/demo_accuracy.py [PARTITION]
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ai_assets.storage.delta import DeltaStore
from ai_assets.storage.parquet import ParquetStore

MAX_ERROR_CHARS = 300
"""A failed row's error is printed up to this many characters (the rest is cut, and the line says so)."""


def star_sentiment(rating: Any) -> str | None:
    """The sentiment a star rating states (1-2 negative, 3 mixed, 4-5 positive); None for a missing or odd one."""
    if isinstance(rating, bool) or not isinstance(rating, int | float) or not 1 <= rating <= 5:
        return None
    return "negative" if rating < 3 else "mixed" if rating < 4 else "positive"


@dataclass
class Accuracy:
    reviews: int = 0
    sentiment_agrees: int = 0
    repeated_aspects: int = 0
    failed: list[str] = field(default_factory=list)
    """One line per failed row: its id and its error (cut at MAX_ERROR_CHARS, saying so)."""
    disagreements: list[str] = field(default_factory=list)


def measure(out: Path, partition: str) -> Accuracy:
    """Sentiment (``review_sentiment``, Delta) against the star rating, and repeated items in the LLM's aspect
    lists (``review_insights``, Parquet), for the reviews of ``partition``."""
    insights = ParquetStore(str(out / "parquet" / "review_insights")).read([partition]).to_pylist()
    sentiment = {row["review_id"]: row for row in
                 DeltaStore(str(out / "delta" / "review_sentiment")).read([partition]).to_pylist()}
    result = Accuracy(reviews=len(insights))
    for row in insights:
        review = row["review_id"]
        answer = row.get("review_insights")
        if answer is None:
            result.failed.append(f"{review}: review_insights: {_cut(row.get('review_insights_error'))}")
        elif len(set(answer["aspects"])) != len(answer["aspects"]):
            result.repeated_aspects += 1
        scored = sentiment.get(review) or {}
        label = (scored.get("review_sentiment") or {}).get("label")
        if label is None:
            result.failed.append(f"{review}: review_sentiment: {_cut(scored.get('review_sentiment_error'))}")
        elif label == star_sentiment(row.get("rating")):
            result.sentiment_agrees += 1
        else:
            result.disagreements.append(f"{review}: {row.get('rating')} stars, labelled {label}: "
                                        f"{str(row.get('review'))[:60]}")
    return result


def _cut(error: Any) -> str:
    text = str(error)
    return text if len(text) <= MAX_ERROR_CHARS else f"{text[:MAX_ERROR_CHARS]}... (cut at {MAX_ERROR_CHARS} chars)"


def report(accuracy: Accuracy, partition: str) -> str:
    lines = [f"Accuracy on {partition} ({accuracy.reviews} reviews; reference: each review's star rating, "
             "1-2 negative, 3 mixed, 4-5 positive):",
             f"  sentiment agrees with the star rating: {accuracy.sentiment_agrees} of {accuracy.reviews}",
             f"  aspect lists that repeat an item:      {accuracy.repeated_aspects} of {accuracy.reviews}",
             f"  rows that failed:                      {len(accuracy.failed)}"]
    lines += [f"    failed {line}" for line in accuracy.failed]
    lines += [f"    disagrees {line}" for line in accuracy.disagreements]
    return "\n".join(lines)


def main() -> None:
    out = Path(os.environ.get("AI_ASSETS_OUT", Path(__file__).resolve().parents[1] / "out"))
    partition = sys.argv[1] if len(sys.argv) > 1 else "2024-11-01"
    print(report(measure(out, partition), partition), flush=True)


if __name__ == "__main__":
    main()
    os._exit(0)  # deltalake can abort at interpreter exit after reads (delta-rs #2184), as in show_results.py
