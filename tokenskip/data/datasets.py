"""Dataset loaders: every source becomes a list of :class:`Record` (id, question, answer, optional cot).

Sources, by ``--dataset``:

* ``sample``: 16 grade-school problems bundled with tokenskip (offline quickstart).
* ``gsm8k`` / ``math500`` / ``gsm8k-zero``: a local copy under ``$TOKENSKIP_DATA_DIR/<name>/<split>.jsonl``
  when that variable is set, else the Hugging Face Hub (``openai/gsm8k``, ``HuggingFaceH4/MATH-500``).
* a path to a ``.jsonl`` / ``.json`` / ``.parquet`` file (or ``.jsonl.gz`` / ``.json.gz``). The format is
  detected per row: GSM8K HF (``question``, ``answer`` = "... #### 18"), pre-split GSM8K (``question``,
  ``cot``, ``answer``), MATH (``problem``, ``solution``, ``answer``), GSM8K-Zero (``question``, numeric
  ``answer``), or any columns renamed with ``column_map`` (e.g. ``{"question": "prompt", "answer": "target"}``).
* any other ``owner/name``: a hub dataset (needs network), read with ``column_map``.

Files are read by :func:`tokenskip.data.inputs.read_rows` (JSONL with or without BOM, LF or CRLF; a JSON
array; parquet; JSONL or JSON compressed with gzip). Required per row: ``question`` (or MATH's ``problem``)
as non-blank text, and ``answer`` as non-blank text or a number (or MATH's ``solution`` with a
``\boxed{}``); ``cot``, if present, is text (``require_cot``: non-blank text, for build-sft). A malformed row
(not valid UTF-8, not an object, a missing / null / empty required field, a duplicate id) raises a
UserError naming file, line and field, or with ``on_error="skip"`` is skipped and counted in the returned
stats -- never dropped silently.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

from tokenskip.data.inputs import BadLineStats, OnError, field_problem, locate, read_rows, reject, unwrapped
from tokenskip.errors import UserError
from tokenskip.grading import last_boxed

T = TypeVar("T")

SAMPLE_FILE = Path(__file__).parent / "samples" / "grade_school.jsonl"

HUB_DATASETS: dict[str, tuple[str, str | None]] = {
    "gsm8k": ("openai/gsm8k", "main"),
    "math500": ("HuggingFaceH4/MATH-500", None),
}
NAMED = ("sample", "gsm8k", "math500", "gsm8k-zero")


@dataclass
class Record:
    """One problem. ``task`` picks the grader: ``gsm8k`` (numeric) or ``math`` (LaTeX/symbolic). ``where`` is
    where it was read (``FILE:LINE``), for messages about it."""

    id: str
    question: str
    answer: str
    cot: str | None = None
    task: str = "gsm8k"
    where: str = field(default="", compare=False, repr=False)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _answer_to_str(value: Any) -> str:
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


def row_to_record(
    row: dict[str, Any],
    default_id: str,
    column_map: dict[str, str] | None = None,
    task: str | None = None,
    require_cot: bool = False,
    require_answer: bool = True,
) -> Record:
    """Map one raw row onto a Record; raise ValueError naming the unusable field if it cannot be mapped.

    With ``require_answer=False`` a row may hold only a question (``infer`` on bare questions): its Record
    has ``answer=""`` and is not graded.
    """
    if column_map:
        row = dict(row)
        for target, source in column_map.items():
            if source not in row:
                raise ValueError(f"column '{source}' (mapped to '{target}') is missing")
            row[target] = row[source]
    rid = str(row.get("id") if row.get("id") not in (None, "") else default_id)
    if "problem" in row and "question" not in row:  # MATH format
        qkey, rtask = "problem", task or "math"
        answer = row.get("answer")
        solution = row.get("solution")
        if (answer is None or str(answer).strip() == "") and isinstance(solution, str):
            answer = last_boxed(solution)
            if answer is None:
                raise ValueError("no 'answer', and no \\boxed{} answer in 'solution'")
        cot = row.get("cot", solution)
    else:
        qkey, rtask = "question", task or "gsm8k"
        answer = row.get("answer")
        cot = row.get("cot")
        if isinstance(answer, str) and "####" in answer and cot is None:  # GSM8K HF format
            cot_part, _, ans = answer.rpartition("####")
            cot, answer = cot_part.strip(), ans.strip().replace(",", "")
    fields = {qkey: row[qkey]} if qkey in row else {}
    if "answer" in row or answer is not None:
        fields["answer"] = answer
    if "cot" in row or cot is not None:
        fields["cot"] = cot
    checks = [(qkey, "text")]
    if require_answer or answer is not None and str(answer).strip() != "":
        checks.append(("answer", "value"))
    else:
        answer = ""
    if require_cot or cot is not None:  # an optional cot may be absent or null, never a non-string
        checks.append(("cot", "text" if require_cot else "string"))
    for name, kind in checks:
        problem = field_problem(fields, name, kind)
        if problem:
            raise ValueError(problem)
    return Record(id=rid, question=fields[qkey].strip(), answer=_answer_to_str(answer), cot=cot, task=rtask)


def _hub_rows(name: str, config: str | None, split: str):
    try:
        import datasets
    except ImportError as e:  # pragma: no cover - datasets is a core dependency
        raise UserError(f"the 'datasets' package is required for hub datasets: {e}") from None
    try:
        ds = datasets.load_dataset(name, config, split=split)
    except Exception as e:  # offline, unknown name, unknown split: all user-facing
        first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise UserError(
            f"could not load hub dataset '{name}' split '{split}': {first} "
            "(offline? pass a local file, or set TOKENSKIP_DATA_DIR)"
        ) from None
    for i, row in enumerate(ds):
        yield i + 1, row


def collect_rows(
    rows: Iterable[tuple[int, dict[str, Any]]],
    where: str,
    convert: Callable[[int, dict[str, Any]], T],
    key: Callable[[T], str],
    on_error: OnError,
    stats: BadLineStats,
    limit: int | None = None,
) -> list[T]:
    """Convert ``(lineno, row)`` pairs, rejecting rows ``convert`` raises ValueError on and duplicate ids.

    A rejected row raises a UserError naming ``where`` and its line, or (``on_error="skip"``) is counted in
    ``stats``. Stops after ``limit`` items; an empty result is a UserError.
    """
    items: list[T] = []
    seen: set[str] = set()
    for lineno, row in rows:
        try:
            item = convert(lineno, row)
            if key(item) in seen:
                raise ValueError(f"duplicate id '{key(item)}'")
        except ValueError as e:
            reject(f"{locate(where, lineno)}: malformed row ({e})", on_error, stats)
            continue
        seen.add(key(item))
        items.append(item)
        if limit is not None and len(items) >= limit:
            break
    if not items:
        raise UserError(f"{where}: no usable rows" + (f" ({len(stats)} malformed)" if len(stats) else ""))
    return items


def load_records(
    dataset: str,
    split: str = "test",
    column_map: dict[str, str] | None = None,
    on_error: OnError = "raise",
    limit: int | None = None,
    task: str | None = None,
    require_cot: bool = False,
    require_answer: bool = True,
) -> tuple[list[Record], BadLineStats]:
    """Load ``dataset`` as Records. Returns the records and the stats of skipped malformed rows.

    ``require_cot``: a row without a non-blank ``cot`` (or GSM8K ``####`` / MATH ``solution`` one) is
    malformed, as for build-sft, which trains on it. ``require_answer=False`` also accepts rows with only a
    question (and ``.txt`` files, one question per line), as infer does."""
    if limit is not None and limit < 1:
        raise UserError(f"--limit must be >= 1, got {limit}")
    if task is not None and task not in ("gsm8k", "math"):
        raise UserError(f"--task must be 'gsm8k' or 'math', got '{task}'")
    stats = BadLineStats()
    name = dataset.strip()
    if not name:
        raise UserError("--dataset is empty")
    local = Path(name).expanduser()
    stem = unwrapped(local).stem  # data.jsonl.gz: the ids of data.jsonl
    prefix = f"{local.parent.name}-{stem}" if local.parent.name else stem
    if name == "sample":
        rows, where, prefix = read_rows(SAMPLE_FILE, on_error, stats), str(SAMPLE_FILE), "sample"
    elif name in NAMED:
        data_dir = os.environ.get("TOKENSKIP_DATA_DIR")
        candidate = Path(data_dir) / name.replace("-", "_") / f"{split}.jsonl" if data_dir else None
        prefix = f"{name}-{split}"
        if candidate is not None and candidate.exists():
            rows, where = read_rows(candidate, on_error, stats), str(candidate)
        elif name in HUB_DATASETS:
            hub, config = HUB_DATASETS[name]
            rows, where = _hub_rows(hub, config, split), hub
        else:
            raise UserError(
                f"dataset '{name}' has no hub copy: pass its file path, or set TOKENSKIP_DATA_DIR"
            )
    elif local.exists() or unwrapped(local).suffix.lower() in (".jsonl", ".json", ".parquet", ".txt"):
        rows, where = read_rows(local, on_error, stats, txt_field="question"), str(local)
    elif "/" in name:
        rows, where, prefix = _hub_rows(name, None, split), name, name.split("/")[-1]
    else:
        raise UserError(f"unknown dataset '{name}': use one of {', '.join(NAMED)}, a file path, or a hub id")

    records = collect_rows(
        rows,
        where,
        lambda lineno, row: replace(
            row_to_record(row, f"{prefix}-{lineno - 1}", column_map, task, require_cot, require_answer),
            where=locate(where, lineno),
        ),
        lambda rec: rec.id,
        on_error,
        stats,
        limit,
    )
    return records, stats
