"""Reading result files back (graded again where asked or needed), for ``tokenskip eval``, ``filter`` and
``fidelity``."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Literal

from tokenskip.data.inputs import locate, read_rows, reject, require_fields
from tokenskip.data.jsonl import BadLineStats
from tokenskip.errors import UserError
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
