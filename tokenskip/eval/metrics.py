"""Metric arithmetic over result records. Pure: lists of dicts in, numbers and text out."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from tokenskip.inference.tale_budget import within_budget

Z95 = 1.959963984540054  # two-sided 95% normal quantile


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def wilson_interval(successes: int, n: int, z: float = Z95) -> tuple[float, float] | None:
    """Wilson score interval of a binomial proportion (95% by default); None when ``n`` is 0.

    Unlike the normal (Wald) interval it stays inside [0, 1] and is not empty at 0/n or n/n: 0/10 gives
    (0, 0.278), 5/10 (0.237, 0.763).
    """
    if n < 0 or not 0 <= successes <= n:
        raise ValueError(f"need 0 <= successes <= n, got {successes}/{n}")
    if n == 0:
        return None
    p = successes / n
    z2 = z * z
    denom = 1 + z2 / n
    center = (p + z2 / (2 * n)) / denom
    half = z / denom * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    lo, hi = max(0.0, center - half), min(1.0, center + half)
    if successes == 0:
        lo = 0.0
    if successes == n:
        hi = 1.0
    return lo, hi


def accuracy_fields(correct: Sequence[bool]) -> dict[str, Any]:
    """``accuracy`` with its 95% Wilson interval (``accuracy_low``/``accuracy_high``) and ``n_graded``."""
    k, n = sum(bool(c) for c in correct), len(correct)
    ci = wilson_interval(k, n)
    return {
        "accuracy": k / n if n else None,
        "accuracy_low": ci[0] if ci else None,
        "accuracy_high": ci[1] if ci else None,
        "n_graded": n,
    }


def summarize(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Accuracy (with its 95% Wilson interval), mean CoT / output tokens, mean per-record latency and share
    cut off at max tokens.

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
        **accuracy_fields(correct),
        "mean_cot_tokens": _mean(cot),
        "mean_output_tokens": _mean(out),
        "mean_latency_s": _mean(lat),
        "truncated_share": _mean([float(c) for c in cut]),
    }


def format_interval(low: float | None, high: float | None) -> str:
    """``"46.1-59.8%"`` (percent, one decimal), or ``-`` when there is no interval."""
    if low is None or high is None:
        return "-"
    return f"{100 * low:.1f}-{100 * high:.1f}%"


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
    header = "| run | n | accuracy | 95% CI | mean CoT tokens | mean output tokens | mean latency (s) | cut at max |"
    lines = [header, "|" + "---|" * 8]
    for name, m in named.items():
        ci = format_interval(m.get("accuracy_low"), m.get("accuracy_high"))
        lines.append(
            f"| {name} | {m['n']} | {_fmt(m['accuracy'], pct=True)} | {ci} | {_fmt(m['mean_cot_tokens'])} | "
            f"{_fmt(m['mean_output_tokens'])} | {_fmt(m['mean_latency_s'])} | {_fmt(m['truncated_share'], pct=True)} |"
        )
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------
# Benchmark metrics (TokenSkip paper: accuracy, CoT tokens, ActRatio, latency)


def act_ratio(mean_cot_tokens: float | None, original_mean_cot_tokens: float | None) -> float | None:
    """ActRatio = mean CoT tokens at γ / mean CoT tokens of the original model (TokenSkip, Table 1)."""
    if mean_cot_tokens is None or not original_mean_cot_tokens:
        return None
    return mean_cot_tokens / original_mean_cot_tokens


def throughput(rows: Sequence[dict[str, Any]]) -> float | None:
    """Generated tokens per second over the batched run: sum(output_tokens) / sum(latency_s).

    Each record's ``latency_s`` is its batch's wall time divided by the batch size, so the sum of
    latencies is the run's total generation time.
    """
    toks = [
        float(r["output_tokens"]) for r in rows if r.get("output_tokens") is not None and r.get("latency_s")
    ]
    time_s = sum(
        float(r["latency_s"]) for r in rows if r.get("output_tokens") is not None and r.get("latency_s")
    )
    return sum(toks) / time_s if time_s > 0 else None


def budget_adherence(rows: Sequence[dict[str, Any]]) -> tuple[float | None, float | None]:
    """(share of records whose output stayed within its token budget, mean budget) for TALE rows."""
    with_budget = [r for r in rows if r.get("budget") is not None and r.get("output_tokens") is not None]
    if not with_budget:
        return None, None
    within = _mean([float(within_budget(int(r["output_tokens"]), int(r["budget"]))) for r in with_budget])
    return within, _mean([float(r["budget"]) for r in with_budget])


def method_summary(
    method: str,
    rows: Sequence[dict[str, Any]],
    original_mean_cot_tokens: float | None,
    requested_ratio: float | None = None,
    batch1_rows: Sequence[dict[str, Any]] = (),
    batch_size: int | None = None,
) -> dict[str, Any]:
    """One benchmark row. Latencies are labelled: batch 1 (paper) vs batched (TokenSkip's code)."""
    base = summarize(rows)
    within, mean_budget = budget_adherence(rows)
    thinking = [float(r["thinking_tokens"]) for r in rows if r.get("thinking_tokens") is not None]
    answer = [float(r["answer_tokens"]) for r in rows if r.get("answer_tokens") is not None]
    forced = [float(bool(r["forced"])) for r in rows if r.get("forced") is not None]
    b1 = [float(r["latency_s"]) for r in batch1_rows if r.get("latency_s") is not None]
    return {
        "method": method,
        "n": base["n"],
        "accuracy": base["accuracy"],
        "accuracy_low": base["accuracy_low"],
        "accuracy_high": base["accuracy_high"],
        "mean_cot_tokens": base["mean_cot_tokens"],
        "requested_ratio": requested_ratio,
        "act_ratio": act_ratio(base["mean_cot_tokens"], original_mean_cot_tokens),
        "latency_batch1_s": _mean(b1),
        "latency_batch1_n": len(b1),
        "latency_batched_s": base["mean_latency_s"],
        "batch_size": batch_size,
        "throughput_tok_s": throughput(rows),
        "truncated_share": base["truncated_share"],
        "budget_within_share": within,
        "mean_budget": mean_budget,
        "mean_thinking_tokens": _mean(thinking),
        "mean_answer_tokens": _mean(answer),
        "forced_share": _mean(forced),
    }


BENCH_COLUMNS: list[tuple[str, str, str]] = [
    # (key, header, format)
    ("method", "method", "s"),
    ("n", "n", "d"),
    ("accuracy", "accuracy", "%"),
    ("accuracy_ci", "95% CI", "ci"),
    ("mean_cot_tokens", "CoT tokens", "f"),
    ("requested_ratio", "γ requested", "f"),
    ("act_ratio", "ActRatio", "f"),
    ("latency_batch1_s", "latency s/sample (batch 1)", "f"),
    ("speedup_batch1", "speedup vs original (batch 1)", "f"),
    ("latency_batched_s", "latency s/sample (batched)", "f"),
    ("throughput_tok_s", "throughput tok/s (batched)", "f"),
    ("budget_within_share", "within budget", "%"),
]


# shown for thinking presets and beside budget forcing: the CoT/thinking part and the answer part apart
THINKING_COLUMNS: list[tuple[str, str, str]] = [
    ("mean_thinking_tokens", "thinking tokens", "f"),
    ("mean_answer_tokens", "answer tokens", "f"),
]
FORCED_COLUMN = ("forced_share", "thinking cut (forced)", "%")


def bench_columns(rows: Sequence[dict[str, Any]], thinking: bool = False) -> list[tuple[str, str, str]]:
    """The table's columns: :data:`BENCH_COLUMNS`, the thinking/answer split for thinking presets or when
    budget forcing ran, and the share of forced (cut) thinking when budget forcing ran."""
    forced = any(r.get("forced_share") is not None for r in rows)
    cols = list(BENCH_COLUMNS)
    if thinking or forced:
        at = [k for k, _, _ in cols].index("mean_cot_tokens") + 1
        cols[at:at] = THINKING_COLUMNS  # after CoT tokens
    if forced:
        cols.append(FORCED_COLUMN)
    return cols


def bench_markdown(rows: Sequence[dict[str, Any]], label: str | None = None, thinking: bool = False) -> str:
    """Markdown table of method summaries (``label`` prefixes each method, e.g. the model); ``thinking``:
    the run used a thinking preset (thinking and answer tokens get their own columns). Accuracy is followed
    by its 95% Wilson interval."""
    columns = bench_columns(rows, thinking)
    header = "| " + " | ".join(h for _, h, _ in columns) + " |"
    lines = [header, "|" + "---|" * len(columns)]
    for r in rows:
        cells = []
        for key, _, fmt in columns:
            v = r.get(key)
            if key == "method" and label:
                v = f"{label}: {v}"
            if fmt == "ci":
                cells.append(format_interval(r.get("accuracy_low"), r.get("accuracy_high")))
                continue
            cells.append(_fmt(v, pct=fmt == "%") if fmt != "s" else str(v))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
