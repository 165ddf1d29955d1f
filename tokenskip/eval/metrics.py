"""Metric arithmetic over result records. Pure: lists of dicts in, numbers and text out."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def summarize(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Accuracy, mean CoT / output tokens, mean per-record latency and share cut off at max tokens.

    Missing fields are skipped per metric (a metric with no values is ``None``), never counted as zero.
    """
    n = len(rows)
    correct = [bool(r["correct"]) for r in rows if "correct" in r]
    cot = [float(r["cot_tokens"]) for r in rows if r.get("cot_tokens") is not None]
    out = [float(r["output_tokens"]) for r in rows if r.get("output_tokens") is not None]
    lat = [float(r["latency_s"]) for r in rows if r.get("latency_s") is not None]
    cut = [r.get("finish_reason") == "length" for r in rows if "finish_reason" in r]
    return {
        "n": n,
        "accuracy": _mean([float(c) for c in correct]),
        "mean_cot_tokens": _mean(cot),
        "mean_output_tokens": _mean(out),
        "mean_latency_s": _mean(lat),
        "truncated_share": _mean([float(c) for c in cut]),
    }


def _fmt(value: Any, pct: bool = False) -> str:
    if value is None:
        return "-"
    if pct:
        return f"{100 * value:.1f}%"
    if isinstance(value, float):
        return f"{value:.2f}" if abs(value) < 100 else f"{value:.1f}"
    return str(value)


def markdown_table(named: dict[str, dict[str, Any]]) -> str:
    """A markdown table with one row per name (e.g. per file or per method)."""
    header = "| run | n | accuracy | mean CoT tokens | mean output tokens | mean latency (s) | cut at max |"
    lines = [header, "|" + "---|" * 7]
    for name, m in named.items():
        lines.append(
            f"| {name} | {m['n']} | {_fmt(m['accuracy'], pct=True)} | {_fmt(m['mean_cot_tokens'])} | "
            f"{_fmt(m['mean_output_tokens'])} | {_fmt(m['mean_latency_s'])} | {_fmt(m['truncated_share'], pct=True)} |"
        )
    return "\n".join(lines)
