"""``tokenskip eval FILE...``: accuracy, mean CoT tokens and latency of result files, as a table + JSON."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from tokenskip.data.jsonl import read_jsonl, write_json_atomic
from tokenskip.errors import UserError
from tokenskip.eval.metrics import markdown_table, summarize
from tokenskip.grading import grade


def load_results(
    path: str | Path, regrade: bool = False, on_error: Literal["raise", "skip"] = "raise"
) -> list[dict]:
    """Read result records; with ``regrade`` (or when ``correct`` is missing) grade ``output`` again."""
    rows = []
    for lineno, row in read_jsonl(path, on_error=on_error):
        if regrade or "correct" not in row:
            if "output" not in row or "answer" not in row:
                raise UserError(f"{path}:{lineno}: record has no 'output'/'answer' to grade")
            row["prediction"], row["correct"] = grade(
                str(row["output"]), str(row["answer"]), row.get("task", "gsm8k")
            )
        rows.append(row)
    return rows


def evaluate(
    files: list[str],
    out: str | None = None,
    regrade: bool = False,
    on_error: Literal["raise", "skip"] = "raise",
) -> dict[str, Any]:
    """Summarise result files: accuracy, mean CoT tokens, mean output tokens, mean latency, n.

    Args:
        files: one or more JSONL result files (from generate, infer or bench).
        out: JSON file for the metrics (default: <first file>.metrics.json).
        regrade: grade every record's output again instead of trusting its 'correct' field.
        on_error: a malformed line is fatal (raise) or skipped (skip).
    """
    if not files:
        raise UserError("give at least one result file")
    metrics: dict[str, dict[str, Any]] = {}
    for f in files:
        name = str(f) if str(f) not in metrics else f"{f} ({len(metrics)})"
        metrics[name] = summarize(load_results(f, regrade=regrade, on_error=on_error))
    print(markdown_table(metrics))
    target = Path(out) if out else Path(files[0]).with_suffix(".metrics.json")
    write_json_atomic(target, metrics if len(metrics) > 1 else next(iter(metrics.values())))
    print(f"metrics -> {target}")
    return metrics
