"""``tokenskip eval FILE...``: accuracy (95% Wilson interval), mean CoT tokens and latency of result files,
as a table + JSON."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Literal

from tokenskip.data.inputs import locate, read_rows, reject, require_fields
from tokenskip.data.jsonl import BadLineStats, write_json_atomic
from tokenskip.errors import UserError
from tokenskip.eval.metrics import markdown_table, summarize
from tokenskip.grading import grade


def load_results(
    path: str | Path,
    regrade: bool = False,
    on_error: Literal["raise", "skip"] = "raise",
    stats: BadLineStats | None = None,
) -> list[dict]:
    """Read result records (.jsonl / .json / .parquet); with ``regrade`` (or when ``correct`` is missing)
    grade ``output`` again, which needs ``output`` (a string) and ``answer`` (non-empty text or a number).

    A row that cannot be used raises a UserError naming file, line and field, or with ``on_error="skip"``
    is skipped and counted in ``stats``.
    """
    stats = stats if stats is not None else BadLineStats()
    rows = []
    for lineno, row in read_rows(path, on_error=on_error, stats=stats):
        if regrade or "correct" not in row:
            try:
                require_fields(row, strings=["output"], values=["answer"])
            except ValueError as e:
                reject(f"{locate(path, lineno)}: cannot grade the record ({e})", on_error, stats)
                continue
            row["prediction"], row["correct"] = grade(
                str(row["output"]), str(row["answer"]), row.get("task", "gsm8k")
            )
        rows.append(row)
    if not rows:
        raise UserError(f"{path}: no usable records" + (f" ({len(stats)} malformed)" if len(stats) else ""))
    return rows


def report_skipped(path: str | Path, stats: BadLineStats) -> None:
    """One stderr line for the rows ``--on_error skip`` dropped from ``path``."""
    if len(stats):
        print(
            f"tokenskip: skipped {len(stats)} malformed rows of {path}, first: {stats.skipped[0]}",
            file=sys.stderr,
        )


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
