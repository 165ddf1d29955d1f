"""Which texts of a row to use: one text field, or several generations stored as a list (pure logic).

Reasoning datasets often keep several generations per row, a list of strings with a list of correctness
flags beside it (OpenR1-Math-220k: ``generations`` and ``correctness_math_verify``). ``--pick`` chooses:

* ``all`` (default): every generation, one record each;
* ``first``: the first generation;
* ``correct``: every generation whose flag in ``--correct_field`` is true;
* ``first_correct``: the first generation whose flag is true.

A record taken from a list gets the id ``<row id>#<k>``, ``k`` the generation's 0-based index in the list,
and carries ``generation: k`` (and ``correct``, the flag, when ``--correct_field`` is named). A text field
that is a plain string is one generation with the row's own id. A row with no correct generation gives no
record (it is counted, not an error); a null flag list means no generation is known to be correct.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tokenskip.data.inputs import unwrapped
from tokenskip.errors import UserError

PICKS = ("all", "first", "correct", "first_correct")


@dataclass(frozen=True)
class Picked:
    """One chosen generation: the record's id, its text and its fields (``generation``, ``correct``)."""

    id: str
    text: str
    fields: dict[str, Any]


def check_pick(pick: str, correct_field: str | None) -> None:
    """A UserError for an unknown ``--pick`` or a correctness pick without ``--correct_field``."""
    if pick not in PICKS:
        raise UserError(f"unknown --pick '{pick}' (one of: {', '.join(PICKS)})")
    if pick in ("correct", "first_correct") and not correct_field:
        raise UserError(f"--pick {pick} needs --correct_field, the column of correctness flags")


def row_id(row: dict[str, Any], path: Path, lineno: int) -> str:
    """The row's ``id``, else ``<file stem>-<row number - 1>``."""
    rid = row.get("id")
    return f"{unwrapped(path).stem}-{lineno - 1}" if rid in (None, "") else str(rid)


def _flags(row: dict[str, Any], correct_field: str, n: int) -> list[bool | None]:
    if correct_field not in row:
        raise ValueError(f"field '{correct_field}' is missing")
    flags = row[correct_field]
    if flags is None:
        return [None] * n
    if not isinstance(flags, list):
        flags = [flags]
    if len(flags) != n:
        raise ValueError(f"field '{correct_field}' holds {len(flags)} flags for {n} generations")
    for i, f in enumerate(flags):
        if f is not None and not isinstance(f, bool):
            raise ValueError(f"field '{correct_field}' item {i} is not true/false (got {type(f).__name__})")
    return flags


def pick_generations(
    row: dict[str, Any], rid: str, field: str, pick: str = "all", correct_field: str | None = None
) -> list[Picked]:
    """The generations of ``row[field]`` that ``pick`` chooses (see the module docstring); ValueError
    names an unusable field (missing, null, not text, a list holding something else than text)."""
    if field not in row:
        raise ValueError(f"field '{field}' is missing")
    value = row[field]
    if value is None:
        raise ValueError(f"field '{field}' is null")
    listed = isinstance(value, list | tuple)
    texts = list(value) if listed else [value]
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            where = f" item {i}" if listed else ""
            raise ValueError(f"field '{field}'{where} is not text (got {type(t).__name__})")
    flags = _flags(row, correct_field, len(texts)) if correct_field else [None] * len(texts)
    chosen = [k for k in range(len(texts)) if pick in ("all", "first") or flags[k] is True]
    if pick in ("first", "first_correct"):
        chosen = chosen[:1]
    out = []
    for k in chosen:
        fields: dict[str, Any] = {"generation": k} if listed else {}
        if correct_field:
            fields["correct"] = flags[k]
        out.append(Picked(f"{rid}#{k}" if listed else rid, texts[k], fields))
    return out


def iter_picked(
    path: Path,
    field: str,
    pick: str,
    correct_field: str | None,
    on_error: str,
    stats: Any,
    convert: Callable[[dict[str, Any], list[Picked]], list[Any]],
    check: Callable[[dict[str, Any]], None] | None = None,
    counts: dict[str, int] | None = None,
    rows: Iterable[tuple[int, dict[str, Any]]] | None = None,
) -> Iterator[Any]:
    """The items ``convert(row, chosen generations)`` makes of every row of ``path`` (each with an ``id``);
    ``rows``: the numbered rows of one part of ``path`` (default: every row of it).

    ``check(row)`` runs first. A ValueError from it, from picking or from ``convert``, or a duplicate id,
    is a UserError naming file, line and problem, or (``on_error="skip"``) counted in ``stats``. A row with
    no generation chosen is counted in ``counts["rows_none_picked"]``.
    """
    from tokenskip.data.inputs import locate, read_rows

    seen: set[str] = set()
    if rows is None:
        rows = read_rows(path, on_error=on_error, stats=stats)  # type: ignore[arg-type]
    for lineno, row in rows:
        try:
            if check is not None:
                check(row)
            items = convert(row, pick_generations(row, row_id(row, path, lineno), field, pick, correct_field))
            dup = next((x.id for x in items if x.id in seen), None)
            if dup is not None:
                raise ValueError(f"duplicate id '{dup}'")
        except ValueError as e:
            if on_error == "raise":
                raise UserError(f"{locate(path, lineno)}: {e}") from None
            stats.add(f"{locate(path, lineno)}: {e}")
            continue
        if not items and counts is not None:
            counts["rows_none_picked"] = counts.get("rows_none_picked", 0) + 1
        seen.update(x.id for x in items)
        yield from items


def picked_records(
    path: Path, field: str, pick: str, correct_field: str | None, on_error: str, stats: Any
) -> list[Any]:
    """The generations ``pick`` chooses from every row of ``path`` as Records (``cot`` = the generation,
    ids as ``tokenskip compress`` gives them), for verbs that join with its output by id (build-sft)."""
    from tokenskip.data.datasets import row_to_record

    def convert(row: dict[str, Any], chosen: list[Picked]) -> list[Any]:
        return [row_to_record({**row, "id": g.id, "cot": g.text}, g.id, require_cot=True) for g in chosen]

    records = list(iter_picked(path, field, pick, correct_field, on_error, stats, convert))
    if not records:
        raise UserError(f"{path}: no usable rows ({len(stats)} malformed)")
    return records
