"""Token-importance scorers and pruning: compress CoTs to ratios γ from one scoring pass.

* :class:`Scorer` -- a batch of texts in, scored words out (``llmlingua2``, ``selfinfo``, ``random``,
  ``truncation``, ``length``, ...), registered by name in :data:`SCORERS`; :func:`make_scorer` builds one.
* :func:`prune` -- the pure function ``(scored words, γ) -> compressed text``; :func:`calibrate` prunes
  many texts to many ratios against the target tokenizer's real counts.
* ``tokenskip compress`` (:func:`tokenskip.verbs.compress.compress`) -- the dataset verb; it builds on
  :mod:`~tokenskip.compressors.compress` (ratios, scorers by name), blocks, rows and the ratio files.
"""

from tokenskip.compressors.base import Scorer, ScorerOptions
from tokenskip.compressors.calibrate import calibrate, prune_calibrated
from tokenskip.compressors.prune import CompatScored, ScoredText, prune
from tokenskip.compressors.registry import SCORERS, make_scorer, scorer_class

__all__ = [
    "SCORERS",
    "CompatScored",
    "Scorer",
    "ScorerOptions",
    "ScoredText",
    "calibrate",
    "make_scorer",
    "prune",
    "prune_calibrated",
    "scorer_class",
]
