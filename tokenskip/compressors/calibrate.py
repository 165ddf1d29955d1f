"""Exact-mode pruning of many texts to many ratios, measured with the target tokenizer (pure logic).

Per text, the words are sorted by score once and their target-model token costs summed cumulatively once
(:class:`Plan`); the cost-optimal number of kept words for every γ is then one ``searchsorted``. Joining the
kept words can tokenise differently from the words alone (``48/2`` without ``/`` is written ``48 2``; a
``<<`` token is split when one ``<`` goes), so every (text, γ) is rendered and counted with the target
tokenizer -- the counts are what ``tokenskip compress`` writes, so this costs nothing extra. Where a count
differs from the cost estimate, the estimate is corrected by the measured offset and neighbouring word
counts are tried until γ x original tokens is bracketed (at most ``max_rounds`` counts per pair; most
pairs need one). The result: the kept share of real target tokens is as close to γ as the words allow.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from tokenskip.compressors.prune import ScoredText, closest_count, render


@dataclass
class Plan:
    """One text's words in keep order with their cumulative cost.

    Attributes:
        order: word indices, best first (score descending, then position).
        cum: ``cum[k]`` = estimated target tokens of the best ``k`` words (``cum[0] = 0``).
        k_min: fewest words ever kept (every ``+inf`` word, and at least one).
    """

    order: np.ndarray
    cum: np.ndarray
    k_min: int

    @property
    def n(self) -> int:
        return len(self.order)

    @property
    def total(self) -> float:
        return float(self.cum[-1])


def make_plan(scored: ScoredText, total_tokens: float | None = None) -> Plan:
    """Sort the words once; costs default to ``total_tokens / words`` each when the text has none."""
    n = len(scored)
    scores = np.asarray(scored.scores, dtype=np.float64)
    order = np.lexsort((np.arange(n), -scores))
    if scored.costs is not None:
        costs = np.asarray(scored.costs, dtype=np.float64)
    else:
        costs = np.full(n, (total_tokens or n) / max(n, 1))
    cum = np.concatenate([[0.0], np.cumsum(costs[order])])
    k_min = min(n, max(int(np.isposinf(scores).sum()), 1))
    return Plan(order, cum, k_min)


def nearest_k(plan: Plan, targets: np.ndarray) -> np.ndarray:
    """Word count whose estimated cost is closest to each target (ties and equal costs: fewer words)."""
    return closest_count(plan.cum, targets, plan.k_min)


def keep_mask(plan: Plan, k: int) -> np.ndarray:
    keep = np.zeros(plan.n, dtype=bool)
    keep[plan.order[:k]] = True
    return keep


def calibrate(
    scored: Sequence[ScoredText],
    ratios: Sequence[float],
    count_tokens: Callable[[list[str]], list[int]],
    original_tokens: Sequence[int] | None = None,
    max_rounds: int = 4,
    tolerance: float = 0.001,
) -> tuple[list[list[str]], list[list[int]]]:
    """Prune every text to every ratio; returns ``(texts, their target-token counts)`` as ``[text][ratio]``.

    ``original_tokens`` are the texts' target-token counts (default: the sum of each text's ``costs`` when
    set, else counted). A pair is done when its count is within half a token of ``γ x original`` or within
    ``tolerance x original`` (long CoTs: no more counting for a few tokens in thousands), when the target
    is bracketed, or after ``max_rounds`` counts. A text without words gives ``""`` at every ratio.
    """
    m = len(ratios)
    if original_tokens is None:
        need = [i for i, s in enumerate(scored) if s.costs is None or len(s) == 0]
        counted = count_tokens([scored[i].text for i in need]) if need else []
        original = [float(np.sum(s.costs)) if s.costs is not None else 0.0 for s in scored]
        for i, c in zip(need, counted, strict=True):
            original[i] = float(c)
    else:
        original = [float(x) for x in original_tokens]
    plans = [make_plan(s, original[i]) for i, s in enumerate(scored)]
    out = [[""] * m for _ in scored]
    counts = [[0] * m for _ in scored]
    # per (text, ratio): the word counts measured so far -> real token count
    measured: dict[tuple[int, int], dict[int, int]] = {}
    targets: dict[tuple[int, int], float] = {}
    proposals: dict[tuple[int, int], int] = {}
    for i, (s, p) in enumerate(zip(scored, plans, strict=True)):
        if len(s) == 0:
            continue
        tgt = np.asarray(ratios, dtype=np.float64) * p.total
        ks = nearest_k(p, tgt)
        for j in range(m):
            targets[i, j] = float(ratios[j]) * original[i]
            proposals[i, j] = p.n if ratios[j] >= 1.0 else int(ks[j])
            measured[i, j] = {}
    renders: dict[tuple[int, int], str] = {}
    for _ in range(max_rounds):
        if not proposals:
            break
        keys = list(proposals)
        texts = []
        for i, j in keys:
            k = proposals[i, j]
            if (i, k) not in renders:
                renders[i, k] = render(scored[i], keep_mask(plans[i], k))
            texts.append(renders[i, k])
        for (i, j), c in zip(keys, count_tokens(texts), strict=True):
            measured[i, j][proposals[i, j]] = int(c)
        proposals = {
            key: k
            for key in keys
            if (k := _next_k(plans[key[0]], measured[key], targets[key], tolerance * original[key[0]]))
        }
    for (i, j), seen in measured.items():
        k = _best(seen, targets[i, j])
        out[i][j] = renders[i, k]
        counts[i][j] = seen[k]
    return out, counts


def _best(seen: dict[int, int], target: float) -> int:
    """The measured word count closest to the target (ties: more words)."""
    return max(seen, key=lambda k: (-abs(seen[k] - target), k))


def _next_k(plan: Plan, seen: dict[int, int], target: float, slack: float = 0.0) -> int | None:
    """The next word count to measure, or None when no other count can be closer (or ``slack`` is met)."""
    k = _best(seen, target)
    c = seen[k]
    if abs(c - target) <= max(0.5, slack) or k >= plan.n and c <= target or k <= plan.k_min and c >= target:
        return None
    if len(seen) == 1 and c == plan.cum[k]:
        return None  # the render tokenised as estimated: the cost-optimal count is the best one
    step = 1 if c < target else -1
    if k + step in seen and (seen[k + step] - target) * (c - target) <= 0:
        return None  # bracketed: k and its neighbour lie on both sides of the target
    if len(seen) == 1:  # the estimate corrected by the measured offset
        guess = int(nearest_k(plan, np.array([target - (c - plan.cum[k])]))[0])
    else:  # secant through the two measured counts nearest the target
        (k1, c1), (k2, c2) = sorted(seen.items(), key=lambda kc: abs(kc[1] - target))[:2]
        slope = (c1 - c2) / (k1 - k2) if c1 != c2 else 0.0
        guess = int(round(k1 + (target - c1) / slope)) if slope > 0 else k + step
    guess = min(max(guess, plan.k_min), plan.n)
    if guess not in seen and (guess - k) * step > 0:
        return guess
    nxt = k + step
    if nxt in seen or not plan.k_min <= nxt <= plan.n:
        return None
    return nxt


def prune_calibrated(
    scored: list[ScoredText], ratios: list[float], count_tokens: Callable[[list[str]], list[int]]
) -> list[list[str]]:
    """:func:`calibrate`'s texts only: ``out[i][j]`` is ``scored[i]`` pruned to ``ratios[j]``."""
    return calibrate(scored, ratios, count_tokens)[0]
