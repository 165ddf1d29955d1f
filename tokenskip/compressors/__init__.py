"""Token-importance scorers and pruning: compress CoTs to ratios γ from one scoring pass.

* :class:`Scorer` -- a batch of texts in, scored words out (``llmlingua2``, ``selfinfo``, ``random``,
  ``truncation``); :func:`make_scorer` builds one by name.
* :func:`prune` -- the pure function ``(scored words, γ) -> compressed text``; :func:`calibrate` prunes
  many texts to many ratios against the target tokenizer's real counts.
* ``tokenskip compress`` (:func:`tokenskip.compressors.compress.compress`) -- the dataset workflow.
"""

from tokenskip.compressors.base import Scorer
from tokenskip.compressors.calibrate import calibrate, prune_calibrated
from tokenskip.compressors.compress import SCORERS, make_scorer
from tokenskip.compressors.prune import CompatScored, ScoredText, prune

__all__ = [
    "SCORERS",
    "CompatScored",
    "Scorer",
    "ScoredText",
    "calibrate",
    "make_scorer",
    "prune",
    "prune_calibrated",
]
