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
    within = _mean([float(int(r["output_tokens"]) <= int(r["budget"])) for r in with_budget])
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
    ("mean_cot_tokens", "CoT tokens", "f"),
    ("requested_ratio", "γ requested", "f"),
    ("act_ratio", "ActRatio", "f"),
    ("latency_batch1_s", "latency s/sample (batch 1)", "f"),
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
        cols[4:4] = THINKING_COLUMNS  # after CoT tokens
    if forced:
        cols.append(FORCED_COLUMN)
    return cols


def bench_markdown(rows: Sequence[dict[str, Any]], label: str | None = None, thinking: bool = False) -> str:
    """Markdown table of method summaries (``label`` prefixes each method, e.g. the model); ``thinking``:
    the run used a thinking preset (thinking and answer tokens get their own columns)."""
    columns = bench_columns(rows, thinking)
    header = "| " + " | ".join(h for _, h, _ in columns) + " |"
    lines = [header, "|" + "---|" * len(columns)]
    for r in rows:
        cells = []
        for key, _, fmt in columns:
            v = r.get(key)
            if key == "method" and label:
                v = f"{label}: {v}"
            cells.append(_fmt(v, pct=fmt == "%") if fmt != "s" else str(v))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
