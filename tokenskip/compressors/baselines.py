"""Scorers without a model: :class:`WordScorer` (their base) and the baselines of the benchmark harness,
``random`` word scores and ``truncation`` (keep the first γ)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import numpy as np

from tokenskip.compressors.base import Scorer, ScorerOptions
from tokenskip.compressors.prune import ScoredText, regex_words


class WordScorer(Scorer):
    """A scorer without a model: the text's words (:func:`~tokenskip.compressors.prune.regex_words`) get
    the scores :meth:`word_scores` gives them from their character spans."""

    def word_scores(self, text: str, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def score(self, texts: Sequence[str]) -> list[ScoredText]:
        out = []
        for text in texts:
            starts, ends = regex_words(text)
            out.append(ScoredText(text, starts, ends, self.word_scores(text, starts, ends)))
        return out


class RandomScorer(WordScorer):
    """Uniform random word scores, reproducible per text (seeded by ``seed`` and the text itself)."""

    name = "random"
    options = frozenset({"seed"})

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed

    @classmethod
    def build(cls, options: ScorerOptions) -> RandomScorer:
        return cls(seed=options.seed)

    def describe(self) -> dict[str, Any]:
        return {"scorer": self.name, "seed": self.seed, "device": self.device}

    def word_scores(self, text: str, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
        digest = hashlib.sha256(f"{self.seed}\0{text}".encode()).digest()
        return np.random.default_rng(int.from_bytes(digest[:8], "little")).random(len(starts))


class TruncationScorer(WordScorer):
    """Earlier words score higher, so pruning keeps the first γ of the (target-model) tokens."""

    name = "truncation"

    def word_scores(self, text: str, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
        return -np.arange(len(starts), dtype=np.float64)
