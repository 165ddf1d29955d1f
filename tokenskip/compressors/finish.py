"""The host side of a block of CoTs: prune scored CoTs to every ratio and count their target-model tokens.

Pure of devices and files: :class:`~tokenskip.compressors.base.Scorer` ``.finish`` calls
:func:`finish_block` (the default), ``tokenskip compress`` writes the :class:`BlockOutput`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from tokenskip.compressors.calibrate import calibrate
from tokenskip.compressors.prune import CompatScored, ScoredText, costs_from_offsets, prune, prune_compat_many


@dataclass
class BlockOutput:
    """A block of CoTs compressed to every ratio: ``texts[i][j]`` is CoT ``i`` at ratio ``j``, with its
    target-model token count ``compressed_tokens[i][j]``; ``original_tokens[i]`` counts CoT ``i``."""

    texts: list[list[str]]
    original_tokens: list[int]
    compressed_tokens: list[list[int]]


def count_tokens(tokenizer: Any, texts: Sequence[str]) -> list[int]:
    """Target-model tokens of each text (no special tokens)."""
    if not texts:
        return []
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        encode = getattr(backend, "encode_batch_fast", backend.encode_batch)  # no offsets: ~2x faster
        return [len(e.ids) for e in encode(list(texts), add_special_tokens=False)]
    return [len(ids) for ids in tokenizer(list(texts), add_special_tokens=False)["input_ids"]]


def assign_costs(tokenizer: Any, scored: Sequence[Any]) -> list[int | None]:
    """Set each exact-mode scored text's per-word cost in target-model tokens (in place): one tokenizer
    call per text, each token counting for the word it starts in. Returns each text's token count (None for
    compat-mode results, which need no costs)."""
    idx = [i for i, s in enumerate(scored) if isinstance(s, ScoredText)]
    totals: list[int | None] = [None] * len(scored)
    if not idx:
        return totals
    texts = [scored[i].text for i in idx]
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        offsets = [e.offsets for e in backend.encode_batch(texts, add_special_tokens=False)]
    else:
        offsets = tokenizer(texts, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    for i, offs in zip(idx, offsets, strict=True):
        s = scored[i]
        starts = np.asarray(offs, dtype=np.int64).reshape(-1, 2)[:, 0]
        s.costs = costs_from_offsets(s.starts, s.ends, starts)
        totals[i] = len(starts)
    return totals


def counted(texts: list[list[str]], tokenizer: Any, cots: Sequence[str]) -> BlockOutput:
    """A :class:`BlockOutput` of CoTs already pruned to every ratio (``texts[i][j]``): one tokenizer call
    counts every result, one more the original CoTs."""
    m = len(texts[0]) if texts else 0
    flat = count_tokens(tokenizer, [t for row in texts for t in row])
    counts = [flat[i * m : (i + 1) * m] for i in range(len(texts))]
    return BlockOutput(texts, count_tokens(tokenizer, list(cots)), counts)


def finish_block(
    scored: Sequence[Any], tokenizer: Any, cots: Sequence[str], ratios: Sequence[float]
) -> BlockOutput:
    """Prune scored CoTs to every ratio and count the target tokens of the results.

    Exact-mode results (:class:`~tokenskip.compressors.prune.ScoredText`) are pruned by
    :func:`~tokenskip.compressors.calibrate.calibrate` against real target-token counts (which it returns,
    so nothing is counted twice); compat results are pruned by llmlingua's rule and counted once.
    """

    def count(texts: list[str]) -> list[int]:
        return count_tokens(tokenizer, texts)

    if scored and all(isinstance(s, ScoredText) for s in scored):
        totals = assign_costs(tokenizer, scored)
        original = [int(t) if len(s) else 0 for s, t in zip(scored, totals, strict=True)]
        empty = [i for i, s in enumerate(scored) if len(s) == 0 and cots[i]]
        for i, c in zip(empty, count([cots[i] for i in empty]), strict=True):
            original[i] = c  # text without words (whitespace only)
        texts, counts = calibrate(list(scored), list(ratios), count, original)
        return BlockOutput(texts, original, counts)
    texts = [prune_compat_many(s, ratios) if isinstance(s, CompatScored) else [prune(s, r) for r in ratios]
             for s in scored]  # fmt: skip
    return counted(texts, tokenizer, cots)


def compress_block(scorer: Any, tokenizer: Any, cots: Sequence[str], ratios: Sequence[float]) -> BlockOutput:
    """Compress a block of CoTs to every ratio: the scorer scores them once, then prunes (its ``finish``)."""
    return scorer.finish(scorer.score(list(cots)), tokenizer, cots, ratios)
