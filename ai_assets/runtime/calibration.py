"""What answers of one kind of request really cost against their estimate, kept in the journal for the next
estimate (see ``ai_assets.runtime.estimate``)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass

from ai_assets.runtime.cache import Cache, Entry

CALIBRATION = "calibration:"


@dataclass
class Calibration:
    """What answers of one kind of request really cost against their estimate, learned by every live run and kept
    in the journal (``calibration:<family>``): the next estimate of the same asset starts from it."""

    estimated_in: int = 0
    billed_in: int = 0
    billed_out: int = 0
    rows: int = 0

    def add(self, estimated_in: int, billed_in: int, billed_out: int, rows: int = 1) -> None:
        self.estimated_in += estimated_in
        self.billed_in += billed_in
        self.billed_out += billed_out
        self.rows += rows

    def merged(self, stored: Mapping[str, int] | None) -> Calibration:
        out = Calibration(**{k: int(v) for k, v in (stored or {}).items() if k in self.__dataclass_fields__})
        out.add(self.estimated_in, self.billed_in, self.billed_out, self.rows)
        return out


def save_calibration(cache: Cache, family: str, learned: Calibration) -> None:
    """Add what a run learned to the journal's calibration of its family (a statistic: the last writer of two
    concurrent runs wins, which only makes an estimate a little less informed)."""
    if learned.rows == 0:
        return
    stored = cache.get_many([CALIBRATION + family]).get(CALIBRATION + family)
    merged = learned.merged(stored.value if stored is not None else None)
    cache.put_many([Entry(CALIBRATION + family, asdict(merged))])
