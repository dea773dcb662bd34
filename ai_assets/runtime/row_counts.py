"""How a window's rows count in the usage: read, skipped, and answered by another row (overall and per group)."""

from __future__ import annotations

from collections.abc import Sequence

from ai_assets.runtime.task import Plan
from ai_assets.runtime.usage import Usage


def count_rows(usage: Usage, plan: Plan, groups: Sequence[str] | None) -> None:
    """Every row of a window, and those skipped (a row refused before sending is an error, not a skip)."""
    skips = [k is None and not (s is not None and s.is_error) for k, s in zip(plan.keys, plan.skips, strict=True)]
    usage.rows += len(plan.keys)
    usage.skipped += sum(skips)
    if groups:
        for group, skipped in zip(groups, skips, strict=True):
            counts = usage.group(group)
            counts.rows += 1
            counts.skipped += skipped


def count_repeats(usage: Usage, keys: Sequence[str | None], groups: Sequence[str], looked_up: set[str]) -> None:
    """Each group's share of the rows answered by another row (repeated in the window or already in flight):
    every occurrence but the first of a key that is looked up."""
    first: set[str] = set()
    for key, group in zip(keys, groups, strict=True):
        if key is None:
            continue
        if key in looked_up and key not in first:
            first.add(key)
            continue
        usage.group(group).deduplicated += 1
