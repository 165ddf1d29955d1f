"""Compression fidelity arithmetic (pure: records in, rows, tables and figures out; no model).

The question fidelity answers: after a scorer prunes a CoT the reader model wrote (and got right) down to
γ of its tokens, can the same reader still read the answer off it? The workflow
(:mod:`tokenskip.verbs.fidelity`) feeds the reader ``question + compressed CoT + answer cue`` and grades
the few tokens it writes; this module picks the CoTs, strips the stated answer from them, and turns the
graded rows into one summary row per scorer and γ (accuracy with its 95% Wilson interval, achieved ratio).

Two controls bracket every scorer: ``full`` (the uncompressed CoT, γ = 1) and ``none`` (no CoT at all,
γ = 0: what the reader answers from the question alone).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from tokenskip.eval.metrics import _mean, accuracy_fields, format_interval

FULL, NONE = "full", "none"  # the two control "scorers"

# a line that only opens display math or introduces the stated answer ("So the answer is:", "\[")
_OPENER = re.compile(r"^\s*(\\\[|\\\(|\$\$?|[^\n]*:\s*)$")


def strip_final_answer(cot: str) -> str:
    """The CoT without the sentence that states its final answer (the last ``\\boxed{...}``).

    The line holding the last ``\\boxed`` is cut, with what follows it, and so are lines right before it
    that only open display math or end in a colon ("The final answer is:"). In a one-line CoT the cut is at
    the start of the sentence holding the box. A CoT without a box loses only trailing whitespace. The
    reasoning itself (``48 + 24 = 72``) stays: fidelity asks whether the reasoning, compressed, still leads
    to the answer, not whether the reader can copy a boxed answer.
    """
    idx = max(cot.rfind("\\boxed"), cot.rfind("\\fbox"))
    if idx < 0:
        return cot.rstrip()
    line_start = cot.rfind("\n", 0, idx) + 1
    if line_start == 0:
        ends = [m.end() for m in re.finditer(r"[.!?]\s", cot[:idx])]
        return cot[: ends[-1]].rstrip() if ends else ""
    lines = cot[:line_start].rstrip().split("\n")
    while lines and _OPENER.match(lines[-1]):
        lines.pop()
    return "\n".join(lines).rstrip()


def select_records(
    rows: Iterable[dict[str, Any]], limit: int | None = None, tags: Any = None
) -> list[dict[str, Any]]:
    """The reader's correct records whose CoT still has text once the stated answer is stripped, in input
    order (at most ``limit``), as compress input: id, question, answer, task, cot (stripped), source_cot.

    The CoT is the record's ``cot`` (else its ``output``). One that holds the think ``tags``
    (:class:`~tokenskip.compressors.thinking.ThinkTags`: a whole thinking-model output, as other tools
    write it) is cut to its thinking, as ``tokenskip generate`` records it for a thinking preset, and marked
    ``thinking: true``; the answer after the close tag is not under test (the reader writes it).
    """
    from tokenskip.compressors.thinking import split_think

    out: list[dict[str, Any]] = []
    for r in rows:
        if limit is not None and len(out) >= limit:
            break
        cot = r.get("cot") if r.get("cot") is not None else r.get("output")
        if not r.get("correct") or not isinstance(cot, str):
            continue
        part = split_think(cot, tags)
        if part is not None:
            cot = part.thinking
        stripped = strip_final_answer(cot)
        if not stripped.strip():
            continue
        row = {"id": str(r["id"]), "question": r["question"], "answer": r["answer"],
               "task": r.get("task", "gsm8k"), "cot": stripped, "source_cot": cot}  # fmt: skip
        out.append(row | ({"thinking": True} if part is not None else {}))
    return out


def parse_scorers(spec: str | Sequence[str]) -> list[tuple[str, str | None, bool]]:
    """``"selfinfo,selfinfo:qwen2.5-coder-0.5b,random,llmlingua2?"`` -> ``(scorer, checkpoint, optional)``.

    ``name:checkpoint`` picks the scorer's model; a trailing ``?`` marks a scorer that is skipped (not an
    error) when its model cannot be loaded, e.g. llmlingua2 without the weights offline
    (:func:`tokenskip.compressors.registry.parse_spec`). Repeats are dropped.
    """
    from tokenskip.compressors.registry import parse_spec
    from tokenskip.errors import UserError

    items = spec.split(",") if isinstance(spec, str) else list(spec)
    out: list[tuple[str, str | None, bool]] = []
    for item in items:
        if not item.strip():
            continue
        entry = parse_spec(item)
        if all(label(e[0], e[1]) != label(entry.name, entry.checkpoint) for e in out):
            out.append(entry)
    if not out:
        raise UserError("--scorers is empty")
    return out


def label(scorer: str, checkpoint: str | None) -> str:
    """A scorer's name in tables and file names: ``selfinfo``, ``selfinfo-qwen2.5-coder-0.5b``."""
    if not checkpoint:
        return scorer
    return f"{scorer}-{re.sub(r'[^A-Za-z0-9._-]+', '_', Path(checkpoint.rstrip('/')).name)}"


