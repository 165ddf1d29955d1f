"""Baselines for the benchmark harness: ``random`` word scores and ``truncation`` (keep the first γ)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import numpy as np

from tokenskip.compressors.base import Scorer
from tokenskip.compressors.prune import ScoredText, regex_words


class RandomScorer(Scorer):
    """Uniform random word scores, reproducible per text (seeded by ``seed`` and the text itself)."""

    name = "random"

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed

    def describe(self) -> dict[str, Any]:
        return {"scorer": self.name, "seed": self.seed, "device": self.device}

    def score(self, texts: Sequence[str]) -> list[ScoredText]:
        out = []
        for text in texts:
            starts, ends = regex_words(text)
            digest = hashlib.sha256(f"{self.seed}\0{text}".encode()).digest()
            rng = np.random.default_rng(int.from_bytes(digest[:8], "little"))
            out.append(ScoredText(text, starts, ends, rng.random(len(starts))))
        return out


class TruncationScorer(Scorer):
    """Earlier words score higher, so pruning keeps the first γ of the (target-model) tokens."""

    name = "truncation"

    def score(self, texts: Sequence[str]) -> list[ScoredText]:
        out = []
        for text in texts:
            starts, ends = regex_words(text)
            out.append(ScoredText(text, starts, ends, -np.arange(len(starts), dtype=np.float64)))
        return out
