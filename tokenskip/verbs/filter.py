"""``tokenskip filter``: keep correct outputs whose CoT is short enough (TokenSkip's data filter)."""

from __future__ import annotations

from typing import Literal

from tokenskip.data.filter import keep_record
from tokenskip.data.jsonl import BadLineStats, write_jsonl_atomic
from tokenskip.errors import UserError
from tokenskip.eval.evaluate import load_results, report_skipped


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
    stats = BadLineStats()
    rows = load_results(input, on_error=on_error, stats=stats)  # grades records without 'correct'
    report_skipped(input, stats)
    total = len(rows)
    kept = [row for row in rows if keep_record(row, max_cot_tokens, require_correct)]
    n = write_jsonl_atomic(out, kept)
    print(f"tokenskip: kept {n} of {total} records -> {out}")
    return {"total": total, "kept": n, "malformed_skipped": len(stats)}
