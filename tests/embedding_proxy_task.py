"""The generated task with a known truth for an embedding proxy (tests and bench share it).

The fake server's oracle answers the truth; the proxy embeds a phrase per row, picked so that the nearest label of
its fake-server embedding (a deterministic vector per text, ``ai_assets.testing.handlers.embedding_for``) is the
truth on a seeded ``1 - noise`` of the rows and the other label on the rest, the wrong ones drawn from the phrases
nearest the boundary: a low confidence says a likely mistake, as a real embedding's small margin does.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import numpy as np

from ai_assets.testing.handlers import embedding_for

LABELS = {True: "a text about cats", False: "a text about anything else"}
NOISE = 0.1
POOL = 4000


def margins(texts: Sequence[str], labels: Sequence[str], dim: int) -> np.ndarray:
    """Each text's cosine to the first label minus its cosine to the second, as the fake server embeds them."""
    rows = np.asarray([embedding_for(t, dim) for t in texts])
    anchors = np.asarray([embedding_for(t, dim) for t in labels])
    cosines = rows @ anchors.T
    out: np.ndarray = cosines[:, 0] - cosines[:, 1]
    return out


def phrases(truth: Sequence[bool], dim: int, noise: float = NOISE, seed: int = 0) -> list[str]:
    """A phrase per row whose nearest label is the truth on about ``1 - noise`` of the rows (seeded); the wrong ones
    are drawn from the phrases nearest the boundary, so a low confidence says a likely mistake."""
    pool = [f"phrase {j}" for j in range(POOL)]
    margin = margins(pool, [LABELS[True], LABELS[False]], dim)
    near = {side: sorted((abs(m), p) for m, p in zip(margin, pool, strict=True) if bool(m > 0) is side)
            for side in (True, False)}
    rng = random.Random(seed)
    out = []
    for label in truth:
        wrong = rng.random() < noise
        side = near[(not label) if wrong else label]
        out.append(side[rng.randrange(len(side) // 4 if wrong else len(side))][1])
    return out
