"""The one reader of user files: every verb that reads rows from a file reads them through here.

Formats, by file suffix (case-insensitive):

* ``.jsonl``: one JSON object per line; UTF-8 with or without a BOM; LF or CRLF line ends; blank lines
  are ignored. Rows are numbered by line.
* ``.json``: an array of objects, or an object holding one under ``"data"`` (or ``"examples"``); UTF-8,
  with or without a BOM. Rows are numbered 1, 2, ... in array order.
* ``.parquet``: read in record batches (memory stays flat). Rows are numbered 1, 2, ...
* ``.txt``: only where a verb asks for it (``infer``): one row per non-blank line, the line as
  ``{txt_field: line}``.

A problem with one row -- not valid UTF-8, not a JSON object, an unusable field -- is a
:class:`~tokenskip.errors.UserError` naming file, line (or row) and field with ``on_error="raise"``, or
with ``on_error="skip"`` the row is skipped and the message counted in a
:class:`~tokenskip.data.jsonl.BadLineStats`. A problem with the whole file (missing, empty, unknown
suffix, a ``.json`` that does not parse) is always a UserError.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from tokenskip.data.jsonl import BadLineStats, OnError, check_input_file
from tokenskip.errors import UserError

TABLE_SUFFIXES = (".jsonl", ".json", ".parquet")
LINE_SUFFIXES = (".jsonl", ".txt")  # rows numbered by line; the others by row
BOM = b"\xef\xbb\xbf"
_SURROGATE = re.compile("[\ud800-\udfff]")
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")  # a \udXXX escape in JSON text
_UTF8_HINT = "save the file as UTF-8"


def locate(path: str | os.PathLike, n: int) -> str:
    """``FILE:N`` for line-numbered files (.jsonl, .txt), ``FILE: row N`` for the others."""
    return f"{path}:{n}" if Path(str(path)).suffix.lower() in LINE_SUFFIXES else f"{path}: row {n}"


def read_rows(
    path: str | os.PathLike,
    on_error: OnError = "raise",
    stats: BadLineStats | None = None,
    txt_field: str | None = None,
) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(number, row)`` for every row of a ``.jsonl`` / ``.json`` / ``.parquet`` file (and ``.txt``
    when ``txt_field`` names the field each line goes to). See the module docstring for the rules."""
    p = check_input_file(path)
    suffix = p.suffix.lower()
    if suffix == ".jsonl":
        yield from read_jsonl_rows(p, on_error, stats)
    elif suffix == ".json":
        yield from _json_rows(p, on_error, stats)
    elif suffix == ".parquet":
        yield from _parquet_rows(p, on_error, stats)
    elif suffix == ".txt" and txt_field is not None:
        yield from _txt_rows(p, txt_field, on_error, stats)
    else:
        known = ", ".join(TABLE_SUFFIXES + ((".txt",) if txt_field else ()))
        raise UserError(f"{p}: unsupported file type '{p.suffix or '(none)'}' (use {known})")


def _reject(msg: str, on_error: OnError, stats: BadLineStats | None) -> None:
    if on_error == "raise":
        raise UserError(msg)
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
    """Rows of a JSON Lines file, whatever its suffix (BOM, CRLF and invalid UTF-8 handled).

    ``span``: ``(start, end, first_line)``: only the lines that start at byte offsets in ``[start, end)``,
    ``start`` being the start of line ``first_line`` (one part of a file read in parallel)."""
    start, end, first = span if span is not None else (0, None, 1)
    with path.open("rb") as f:
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
                _reject(msg, on_error, stats)
                continue
            if bad or _SURROGATE_ESCAPE.search(raw):
                found = bad_text_field(obj)
                if found is not None:
                    column = bad[1] if bad else None
                    problem = _unicode_problem(*found, bad is not None, column)
                    _reject(f"{path}:{lineno}: {problem}", on_error, stats)
                    continue
            yield lineno, obj


def _json_rows(
    path: Path, on_error: OnError, stats: BadLineStats | None
) -> Iterator[tuple[int, dict[str, Any]]]:
    raw = path.read_bytes()
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
            _reject(f"{path}: row {n}: expected a JSON object, got {type(row).__name__}", on_error, stats)
            continue
        found = bad_text_field(row) if check_text else None
        if found is not None:
            _reject(f"{path}: row {n}: {_unicode_problem(*found, bad_at is not None)}", on_error, stats)
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
    with path.open("rb") as f:
        for lineno, raw in enumerate(f, start=1):
            if lineno == 1 and raw.startswith(BOM):
                raw = raw[len(BOM) :]
            if not raw.strip():
                continue
            text, bad = _decode(raw)
            if bad:
                _reject(_bad_line(path, lineno, bad), on_error, stats)
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
