"""``length``: a toy scorer and the smallest example of one: a word's score is its length in characters.

Pruning to γ drops the shortest words first (``a``, ``of``, ``is``, ``=``) and keeps the long ones, a crude
stop-word filter with no model. ``tokenskip compress --scorer length`` prunes every CoT to each γ against the
target model's token counts, like any scorer.
"""

from __future__ import annotations

import numpy as np

from tokenskip.compressors.baselines import WordScorer


class LengthScorer(WordScorer):
    name = "length"

    def word_scores(self, text: str, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
        return (ends - starts).astype(np.float64)
