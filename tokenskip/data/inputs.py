"""The one reader of user files: every verb that reads rows from a file reads them through here.

Formats, by file suffix (case-insensitive):

* ``.jsonl``: one JSON object per line; UTF-8 with or without a BOM; LF or CRLF line ends; blank lines
  are ignored. Rows are numbered by line.
* ``.json``: an array of objects, or an object holding one under ``"data"`` (or ``"examples"``); UTF-8,
  with or without a BOM. Rows are numbered 1, 2, ... in array order.
* ``.parquet``: read in record batches (memory stays flat). Rows are numbered 1, 2, ...
* ``.txt``: only where a verb asks for it (``infer``): one row per non-blank line, the line as
  ``{txt_field: line}``.
* any of ``.jsonl``, ``.json`` and ``.txt`` compressed with gzip (``data.jsonl.gz``, ``data.json.gz``): read as
  the plain file (same rows, same line numbers in messages, same record ids). Parquet is compressed inside.

A problem with one row -- not valid UTF-8, not a JSON object, an unusable field -- is a
:class:`~tokenskip.errors.UserError` naming file, line (or row) and field with ``on_error="raise"``, or
with ``on_error="skip"`` the row is skipped and the message counted in a
:class:`BadLineStats`. A problem with the whole file (missing, empty, unknown
suffix, a ``.json`` that does not parse) is always a UserError.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import re
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any, Literal

from tokenskip.errors import UserError

TABLE_SUFFIXES = (".jsonl", ".json", ".parquet")
LINE_SUFFIXES = (".jsonl", ".txt")  # rows numbered by line; the others by row
BOM = b"\xef\xbb\xbf"
_SURROGATE = re.compile("[\ud800-\udfff]")
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")  # a \udXXX escape in JSON text
_UTF8_HINT = "save the file as UTF-8"


OnError = Literal["raise", "skip"]


class BadLineStats:
    """Counts rows that were skipped because they were malformed (``on_error="skip"``)."""

    def __init__(self) -> None:
        self.skipped: list[str] = []

    def add(self, message: str) -> None:
        self.skipped.append(message)

    def __len__(self) -> int:
        return len(self.skipped)


def check_input_file(path: str | os.PathLike) -> Path:
    """Return ``path`` as a Path, or raise UserError if it is missing, a directory or empty."""
    p = Path(path)
    if not p.exists():
        raise UserError(f"file not found: {p}")
    if p.is_dir():
        raise UserError(f"expected a file, got a directory: {p}")
    if p.stat().st_size == 0:
        raise UserError(f"file is empty: {p}")
    return p


def unwrapped(path: str | os.PathLike) -> Path:
    """``path`` without its compression suffix (``data.jsonl.gz`` -> ``data.jsonl``): its format and the
    prefix of its record ids come from this name."""
    p = Path(path)
    return p.with_suffix("") if p.suffix.lower() == ".gz" else p


@contextlib.contextmanager
def open_bytes(path: Path) -> Iterator[IO[bytes]]:
    """``path`` opened for reading bytes, decompressed on the fly if it is gzip (``.gz``), so every reader
    sees the plain file. A gzip file that is corrupt or cut short is a UserError naming the file."""
    if path.suffix.lower() != ".gz":
        with path.open("rb") as f:
            yield f
        return
    try:
        with gzip.open(path, "rb") as f:
            yield f
    except (OSError, EOFError, zlib.error) as e:  # gzip.BadGzipFile is an OSError
        raise UserError(f"{path}: cannot decompress gzip ({_first_line(e)})") from None


def locate(path: str | os.PathLike, n: int) -> str:
    """``FILE:N`` for line-numbered files (.jsonl, .txt), ``FILE: row N`` for the others."""
    return f"{path}:{n}" if unwrapped(path).suffix.lower() in LINE_SUFFIXES else f"{path}: row {n}"


def read_rows(
    path: str | os.PathLike,
    on_error: OnError = "raise",
    stats: BadLineStats | None = None,
    txt_field: str | None = None,
) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(number, row)`` for every row of a ``.jsonl`` / ``.json`` / ``.parquet`` file (and ``.txt``
    when ``txt_field`` names the field each line goes to). See the module docstring for the rules."""
    p = check_input_file(path)
    suffix = unwrapped(p).suffix.lower()
    if suffix == ".jsonl":
        yield from read_jsonl_rows(p, on_error, stats)
    elif suffix == ".json":
        yield from _json_rows(p, on_error, stats)
    elif suffix == ".parquet" and p.suffix.lower() == ".parquet":
        yield from _parquet_rows(p, on_error, stats)
    elif suffix == ".txt" and txt_field is not None:
        yield from _txt_rows(p, txt_field, on_error, stats)
    else:
        plain = (".jsonl", ".json") + ((".txt",) if txt_field else ())
        known = ", ".join(TABLE_SUFFIXES + ((".txt",) if txt_field else ()) + tuple(s + ".gz" for s in plain))
        kind = "".join(p.suffixes[-2:]) if p.suffix.lower() == ".gz" else p.suffix
        raise UserError(f"{p}: unsupported file type '{kind or '(none)'}' (use {known})")


