"""Where each benchmark leaves its figures: ``bench/figures.json``, one entry per benchmark (its last run on this
machine, with the command and date), read by ``bench/chart.py`` for the README's chart."""

from __future__ import annotations

import datetime as dt
import json
import sys
from pathlib import Path
from typing import Any

FIGURES = Path(__file__).resolve().parent / "figures.json"


def save(bench: str, figures: dict[str, Any], command: str | None = None) -> None:
    """Record ``figures`` as benchmark ``bench``'s latest run (other benchmarks' entries are kept)."""
    everything: dict[str, Any] = json.loads(FIGURES.read_text()) if FIGURES.exists() else {}
    everything[bench] = {"command": command or " ".join(["python", *sys.argv]), "date": dt.date.today().isoformat(),
                         "figures": figures}
    FIGURES.write_text(json.dumps(everything, indent=2, sort_keys=True) + "\n")


def load() -> dict[str, Any]:
    result: dict[str, Any] = json.loads(FIGURES.read_text())
    return result
