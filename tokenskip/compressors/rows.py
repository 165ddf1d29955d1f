"""The input side of ``tokenskip compress``: the rows of a CoT file, checked, and one output line per
ratio."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tokenskip.compressors.thinking import ReadSpec, split_think
from tokenskip.data.generations import iter_picked
from tokenskip.data.inputs import BadLineStats, OnError, require_fields
from tokenskip.errors import UserError


@dataclass
class Row:
    id: str
    question: Any
    answer: Any
    cot: str
    part: Any = None  # the ThinkSplit of a text with think tags: only its thinking is pruned
    fields: dict | None = None  # generation / correct of a text picked from a list

    @property
    def text(self) -> str:
        """What is scored, pruned and counted: the thinking of a text with think tags, else the text."""
        return self.part.thinking if self.part is not None else self.cot


def result_row(row: Row, ratio: float, compressed: str, original_tokens: int, compressed_tokens: int) -> dict:
    achieved = compressed_tokens / original_tokens if original_tokens else 1.0
    out = {
        "id": row.id,
        "question": row.question,
        "answer": row.answer,
        "cot": row.cot,
        "compressed_cot": compressed if row.part is None else row.part.join(compressed),
        "ratio": ratio,
        "original_tokens": original_tokens,
        "compressed_tokens": compressed_tokens,
        "achieved_ratio": round(achieved, 6),
    }
    if row.part is not None:  # the tokens and the ratio count the thinking alone
        out.update(thinking=True, thinking_closed=row.part.closed)
    return out | (row.fields or {})


def iter_rows(
    path: Path,
    field: str,
    on_error: OnError,
    stats: BadLineStats,
    spec: ReadSpec | None = None,
    counts: dict | None = None,
    rows: Iterable[tuple[int, dict]] | None = None,
) -> Iterator[Row]:
    """Stream the input's records as :class:`Row` (id defaults to ``<stem>-<line-1>``).

    Required per row: ``question`` (or MATH's ``problem``) as non-blank text, ``answer`` as non-blank text
    or a number, and ``field`` (the CoT) as a string or a list of strings -- an empty CoT is kept
    (compressed to ""). ``spec`` (:class:`~tokenskip.compressors.thinking.ReadSpec`) picks generations
    from a list (:mod:`tokenskip.data.generations`; rows with none picked are counted in ``counts``) and
    names the think tags. Anything else is a UserError naming file, line and field, or skipped and counted
    (``on_error="skip"``). ``rows``: the numbered rows of one part of ``path`` (default: all of them).
    """
    spec = spec or ReadSpec()

    def qkey(obj: dict) -> str:
        return "problem" if "problem" in obj and "question" not in obj else "question"

    def convert(obj: dict, chosen: list) -> list[Row]:
        require_fields(obj, values=["answer"])
        return [Row(g.id, obj[qkey(obj)], obj["answer"], g.text, split_think(g.text, spec.tags), g.fields or None)
                for g in chosen]  # fmt: skip

    yield from iter_picked(path, field, spec.pick, spec.correct_field, on_error, stats, convert,
                           lambda obj: require_fields(obj, text=[qkey(obj)]), counts, rows)  # fmt: skip


def check_rows(
    path: Path,
    field: str,
    on_error: OnError,
    limit: int | None,
    spec: ReadSpec | None = None,
    counts: dict | None = None,
) -> tuple[int, BadLineStats]:
    """Read every row the run will use once, before any model loads: bad input fails fast. Returns the
    number of usable records (at most ``limit``) and the stats of skipped rows."""
    stats = BadLineStats()
    n = 0
    for _ in iter_rows(path, field, on_error, stats, spec, counts):
        n += 1
        if limit is not None and n >= limit:
            break
    if n == 0:
        first = f", first: {stats.skipped[0]}" if len(stats) else ""
        raise UserError(f"{path}: no usable rows ({len(stats)} malformed{first})")
    return n, stats
