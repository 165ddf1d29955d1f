"""TokenSkip's data filter, pure: which generated records belong in the training set (the verb:
:mod:`tokenskip.verbs.filter`)."""

from __future__ import annotations

from typing import Any


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
