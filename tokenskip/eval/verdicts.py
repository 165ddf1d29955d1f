"""Does a method follow γ, and is it worth its tokens? The questions of TokenSkip's Table 1, answered from bench rows.

Pure functions over the summary rows of :func:`tokenskip.eval.report.load_run` (one row per method, with
``accuracy``/``accuracy_low``/``accuracy_high``, ``mean_cot_tokens``, ``requested_ratio``, ``act_ratio``
and ``speedup_batch1``). A *family* is the methods of one name at several γ (``tokenskip@1.0`` ...
``tokenskip@0.5``). For every family with at least two γ:

* whether ActRatio decreases strictly as γ decreases, and the mean |ActRatio − γ|;
* each γ's accuracy against the ``original`` row's 95% interval (below / inside / above);
* the batch-1 speedup against ``original`` at the family's smallest γ;
* every other method at about the same CoT tokens (within ``tolerance``, relative): which has the higher
  accuracy, and whether the two 95% intervals are apart (a difference the 200 questions can show).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

TOLERANCE = 0.15  # "about the same CoT tokens": within 15% of each other


def family(method: str) -> str:
    """``tokenskip@0.5`` -> ``tokenskip``; a name without ``@`` is its own family."""
    return method.split("@", 1)[0]


def position(acc: float, low: float | None, high: float | None) -> str:
    """Where an accuracy lies against an interval: below, inside or above."""
    if low is None or high is None:
        return "unknown"
    return "below" if acc < low else "above" if acc > high else "inside"


def _apart(a: dict[str, Any], b: dict[str, Any]) -> bool | None:
    if None in (a.get("accuracy_low"), a.get("accuracy_high"), b.get("accuracy_low"), b.get("accuracy_high")):
        return None
    return a["accuracy_low"] > b["accuracy_high"] or b["accuracy_low"] > a["accuracy_high"]


def matched(
    row: dict[str, Any], others: Sequence[dict[str, Any]], tolerance: float = TOLERANCE
) -> list[dict]:
    """The other methods whose mean CoT tokens lie within ``tolerance`` of ``row``'s, each with the accuracy
    difference (row minus other, in points) and whether the intervals are apart."""
    t = row.get("mean_cot_tokens")
    if not t:
        return []
    out = []
    for o in others:
        u = o.get("mean_cot_tokens")
        if o is row or not u or family(o["method"]) == family(row["method"]) or o["method"] == "original":
            continue
        if abs(u - t) <= tolerance * t:
            out.append({
                "method": o["method"], "run": o.get("run") if o.get("run") != row.get("run") else None, "mean_cot_tokens": u, "accuracy": o["accuracy"],
                "difference_points": 100 * (row["accuracy"] - o["accuracy"]), "intervals_apart": _apart(row, o),
            })  # fmt: skip
    return out


def family_verdict(
    rows: Sequence[dict[str, Any]], original: dict[str, Any] | None, others: Sequence[dict[str, Any]] = ()
) -> dict[str, Any]:
    """The verdicts for one family's rows (at least two with a requested γ)."""
    at = sorted(
        (r for r in rows if r.get("requested_ratio") is not None), key=lambda r: -r["requested_ratio"]
    )
    acts = [r.get("act_ratio") for r in at]
    known = [a for a in acts if a is not None]
    strictly = len(known) == len(acts) and all(x > y for x, y in zip(known, known[1:], strict=False))
    gaps = [abs(r["act_ratio"] - r["requested_ratio"]) for r in at if r.get("act_ratio") is not None]
    low, high = (original or {}).get("accuracy_low"), (original or {}).get("accuracy_high")
    smallest = at[-1] if at else None
    return {
        "family": family(at[0]["method"]) if at else None,
        "ratios": [r["requested_ratio"] for r in at],
        "act_ratios": acts,
        "act_ratio_strictly_decreasing": strictly,
        "mean_abs_act_ratio_gap": sum(gaps) / len(gaps) if gaps else None,
        "accuracy_vs_original": {
            r["method"]: {"accuracy": r["accuracy"], "position": position(r["accuracy"], low, high)}
            for r in at
        },
        "speedup_batch1_at_smallest": (smallest or {}).get("speedup_batch1"),
        "smallest_ratio": (smallest or {}).get("requested_ratio"),
        "matched_tokens": {r["method"]: matched(r, others) for r in at},
    }


def verdicts(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One verdict per family of ≥ 2 γ in ``rows``; ``original`` is the first row named so (its run's
    interval and latency are the reference)."""
    original = next((r for r in rows if r["method"] == "original"), None)
    families: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        if r.get("requested_ratio") is not None:
            families.setdefault(family(r["method"]), []).append(r)
    return [family_verdict(fam, original, rows) for fam in families.values() if len(fam) >= 2]


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def verdict_markdown(verdict: dict[str, Any], original: dict[str, Any] | None) -> str:
    """The verdict as sentences, numbers as measured."""
    name = verdict["family"]
    acts = ", ".join(
        f"{g:g}: {a:.2f}" if a is not None else f"{g:g}: -"
        for g, a in zip(verdict["ratios"], verdict["act_ratios"], strict=True)
    )
    gap = verdict["mean_abs_act_ratio_gap"]
    lines = [
        f"**{name}**: ActRatio per γ {acts}; "
        f"{'decreases strictly' if verdict['act_ratio_strictly_decreasing'] else 'does NOT decrease strictly'} "
        f"with γ; mean |ActRatio − γ| = {'-' if gap is None else f'{gap:.3f}'}.",
    ]
    if original:
        orig = f"original {_pct(original['accuracy'])} ({_pct(original.get('accuracy_low'))}-{_pct(original.get('accuracy_high'))})"
        acc = "; ".join(
            f"{m} {_pct(v['accuracy'])} {v['position']}" for m, v in verdict["accuracy_vs_original"].items()
        )
        lines.append(f"Accuracy against the {orig} interval: {acc}.")
    sp = verdict["speedup_batch1_at_smallest"]
    lines.append(
        f"Batch-1 speedup at γ = {verdict['smallest_ratio']:g}: {'-' if sp is None else f'{sp:.2f}×'}."
    )
    for m, found in verdict["matched_tokens"].items():
        if not found:
            continue
        parts = [
            f"{o['method']}{' (' + str(o['run']) + ')' if o.get('run') else ''} {o['mean_cot_tokens']:.0f} tok "
            f"{_pct(o['accuracy'])}: {o['difference_points']:+.1f} pts"
            f"{', intervals apart' if o['intervals_apart'] else ', intervals overlap'}"
            for o in found
        ]
        lines.append(f"At about the same CoT tokens as {m}: " + "; ".join(parts) + ".")
    return "\n".join(f"- {line}" for line in lines)
