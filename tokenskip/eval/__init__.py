"""Answer extraction, grading, metrics and reports."""

from tokenskip.eval.grading import extract_answer, grade, is_equiv

__all__ = ["extract_answer", "grade", "is_equiv"]
