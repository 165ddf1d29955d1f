"""Scored words and pruning: the pure part of compression (no model, no device, no I/O).

A scorer turns a text into *words* (the units that are kept or dropped) with an importance score each.
Pruning is then a pure function ``(scored words, γ) -> compressed text``, so every ratio of a record comes
from one scoring pass.

Two kinds of scored text exist:

* :class:`ScoredText` (``exact`` mode and the ``selfinfo`` / ``random`` / ``truncation`` scorers): words are
  character spans of the original text. :func:`prune_exact` keeps the highest-scoring words under **one
  threshold per text**, chosen so that the kept words' share of *target-model* tokens (``costs``) is as close
  to γ as the words allow. Newlines of the original text are kept, so the compressed CoT keeps its lines.
* :class:`CompatScored` (``compat`` mode): the exact state ``llmlingua.PromptCompressor.compress_prompt``
  works on -- chunks of words with probabilities and GPT-3.5 (tiktoken cl100k) token counts. :func:`prune_compat`
  repeats its per-chunk percentile threshold, ``drop_consecutive`` and detokenisation word for word.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

# Scripts written without spaces: every character is its own word.
_CJK = (
    "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af\u0e00-\u0e7f\uff00-\uffef\u3000-\u303f"
)
WORD_RE = re.compile(rf"[{_CJK}]|[^\W{_CJK}]+(?:[.,'’][^\W{_CJK}]+)*|[^\w\s]")
"""Word segmentation of the tokenizer-independent scorers: runs of letters/digits (``2.5``, ``1,000`` and
``don't`` stay whole), each punctuation mark, and each character of scripts written without spaces."""


@dataclass
class ScoredText:
    """Words of one text as character spans, with scores.

    Attributes:
        text: the original text.
        starts: character offset where each word starts (int64, increasing).
        ends: character offset where each word ends (exclusive).
        scores: importance of each word (higher = keep first); ``+inf`` = always kept.
        force_keys: for ``drop_consecutive``: index of the force token a word equals, else -1.
        drop_consecutive: collapse runs of the same force token in the output (``Step Step`` -> ``Step``).
        costs: target-model tokens of each word (set by :func:`assign_costs`); ``None`` counts 1 per word.
    """

    text: str
    starts: np.ndarray
    ends: np.ndarray
    scores: np.ndarray
    force_keys: np.ndarray | None = None
    drop_consecutive: bool = False
    costs: np.ndarray | None = None
    _gap_nl: np.ndarray | None = field(default=None, repr=False, compare=False)

    def __len__(self) -> int:
        return len(self.starts)

    @property
    def words(self) -> list[str]:
        return [self.text[s:e] for s, e in zip(self.starts.tolist(), self.ends.tolist(), strict=True)]


@dataclass
class CompatChunk:
    """One chunk of ``llmlingua``'s LLMLingua-2 path after its model pass and token-to-word merge.

    Attributes:
        text: the chunk's text (what llmlingua returns for γ = 1).
        words: the merged words as llmlingua builds them (XLM-R words keep their leading ``▁``).
        probs: word probabilities (float32 values; 1.0 for forced words and digits).
        python_float: words whose probability llmlingua holds as a Python float (every token forced); an
            array holding one is float64 in ``np.percentile``, else float32 -- this changes the threshold.
        oai_tokens: tiktoken cl100k tokens of each word (llmlingua's percentile weights).
        is_force: words that are in ``force_tokens`` (as strings, ``▁`` included).
    """

    text: str
    words: np.ndarray
    probs: np.ndarray
    python_float: np.ndarray
    oai_tokens: np.ndarray
    is_force: np.ndarray


@dataclass
class CompatScored:
    """All chunks of one text plus what llmlingua needs to turn kept words back into a string."""

    chunks: list[CompatChunk]
    detokenize: Callable[[list[str]], str]
    drop_consecutive: bool = False
    text: str = ""
    costs: np.ndarray | None = field(default=None, repr=False)  # unused; keeps the interface uniform


Scored = ScoredText | CompatScored


def check_ratio_value(ratio: float) -> float:
    from tokenskip.data.prompts import check_ratio

    return check_ratio(ratio)


def prune(scored: Scored, ratio: float) -> str:
    """Compress one scored text to ratio γ (share of tokens kept, in (0, 1])."""
    ratio = check_ratio_value(ratio)
    if isinstance(scored, CompatScored):
        return prune_compat(scored, ratio)
    return prune_exact(scored, ratio)


# --------------------------------------------------------------------------------------------- exact


def closest_count(cum: np.ndarray, targets: np.ndarray, k_min: int) -> np.ndarray:
    """Number of words ``k`` whose cumulative cost ``cum[k]`` (``cum[0] = 0``) is closest to each target.

    Ties and runs of equal cost go to fewer words; the result is at least ``k_min``.
    """
    n = len(cum) - 1
    t = np.asarray(targets, dtype=np.float64)
    if n == 0:
        return np.zeros(t.shape, dtype=np.int64)
    j = np.clip(np.searchsorted(cum, t, side="left"), 1, n)
    k = np.where(np.abs(cum[j - 1] - t) <= np.abs(cum[j] - t), j - 1, j)
    k = np.searchsorted(cum, cum[k], side="left")  # the fewest words with that cost
    return np.clip(k, min(k_min, n), n)


def select_words(scores: np.ndarray, costs: np.ndarray, ratio: float) -> np.ndarray:
    """Boolean keep-mask: the best words (by score, then position) whose cost share is closest to γ.

    Words scored ``+inf`` are always kept; at least one word is kept from a non-empty text.
    """
    n = len(scores)
    keep = np.zeros(n, dtype=bool)
    if n == 0:
        return keep
    order = np.lexsort((np.arange(n), -scores))
    cum = np.concatenate([[0.0], np.cumsum(costs[order], dtype=np.float64)])
    if cum[-1] <= 0:
        keep[:] = True
        return keep
    k_min = max(int(np.isposinf(scores).sum()), 1)
    k = int(closest_count(cum, np.array([ratio * cum[-1]]), k_min)[0])
    keep[order[:k]] = True
    return keep


def protect_words(
    text: str,
    starts: np.ndarray,
    ends: np.ndarray,
    scores: np.ndarray,
    force_tokens: Sequence[str] = (),
    keep_digits: bool = False,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Words that are always kept: scores set to ``+inf`` for every word equal to a force token and, with
    ``keep_digits``, every word containing an ASCII digit (llmlingua's ``force_reserve_digit``).

    Returns the new scores and each word's force-token index (-1 for other words; None without force
    tokens), which ``drop_consecutive`` needs.
    """
    forced = np.zeros(len(starts), dtype=bool)
    if keep_digits and len(starts):
        code = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
        prefix = np.concatenate([[0], np.cumsum((code >= 48) & (code <= 57))])
        forced |= prefix[ends] - prefix[starts] > 0
    force_keys = None
    if force_tokens:
        index = {t: i for i, t in enumerate(force_tokens)}
        bodies = [text[a:b] for a, b in zip(starts.tolist(), ends.tolist(), strict=True)]
        force_keys = np.array([index.get(w, -1) for w in bodies], dtype=np.int64)
        forced |= force_keys >= 0
    return np.where(forced, np.inf, scores), force_keys


def _collapse_consecutive(keep: np.ndarray, force_keys: np.ndarray) -> np.ndarray:
    """Drop a kept force word that repeats the kept word before it (llmlingua's ``drop_consecutive``)."""
    idx = np.flatnonzero(keep)
    if len(idx) < 2:
        return keep
    keys = force_keys[idx]
    dup = np.zeros(len(idx), dtype=bool)
    dup[1:] = (keys[1:] >= 0) & (keys[1:] == keys[:-1])
    out = keep.copy()
    out[idx[dup]] = False
    return out


def gap_newlines(text: str, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Line breaks in the gap before each word (before word 0: from the start of the text), plus a 0."""
    if "\n" not in text:
        return np.zeros(len(starts) + 1, dtype=np.int64)
    is_nl = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32) == 10
    nl_prefix = np.concatenate([[0], np.cumsum(is_nl)])
    prev_end = np.minimum(np.concatenate([[0], ends[:-1]]), starts)
    return np.append(nl_prefix[starts] - nl_prefix[prev_end], 0)


def _ascii_alnum(c: str) -> bool:
    return c.isascii() and c.isalnum()


def join_words(
    text: str, starts: np.ndarray, ends: np.ndarray, keep: np.ndarray, gap_nl: np.ndarray | None = None
) -> str:
    """Rebuild text from the kept word spans.

    Between two kept words goes the original whitespace before the second one; where dropped words in
    between contained line breaks, the largest line break (``\\n`` or ``\\n\\n`` ...) is kept instead, so
    the compressed CoT keeps its line structure. Where a dropped word was all that separated two kept
    words that would otherwise run together (``84/2`` without ``/``), a space goes between them.
    """
    kept = np.flatnonzero(keep)
    if len(kept) == 0:
        return ""
    if gap_nl is None:
        gap_nl = gap_newlines(text, starts, ends)
    s = starts.tolist()
    e = ends.tolist()
    k = kept.tolist()
    parts = [text[s[k[0]] : e[k[0]]]]
    # for kept word j >= 1: the largest line break among gaps of words kept[j-1]+1 .. kept[j]
    region_nl = np.maximum.reduceat(gap_nl, kept + 1)[:-1].tolist() if gap_nl.any() else [0] * (len(k) - 1)
    for prev, i, nl in zip(k[:-1], k[1:], region_nl, strict=True):
        gap = text[e[i - 1] : s[i]]
        if nl and gap.count("\n") < nl:
            gap = "\n" * nl
        elif not gap and i - prev > 1 and _ascii_alnum(text[e[prev] - 1]) and _ascii_alnum(text[s[i]]):
            gap = " "  # "84/2" without "/" is "84 2", not the number 842
        parts.append(gap)
        parts.append(text[s[i] : e[i]])
    return "".join(parts)


def prune_exact(scored: ScoredText, ratio: float) -> str:
    """Keep the words whose estimated target-token share is closest to γ under one threshold (no tokenizer:
    ``costs``, or one token per word); see :func:`select_words`."""
    if len(scored) == 0:
        return ""
    if ratio >= 1.0:
        return render(scored, np.ones(len(scored), dtype=bool))
    costs = scored.costs if scored.costs is not None else np.ones(len(scored), dtype=np.int64)
    return render(scored, select_words(np.asarray(scored.scores, dtype=np.float64), costs, ratio))


def render(scored: ScoredText, keep: np.ndarray) -> str:
    """The text of the kept words (``drop_consecutive`` applied), see :func:`join_words`."""
    if scored.drop_consecutive and scored.force_keys is not None:
        keep = _collapse_consecutive(keep, scored.force_keys)
    if scored._gap_nl is None:
        scored._gap_nl = gap_newlines(scored.text, scored.starts, scored.ends)
    return join_words(scored.text, scored.starts, scored.ends, keep, scored._gap_nl)


# -------------------------------------------------------------------------------------------- compat


def _percentile(values: np.ndarray, python_float: np.ndarray, q: int) -> float:
    # np.percentile over llmlingua's Python list: float64 if any element is a Python float, else float32
    dtype = np.float64 if python_float.any() else np.float32
    return float(np.percentile(values.astype(dtype), q))


def prune_compat_chunk(chunk: CompatChunk, reduce_rate: float, drop_consecutive: bool) -> list[str]:
    """Kept words of one chunk, as ``PromptCompressor.__compress`` selects them."""
    probs = chunk.probs.astype(np.float64)
    pyf = chunk.python_float
    if len(probs) == 0:
        return []
    if drop_consecutive:
        threshold = _percentile(probs, pyf, int(100 * reduce_rate))
        force_pos = np.flatnonzero(chunk.is_force)
        if len(force_pos) > 1:
            exceed = (~chunk.is_force) & (probs > threshold)
            cum = np.cumsum(exceed)
            between = cum[force_pos[1:]] - cum[force_pos[:-1]] > 0
            same = chunk.words[force_pos[1:]] == chunk.words[force_pos[:-1]]
            drop = force_pos[1:][~between & same]
            if len(drop):
                probs = probs.copy()
                probs[drop] = 0.0
                pyf = pyf.copy()
                pyf[drop] = True
    counts = chunk.oai_tokens
    token_probs = np.repeat(probs, counts)
    if len(token_probs) == 0:
        return []
    threshold = _percentile(token_probs, np.repeat(pyf, counts), int(100 * reduce_rate + 1))
    keep = (probs > threshold) | ((threshold == 1.0) & (probs == threshold))
    if drop_consecutive:
        idx = np.flatnonzero(keep)
        if len(idx) > 1:
            words = chunk.words[idx]
            dup = np.zeros(len(idx), dtype=bool)
            dup[1:] = chunk.is_force[idx[1:]] & (words[1:] == words[:-1])
            keep[idx[dup]] = False
    return chunk.words[keep].tolist()


def prune_compat(scored: CompatScored, ratio: float) -> str:
    """``compress_prompt(text, rate=γ, ...)["compressed_prompt"]``, reproduced from the scored chunks."""
    return prune_compat_many(scored, [ratio])[0]


def prune_compat_many(scored: CompatScored, ratios: Sequence[float]) -> list[str]:
    """:func:`prune_compat` for several ratios: without ``drop_consecutive`` each chunk's thresholds for
    every ratio come from one ``np.percentile`` call (the same values as one call per ratio)."""
    rates = [max(0.0, 1 - r) for r in ratios]
    parts: list[list[str]] = [[] for _ in ratios]
    for chunk in scored.chunks:
        if scored.drop_consecutive:
            kept = [prune_compat_chunk(chunk, rr, True) if rr > 0 else None for rr in rates]
        else:
            kept = _chunk_many(chunk, rates)
        for j, words in enumerate(kept):
            parts[j].append(chunk.text if words is None else scored.detokenize(words))
    return ["".join(p) for p in parts]


def _chunk_many(chunk: CompatChunk, rates: list[float]) -> list[list[str] | None]:
    """Kept words of one chunk per reduce rate (None: rate 0, the chunk's text as is)."""
    live = [j for j, rr in enumerate(rates) if rr > 0]
    out: list[list[str] | None] = [None] * len(rates)
    probs = chunk.probs.astype(np.float64)
    token_probs = np.repeat(probs, chunk.oai_tokens)
    if not live or len(token_probs) == 0:
        for j in live:
            out[j] = []
        return out
    dtype = np.float64 if np.repeat(chunk.python_float, chunk.oai_tokens).any() else np.float32
    qs = [int(100 * rates[j] + 1) for j in live]
    thresholds = np.percentile(token_probs.astype(dtype), qs).tolist()
    for j, threshold in zip(live, thresholds, strict=True):
        keep = (probs > threshold) | ((threshold == 1.0) & (probs == threshold))
        out[j] = chunk.words[keep].tolist()
    return out


# ------------------------------------------------------------------------------------------- helpers


def regex_words(text: str) -> tuple[np.ndarray, np.ndarray]:
    """Character spans of :data:`WORD_RE` words."""
    spans = [m.span() for m in WORD_RE.finditer(text)]
    if not spans:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    arr = np.asarray(spans, dtype=np.int64)
    return arr[:, 0].copy(), arr[:, 1].copy()


def token_word_index(word_starts: np.ndarray, word_ends: np.ndarray, tok_starts: np.ndarray) -> np.ndarray:
    """For each token (by its start offset), the word containing it or, for a token in a gap, the next
    word (clipped to the last word). ``-1`` for every token when there are no words."""
    if len(word_starts) == 0:
        return np.full(len(tok_starts), -1, dtype=np.int64)
    idx = np.searchsorted(word_ends, tok_starts, side="right")
    return np.minimum(idx, len(word_starts) - 1)


def costs_from_offsets(word_starts: np.ndarray, word_ends: np.ndarray, tok_starts: np.ndarray) -> np.ndarray:
    """Target-model tokens per word: each token counts for the word it starts in (or the next word)."""
    n = len(word_starts)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    return np.bincount(token_word_index(word_starts, word_ends, tok_starts), minlength=n).astype(np.int64)