def reject(msg: str, on_error: OnError, stats: BadLineStats | None) -> None:
    """A bad row: UserError ``msg`` (``on_error="raise"``), or ``msg`` counted in ``stats`` (``skip``)."""
    if on_error == "raise":
        raise UserError(msg) from None
    if stats is not None:
        stats.add(msg)


def _decode(raw: bytes) -> tuple[str, tuple[int, int] | None]:
    """``raw`` as text, and ``(byte value, 1-based character column)`` of its first invalid UTF-8 byte
    (the text then keeps undecodable bytes as ``surrogateescape`` characters), or None."""
    try:
        return raw.decode("utf-8"), None
    except UnicodeDecodeError as e:
        column = len(raw[: e.start].decode("utf-8", "replace")) + 1
        return raw.decode("utf-8", "surrogateescape"), (raw[e.start], column)


def _bad_line(path: Path, lineno: int, bad: tuple[int, int]) -> str:
    return f"{path}:{lineno}: not valid UTF-8 (byte 0x{bad[0]:02x} at column {bad[1]}); {_UTF8_HINT}"


def bad_text_field(row: dict[str, Any]) -> tuple[str, str] | None:
    """``(field, character)`` of the first field holding text that is not valid Unicode (an undecodable
    byte kept by ``surrogateescape``, or a lone ``\\udXXX`` escape), nested values included."""
    for key, value in row.items():
        bad = _find_surrogate(key) or _find_surrogate(value)
        if bad is not None:
            return str(key).encode("utf-8", "replace").decode("utf-8"), bad
    return None


def _find_surrogate(value: Any) -> str | None:
    if isinstance(value, str):
        m = _SURROGATE.search(value)
        return m.group() if m else None
    if isinstance(value, dict):
        items: Iterable[Any] = [*value.keys(), *value.values()]
    elif isinstance(value, list):
        items = value
    else:
        return None
    for v in items:
        bad = _find_surrogate(v)
        if bad is not None:
            return bad
    return None


def _unicode_problem(field: str, char: str, from_bytes: bool, column: int | None = None) -> str:
    """The message for a field holding ``char``: an undecodable byte (kept by ``surrogateescape``) when
    the file's bytes were not UTF-8, else a lone ``\\udXXX`` escape written in the JSON text."""
    code = ord(char)
    if from_bytes and 0xDC80 <= code <= 0xDCFF:
        where = f" at column {column}" if column else ""
        return f"field '{field}' is not valid UTF-8 (byte 0x{code - 0xDC00:02x}{where}); {_UTF8_HINT}"
    return f"field '{field}' holds a lone surrogate escape (\\u{code:04x}), which is not valid Unicode"


def read_jsonl_rows(
    path: Path,
    on_error: OnError = "raise",
    stats: BadLineStats | None = None,
    span: tuple[int, int, int] | None = None,
) -> Iterator[tuple[int, dict[str, Any]]]:
    """Rows of a JSON Lines file, whatever its suffix (BOM, CRLF and invalid UTF-8 handled; gzip if .gz).

    ``span``: ``(start, end, first_line)``: only the lines that start at byte offsets in ``[start, end)``,
    ``start`` being the start of line ``first_line`` (one part of a file read in parallel)."""
    start, end, first = span if span is not None else (0, None, 1)
    with open_bytes(path) as f:
        f.seek(start)
        pos = start
        for lineno, raw in enumerate(f, start=first):
            if end is not None and pos >= end:
                break
            pos += len(raw)
            if lineno == 1 and raw.startswith(BOM):
                raw = raw[len(BOM) :]
            if not raw.strip():
                continue
            text, bad = _decode(raw)
            try:
                obj = json.loads(text)
                if not isinstance(obj, dict):
                    raise ValueError(f"expected a JSON object, got {type(obj).__name__}")
            except ValueError as e:
                if bad:  # the undecodable byte is what broke the line
                    msg = _bad_line(path, lineno, bad)
                else:
                    msg = f"{path}:{lineno}: malformed JSONL line ({_first_line(e)})"
                reject(msg, on_error, stats)
                continue
            if bad or _SURROGATE_ESCAPE.search(raw):
                found = bad_text_field(obj)
                if found is not None:
                    column = bad[1] if bad else None
                    problem = _unicode_problem(*found, bad is not None, column)
                    reject(f"{path}:{lineno}: {problem}", on_error, stats)
                    continue
            yield lineno, obj


