"""The scorer interface and what every model-backed scorer shares: devices, dtypes, length-bucketed batches.

A :class:`Scorer` takes a batch of texts and returns one scored text per input (see
:mod:`tokenskip.compressors.prune`). Model-backed scorers encode every text once, sort the model windows by
length and pad each batch only to its own longest window (``max_batch_tokens`` bounds ``rows x longest``):
one long CoT never pads the whole batch.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from tokenskip.compressors.prune import Scored


class Scorer(ABC):
    """A batch of texts in, per-word importance scores out.

    Subclasses set ``name`` and implement :meth:`score`. ``device`` / ``dtype`` are resolved at construction
    (CUDA with bf16/fp16 when present, CPU fp32 otherwise).
    """

    name: str = "scorer"
    device: str = "cpu"

    @abstractmethod
    def score(self, texts: Sequence[str]) -> list[Scored]:
        """Score each text; the i-th result belongs to ``texts[i]``."""

    def describe(self) -> dict[str, Any]:
        """What produced the scores (written into ``summary.json``)."""
        return {"scorer": self.name, "device": self.device}


def length_batches(lengths: Sequence[int], max_batch_tokens: int, max_batch_size: int) -> list[np.ndarray]:
    """Group sequence indices into batches of similar length, longest first.

    A batch holds at most ``max_batch_size`` rows and at most ``max_batch_tokens`` padded tokens
    (rows x its longest row); a single row longer than the budget gets a batch of its own.
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    order = np.argsort(-lengths, kind="stable")
    batches: list[np.ndarray] = []
    start = 0
    n = len(order)
    while start < n:
        longest = max(int(lengths[order[start]]), 1)
        rows = max(1, min(max_batch_size, max_batch_tokens // longest))
        batches.append(order[start : start + rows])
        start += rows
    return batches


def pad_batch(seqs: Sequence[np.ndarray], pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Right-pad id sequences to the batch's longest; returns ``(ids, attention_mask)`` as int64 arrays."""
    longest = max((len(s) for s in seqs), default=0)
    ids = np.full((len(seqs), longest), pad_id, dtype=np.int64)
    mask = np.zeros((len(seqs), longest), dtype=np.int64)
    for row, s in enumerate(seqs):
        ids[row, : len(s)] = s
        mask[row, : len(s)] = 1
    return ids, mask


def run_batched(
    seqs: Sequence[np.ndarray],
    forward: Callable[[np.ndarray, np.ndarray], np.ndarray],
    pad_id: int,
    max_batch_tokens: int,
    max_batch_size: int,
    masks: Sequence[np.ndarray] | None = None,
) -> list[np.ndarray]:
    """Apply ``forward(ids, mask) -> per-token values [rows, longest]`` over length-bucketed batches.

    Returns each sequence's values (unpadded), in input order. ``masks`` optionally replaces the default
    all-ones attention mask of a sequence (positions with 0 are padding inside the sequence).
    """
    out: list[np.ndarray | None] = [None] * len(seqs)
    for batch in length_batches([len(s) for s in seqs], max_batch_tokens, max_batch_size):
        ids, mask = pad_batch([seqs[i] for i in batch], pad_id)
        if masks is not None:
            for row, i in enumerate(batch):
                mask[row, : len(masks[i])] = masks[i]
        values = forward(ids, mask)
        for row, i in enumerate(batch):
            out[i] = values[row, : len(seqs[i])]
    return out  # type: ignore[return-value]


def resolve_device_dtype(device: str, dtype: str) -> tuple[str, Any]:
    """``auto`` = CUDA (bf16, or fp16 where bf16 is unsupported) when present, else CPU fp32."""
    from tokenskip.models import resolve_device, resolve_dtype

    dev = resolve_device(device)
    return dev, resolve_dtype(dtype, dev)


def first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0][:300] if text else type(e).__name__
