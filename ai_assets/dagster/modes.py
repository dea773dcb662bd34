"""Process-wide switches of the Dagster layer (set by command-line tools, read by the asset bodies)."""

from __future__ import annotations

import threading

_ESTIMATE = threading.Event()


def estimating() -> bool:
    """Whether enrichment assets only estimate (``python -m ai_assets.dagster.estimate`` runs them so)."""
    return _ESTIMATE.is_set()


def set_estimating(on: bool) -> None:
    if on:
        _ESTIMATE.set()
    else:
        _ESTIMATE.clear()