def _json_rows(
    path: Path, on_error: OnError, stats: BadLineStats | None
) -> Iterator[tuple[int, dict[str, Any]]]:
    with open_bytes(path) as f:
        raw = f.read()
    if raw.startswith(BOM):
        raw = raw[len(BOM) :]
    try:
        text = raw.decode("utf-8")
        bad_at = None
    except UnicodeDecodeError as e:
        text = raw.decode("utf-8", "surrogateescape")
        head = raw[: e.start]
        line = head.count(b"\n") + 1
        col = len(head[head.rfind(b"\n") + 1 :].decode("utf-8", "replace")) + 1
        bad_at = f"{path}:{line}:{col}: not valid UTF-8 (byte 0x{raw[e.start]:02x}); {_UTF8_HINT}"
    try:
        data = json.loads(text)
    except ValueError as e:
        if bad_at:
            raise UserError(bad_at) from None
        hint = ""
        if isinstance(e, json.JSONDecodeError) and e.msg == "Extra data":
            hint = "; one JSON object per line is JSON Lines: name the file .jsonl"
        where = f"{path}:{e.lineno}:{e.colno}" if isinstance(e, json.JSONDecodeError) else str(path)
        raise UserError(f"{where}: not valid JSON ({_first_line(e)}){hint}") from None
    if isinstance(data, dict):
        data = data.get("data", data.get("examples"))
    if not isinstance(data, list):
        raise UserError(f'{path}: expected a JSON array of objects (or {{"data": [...]}})')
    check_text = bad_at is not None or _SURROGATE_ESCAPE.search(raw) is not None
    for n, row in enumerate(data, start=1):
        if not isinstance(row, dict):
            reject(f"{path}: row {n}: expected a JSON object, got {type(row).__name__}", on_error, stats)
            continue
        found = bad_text_field(row) if check_text else None
        if found is not None:
            reject(f"{path}: row {n}: {_unicode_problem(*found, bad_at is not None)}", on_error, stats)
            continue
        yield n, row


def _parquet_rows(
    path: Path, on_error: OnError, stats: BadLineStats | None
) -> Iterator[tuple[int, dict[str, Any]]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        batches = pq.ParquetFile(path).iter_batches(batch_size=1024)
        n = 0
        for batch in batches:
            for row in batch.to_pylist():
                n += 1
                yield n, row
    except (OSError, ValueError, pa.ArrowException) as e:  # corrupt or not parquet at all
        raise UserError(f"{path}: cannot read parquet ({_first_line(e)})") from None


def _txt_rows(
    path: Path, field: str, on_error: OnError, stats: BadLineStats | None
) -> Iterator[tuple[int, dict[str, Any]]]:
    with open_bytes(path) as f:
        for lineno, raw in enumerate(f, start=1):
            if lineno == 1 and raw.startswith(BOM):
                raw = raw[len(BOM) :]
            if not raw.strip():
                continue
            text, bad = _decode(raw)
            if bad:
                reject(_bad_line(path, lineno, bad), on_error, stats)
                continue
            yield lineno, {field: text.rstrip("\r\n")}


# ------------------------------------------------------------------------------------ required fields


def field_problem(row: dict[str, Any], name: str, kind: str = "text") -> str | None:
    """Why ``row[name]`` is unusable, or None.

    ``kind``: ``text`` (a string with non-blank content), ``string`` (any string, empty allowed), or
    ``value`` (non-blank text or a number: answers).
    """
    if name not in row:
        return f"field '{name}' is missing"
    value = row[name]
    if value is None:
        return f"field '{name}' is null"
    if kind == "value" and isinstance(value, int | float):
        return f"field '{name}' is NaN" if value != value else None
    if not isinstance(value, str):
        what = "text or a number" if kind == "value" else "text"
        return f"field '{name}' is not {what} (got {type(value).__name__})"
    if kind != "string" and not value.strip():
        return f"field '{name}' is empty"
    return None


def require_fields(
    row: dict[str, Any], text: Iterable[str] = (), strings: Iterable[str] = (), values: Iterable[str] = ()
) -> None:
    """Raise ValueError naming the first unusable field (see :func:`field_problem` for the kinds)."""
    for kind, names in (("text", text), ("string", strings), ("value", values)):
        for name in names:
            problem = field_problem(row, name, kind)
            if problem:
                raise ValueError(problem)


def _first_line(e: Exception) -> str:
    s = str(e).strip()
    return s.splitlines()[0][:160] if s else type(e).__name__
