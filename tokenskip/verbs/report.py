"""``tokenskip report DIR...``: tables and plots of one or more ``tokenskip bench`` folders, rendered again."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tokenskip.errors import UserError
from tokenskip.eval.report import render


def report(dirs: list[str], out: str | None = None) -> list[dict[str, Any]]:
    """Re-render tables (markdown, CSV, JSON) and plots from one or more `tokenskip bench` folders.

    Args:
        dirs: bench output folders; several are put in one table and one pair of figures.
        out: where to write (default: the first folder).
    """
    if not dirs:
        raise UserError("give at least one bench folder")
    return render([Path(d) for d in dirs], Path(out) if out else Path(dirs[0]))
