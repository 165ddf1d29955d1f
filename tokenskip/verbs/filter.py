"""``tokenskip filter``: keep correct outputs whose CoT is short enough (TokenSkip's data filter)."""

from __future__ import annotations

from typing import Any, Literal

from tokenskip.data.jsonl import write_jsonl_atomic
from tokenskip.errors import UserError


def keep_record(row: dict[str, Any], max_cot_tokens: int | None, require_correct: bool) -> bool:
    """Whether a generated record belongs in the training set."""
    if require_correct and not row.get("correct", False):
        return False
    if max_cot_tokens is not None:
        tokens = row.get("cot_tokens")
        if not isinstance(tokens, int | float) or isinstance(tokens, bool) or tokens > max_cot_tokens:
            return False
    cot = row.get("cot")
    return isinstance(cot, str) and bool(cot.strip())


def filter_records(
    input: str,
    out: str,
    max_cot_tokens: int | None = 500,
    require_correct: bool = True,
    on_error: Literal["raise", "skip"] = "raise",
) -> dict[str, int]:
    """Keep generated records that are correct and whose CoT has at most N tokens.

    Args:
        input: records from `tokenskip generate` (.jsonl, .json or .parquet; records without a 'correct'
            field are graded first, which needs their 'output' and 'answer').
        out: filtered JSONL (written atomically).
        max_cot_tokens: drop records whose cot_tokens exceed this (none: no length limit).
        require_correct: drop records graded incorrect.
        on_error: a malformed row is fatal (raise) or skipped and counted (skip).
    """
    if max_cot_tokens is not None and max_cot_tokens < 1:
        raise UserError(f"--max_cot_tokens must be >= 1, got {max_cot_tokens}")
    from tokenskip.data.jsonl import BadLineStats
    from tokenskip.eval.evaluate import load_results, report_skipped  # grades records without 'correct'

    stats = BadLineStats()
    rows = load_results(input, on_error=on_error, stats=stats)
    report_skipped(input, stats)
    total = len(rows)
    kept = [row for row in rows if keep_record(row, max_cot_tokens, require_correct)]
    n = write_jsonl_atomic(out, kept)
    print(f"tokenskip: kept {n} of {total} records -> {out}")
    return {"total": total, "kept": n, "malformed_skipped": len(stats)}