def summarize_cell(scorer: str, ratio: float, rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One table row: answer accuracy (95% Wilson interval) of the reader on ``rows`` (graded answers to
    one scorer's CoTs at one γ) and the ratio achieved: mean per CoT and token-weighted."""
    orig = [float(r["original_tokens"]) for r in rows if r.get("original_tokens") is not None]
    comp = [float(r["compressed_tokens"]) for r in rows if r.get("compressed_tokens") is not None]
    per = [float(r["achieved_ratio"]) for r in rows if r.get("achieved_ratio") is not None]
    return {
        "scorer": scorer,
        "ratio": ratio,
        "n": len(rows),
        "correct": sum(bool(r.get("correct")) for r in rows),
        **accuracy_fields([bool(r.get("correct")) for r in rows]),
        "mean_achieved_ratio": _mean(per),
        "token_weighted_ratio": sum(comp) / sum(orig) if orig and sum(orig) else None,
        "mean_compressed_tokens": _mean(comp),
        "mean_original_tokens": _mean(orig),
    }


def mcnemar_exact(a_only: int, b_only: int) -> float:
    """Two-sided exact McNemar p-value: the discordant pairs (right under A only vs B only) against a fair
    coin. 1.0 when there are none."""
    from math import comb

    n = a_only + b_only
    if n == 0:
        return 1.0
    tail = sum(comb(n, k) for k in range(min(a_only, b_only) + 1)) / 2**n
    return min(1.0, 2 * tail)


def paired(
    scorer: str,
    ratio: float,
    rows: Sequence[dict[str, Any]],
    baseline: str,
    base_rows: Sequence[dict[str, Any]],
) -> dict[str, Any]:
    """``scorer`` against ``baseline`` on the CoTs both answered (same CoTs, same γ): how many only one of
    them got right, and the exact McNemar p-value of that split."""
    right = {str(r["id"]): bool(r.get("correct")) for r in rows}
    base = {str(r["id"]): bool(r.get("correct")) for r in base_rows}
    common = [i for i in right if i in base]
    a_only = sum(right[i] and not base[i] for i in common)
    b_only = sum(base[i] and not right[i] for i in common)
    return {"scorer": scorer, "baseline": baseline, "ratio": ratio, "n": len(common),
            "only_scorer": a_only, "only_baseline": b_only, "p_value": mcnemar_exact(a_only, b_only)}  # fmt: skip


def paired_markdown(pairs: Sequence[dict[str, Any]]) -> str:
    """Markdown table of :func:`paired` rows."""
    lines = ["| scorer | vs | γ | n | right only with scorer | right only with baseline | McNemar p |",
             "|" + "---|" * 7]  # fmt: skip
    for p in pairs:
        lines.append(
            f"| {p['scorer']} | {p['baseline']} | {p['ratio']:g} | {p['n']} | {p['only_scorer']} | "
            f"{p['only_baseline']} | {p['p_value']:.3g} |"
        )
    return "\n".join(lines)


def _f(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def fidelity_markdown(cells: Sequence[dict[str, Any]]) -> str:
    """Markdown table, one row per scorer and γ (controls included)."""
    lines = [
        "| scorer | γ | n | answer accuracy | 95% CI | achieved ratio (mean) | achieved ratio (tokens) "
        "| CoT tokens kept |",
        "|" + "---|" * 8,
    ]
    for c in cells:
        acc = "-" if c["accuracy"] is None else f"{100 * c['accuracy']:.1f}%"
        lines.append(
            f"| {c['scorer']} | {c['ratio']:g} | {c['n']} | {acc} | "
            f"{format_interval(c['accuracy_low'], c['accuracy_high'])} | {_f(c['mean_achieved_ratio'])} | "
            f"{_f(c['token_weighted_ratio'])} | {_f(c['mean_compressed_tokens'], 1)} |"
        )
    return "\n".join(lines)


def plot_fidelity(cells: Sequence[dict[str, Any]], path: Path, title: str = "") -> None:
    """Answer accuracy (95% Wilson interval) against achieved ratio, one line per scorer; the ``full`` and
    ``none`` controls as horizontal bands."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for control, color, name in ((FULL, "black", "full CoT"), (NONE, "grey", "no CoT")):
        for c in cells:
            if c["scorer"] == control and c["accuracy"] is not None:
                ax.axhline(100 * c["accuracy"], color=color, ls="--", lw=1, label=f"{name} (n={c['n']})")
                ax.axhspan(100 * c["accuracy_low"], 100 * c["accuracy_high"], color=color, alpha=0.08)
    scorers = [s for s in dict.fromkeys(c["scorer"] for c in cells) if s not in (FULL, NONE)]
    for k, s in enumerate(scorers):
        pts = sorted(
            (c for c in cells if c["scorer"] == s and c["accuracy"] is not None), key=lambda c: c["ratio"]
        )
        if not pts:
            continue
        xs = [c["mean_achieved_ratio"] if c["mean_achieved_ratio"] is not None else c["ratio"] for c in pts]
        xs = [x + (k - (len(scorers) - 1) / 2) * 0.006 for x in xs]  # a little apart: overlapping bars
        ys = [100 * c["accuracy"] for c in pts]
        yerr = [
            [100 * (c["accuracy"] - c["accuracy_low"]) for c in pts],
            [100 * (c["accuracy_high"] - c["accuracy"]) for c in pts],
        ]
        ax.errorbar(xs, ys, yerr=yerr, marker="o", capsize=3, elinewidth=1, label=s)
    ax.set_xlabel("achieved ratio γ (kept share of the reader's CoT tokens)")
    ax.set_ylabel("answer accuracy of the reader (%)")
    ax.set_ylim(0, 105)
    ax.set_title(title or "Compression fidelity (95% Wilson intervals)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
