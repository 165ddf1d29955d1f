"""JSONL reading with line-accurate errors, and an append-only writer that makes long jobs resumable.

The writer's contract: every finished record is one complete line, written with a single ``write`` and
flushed + fsynced before the next record starts. On reopen, a trailing half-written line (the job was
killed mid-write) is cut off, and the ids already present are reported so the job skips them.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from tokenskip.data.inputs import BadLineStats, OnError, check_input_file, read_jsonl_rows
from tokenskip.errors import UserError

__all__ = [  # BadLineStats, OnError and check_input_file live in inputs.py (the reader of user files)
    "BadLineStats",
    "OnError",
    "ResumableJsonlWriter",
    "atomic_dir",
    "check_input_file",
    "read_jsonl",
    "write_json_atomic",
    "write_jsonl_atomic",
]


def read_jsonl(
    path: str | os.PathLike, on_error: OnError = "raise", stats: BadLineStats | None = None
) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(line_number, object)`` for each non-blank line of a JSONL file (whatever its suffix).

    UTF-8 with or without a BOM, LF or CRLF. A line that is not a JSON object, or holds text that is not
    valid UTF-8, raises UserError naming file and line (``on_error="raise"``), or is skipped and recorded in
    ``stats`` (``on_error="skip"``). User files of any supported format: :func:`tokenskip.data.inputs.read_rows`.
    """
    yield from read_jsonl_rows(check_input_file(path), on_error, stats)


@contextlib.contextmanager
def atomic_dir(out_dir: str | os.PathLike) -> Iterator[Path]:
    """A temporary sibling folder to fill; when the block ends without error it replaces ``out_dir`` (a
    previous folder there is removed), otherwise it is deleted: a killed writer never leaves a folder that
    looks finished."""
    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=out.name + ".tmp-", dir=out.parent))
    try:
        yield tmp
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
    """Write JSON to ``path`` through a temporary file and an atomic rename."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(p.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2, ensure_ascii=False)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, p)


def write_jsonl_atomic(path: str | os.PathLike, rows: Iterable[dict[str, Any]]) -> int:
    """Write all rows to ``path`` through a temporary file and an atomic rename; return the count."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(p.name + ".tmp")
    n = 0
    with tmp.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
            n += 1
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, p)
    return n


class ResumableJsonlWriter:
    """Append-only JSONL output keyed by a record id; reopening skips what is already done.

    >>> with ResumableJsonlWriter("out.jsonl") as w:      # doctest: +SKIP
    ...     todo = [r for r in records if r["id"] not in w.done]
    ...     for rec in process(todo):
    ...         w.write(rec)
    """

    def __init__(self, path: str | os.PathLike, key: str = "id") -> None:
        self.path = Path(path)
        self.key = key
        self.done: set[str] = set()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists():
            self._recover()
        self._f = self.path.open("a", encoding="utf-8")

    def _recover(self) -> None:
        data = self.path.read_bytes()
        if data and not data.endswith(b"\n"):
            # the job was killed while writing its last line: drop the partial line
            cut = data.rfind(b"\n") + 1
            with self.path.open("r+b") as f:
                f.truncate(cut)
            data = data[:cut]
        # split on "\n" only: str.splitlines() also splits inside records at U+2028, U+2029, \x85 ... (GSM8K has them)
        for lineno, line in enumerate(data.decode("utf-8-sig", "replace").split("\n"), start=1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
                self.done.add(str(rec[self.key]))
            except (ValueError, KeyError, TypeError):
                raise UserError(
                    f"{self.path}:{lineno}: existing output line is not a record with '{self.key}'; "
                    "move the file away or pick another --out"
                ) from None

    def write(self, record: dict[str, Any]) -> None:
        self.write_many([record])

    def write_many(self, records: Iterable[dict[str, Any]]) -> None:
        """Append the records not done yet with one write + fsync (per-record fsyncs dominate a fast job's
        run time); recovery is the same: whole lines are done records."""
        fresh: dict[str, str] = {}  # id -> line
        for rec in records:
            rid = str(rec[self.key])
            if rid not in self.done and rid not in fresh:
                fresh[rid] = json.dumps(rec, ensure_ascii=False) + "\n"
        self.write_lines(list(fresh.values()))
        self.done.update(fresh)

    def write_lines(self, lines: Sequence[str]) -> None:
        """Append finished JSONL lines with one write + fsync (the caller adds their ids to ``done``)."""
        if lines:
            self._f.write("".join(lines))
            self._f.flush()
            os.fsync(self._f.fileno())

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> ResumableJsonlWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
