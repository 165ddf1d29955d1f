"""The one resumable runner: records in, batches through a step function, JSONL records out.

Every verb that generates (``generate``, ``infer``, ``bench``, ``tale estimate``/``run``/``search``,
``metareason``) is a configuration of :func:`run_records`. It owns what each of them used to restate:

* the settings check: an existing ``out`` written with other settings (model, adapter, method, ...) is
  refused instead of mixed (:func:`check_settings`);
* append + flush + fsync per record (:class:`~tokenskip.data.jsonl.ResumableJsonlWriter`): a killed job loses
  at most the batch in flight, and a half-written last line is cut on restart;
* skipping finished ids, the progress bar and the counts.

The step (usually :meth:`tokenskip.methods.base.Method.run_batch`) turns a batch of records into output rows
and sets their latency fields; the runner adds the run's settings to every row.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from tokenskip.data.jsonl import ResumableJsonlWriter
from tokenskip.errors import UserError

T = TypeVar("T")


@dataclass
class RunResult:
    """What a run did: the rows it wrote now, and counts (total, skipped = already done, generated)."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    total: int = 0
    skipped: int = 0
    generated: int = 0

    def counts(self) -> dict[str, int]:
        return {"total": self.total, "skipped": self.skipped, "generated": self.generated}


def settings_conflict(
    old: dict[str, Any], new: dict[str, Any], keys: Sequence[str] | None = None
) -> str | None:
    """``"key: old -> new, ..."`` for the settings that differ (only keys both sides have), else None."""
    names = list(keys) if keys is not None else list(new)
    diff = [k for k in names if k in old and k in new and old[k] != new[k]]
    return ", ".join(f"{k}: {old[k]!r} -> {new[k]!r}" for k in diff) or None


def check_same_settings(
    where: str | Path, old: dict[str, Any], new: dict[str, Any], keys: Sequence[str] | None = None
) -> None:
    """Refuse to continue a run in ``where`` that was started with other settings (one message everywhere)."""
    conflict = settings_conflict(old, new, keys)
    if conflict:
        raise UserError(
            f"{where} was written with other settings ({conflict}); re-run with the same settings to "
            "resume, or pick another --out"
        )


def check_settings(out: str | Path, settings: dict[str, Any]) -> None:
    """Refuse to append to a JSONL ``out`` whose first record was written with different ``settings``."""
    p = Path(out)
    if not p.exists() or p.stat().st_size == 0:
        return
    with p.open("r", encoding="utf-8", errors="replace") as f:
        first = f.readline()
    try:
        rec = json.loads(first)
    except ValueError:
        return  # a half-written single line: the writer cuts it
    if isinstance(rec, dict):
        check_same_settings(p, rec, settings)


def run_records(
    records: Sequence[T],
    step: Callable[[list[T]], list[dict[str, Any]]],
    out: str | Path | None,
    batch_size: int,
    settings: dict[str, Any] | None = None,
    key: Callable[[T], str] = lambda r: str(r.id),  # type: ignore[attr-defined]
    order: Callable[[list[T]], list[T]] | None = None,
    desc: str = "generate",
    progress: bool = True,
) -> RunResult:
    """Run ``step`` over the records not yet in ``out`` and append each row as it finishes.

    Args:
        records: the inputs (anything with an id; ``key`` reads it).
        step: a batch of inputs -> one output row each (with an ``id`` equal to ``key(input)``).
        out: JSONL file (resumed when it exists), or None to keep the rows in memory only.
        batch_size: inputs per step call (and per flush).
        settings: fields that identify the run; written into every row and checked against ``out``.
        order: reorders the remaining inputs before batching (e.g. similar lengths together).
        desc: progress-bar label.
        progress: show a progress bar.
    """
    from tqdm import tqdm

    if batch_size < 1:
        raise UserError(f"--batch_size must be >= 1, got {batch_size}")
    settings = settings or {}
    if out is not None:
        check_settings(out, settings)
    writer = ResumableJsonlWriter(out) if out is not None else None
    done = writer.done if writer is not None else set()
    todo = [r for r in records if key(r) not in done]
    if order is not None:
        todo = order(todo)
    result = RunResult(total=len(records), skipped=len(records) - len(todo), generated=len(todo))
    bar = tqdm(total=len(records), initial=result.skipped, desc=desc, unit="q", disable=not progress)
    try:
        for start in range(0, len(todo), batch_size):
            batch = todo[start : start + batch_size]
            rows = step(batch)
            if len(rows) != len(batch):
                raise RuntimeError(f"step returned {len(rows)} rows for {len(batch)} inputs")
            for row in rows:
                row.update(settings)
                if writer is not None:
                    writer.write(row)
                result.rows.append(row)
            bar.update(len(batch))
    finally:
        bar.close()
        if writer is not None:
            writer.close()
    return result
