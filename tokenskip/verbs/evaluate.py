"""``tokenskip eval FILE...``: accuracy (95% Wilson interval), mean CoT tokens and latency of result files,
as a table + JSON."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from tokenskip.data.jsonl import BadLineStats, write_json_atomic
from tokenskip.errors import UserError
from tokenskip.eval.evaluate import load_results, report_skipped
from tokenskip.eval.metrics import markdown_table, summarize


def evaluate(
    files: list[str],
    out: str | None = None,
    regrade: bool = False,
    on_error: Literal["raise", "skip"] = "raise",
) -> dict[str, Any]:
    """Summarise result files: accuracy with its 95% Wilson interval, mean CoT tokens, mean output tokens,
    mean latency, n.

    Args:
        files: one or more result files (from generate, infer or bench): .jsonl, .json or .parquet.
        out: JSON file for the metrics (default: <first file>.metrics.json).
        regrade: grade every record's output again instead of trusting its 'correct' field.
        on_error: a malformed row is fatal (raise) or skipped and counted (skip).
    """
    if not files:
        raise UserError("give at least one result file")
    metrics: dict[str, dict[str, Any]] = {}
    for f in files:
        name = str(f) if str(f) not in metrics else f"{f} ({len(metrics)})"
        stats = BadLineStats()
        metrics[name] = summarize(load_results(f, regrade=regrade, on_error=on_error, stats=stats))
        report_skipped(f, stats)
        if len(stats):
            metrics[name]["malformed_skipped"] = len(stats)
    print(markdown_table(metrics))
    target = Path(out) if out else Path(files[0]).with_suffix(".metrics.json")
    write_json_atomic(target, metrics if len(metrics) > 1 else next(iter(metrics.values())))
    print(f"metrics -> {target}")
    return metrics
