"""The one resumable runner: records in, batches through a step function, JSONL records out.

Every verb that generates runs its methods through :class:`tokenskip.session.Session`, which calls
:func:`run_records`; scoring passes (``metareason score``) call it directly. It owns what each of them used to restate:

* the settings check: an existing ``out`` written with other settings (model, adapter, method, ...) is
  refused instead of mixed (:mod:`tokenskip.data.resume`);
* the screen: every remaining input is checked before the first step (e.g. prompt length against the
  model's context) and refused, or left out and counted;
* append + flush + fsync per record (:class:`~tokenskip.data.jsonl.ResumableJsonlWriter`): a killed job loses
  at most the batch in flight, and a half-written last line is cut on restart;
* skipping finished ids, the progress bar and the counts.

The step (usually :meth:`tokenskip.methods.base.Method.run_batch`) turns a batch of records into output rows
and sets their latency fields; the runner adds the run's settings to every row.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from tokenskip.data.jsonl import ResumableJsonlWriter
from tokenskip.data.resume import check_records
from tokenskip.errors import UserError

T = TypeVar("T")


@dataclass
class RunResult:
    """What a run did: the rows it wrote now, and counts (total, skipped = already done, generated, refused =
    inputs the screen left out, e.g. prompts longer than the model's context under ``--on_error skip``)."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    total: int = 0
    skipped: int = 0
    generated: int = 0
    refused: int = 0

    def counts(self) -> dict[str, int]:
        return {"total": self.total, "skipped": self.skipped, "generated": self.generated}


def check_settings(out: str | Path, settings: dict[str, Any]) -> None:
    """Refuse to append to a JSONL ``out`` whose records were written with other ``settings``
    (:func:`tokenskip.data.resume.check_records`)."""
    check_records(out, settings)


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
    screen: Callable[[list[T]], list[T]] | None = None,
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
        screen: checks the remaining inputs before any step runs and returns those to run (raises on one
            that cannot run, or leaves it out: counted as ``refused``).
    """
    from tqdm import tqdm

    if batch_size < 1:
        raise UserError(f"--batch_size must be >= 1, got {batch_size}")
    settings = settings or {}
    if out is not None:
        check_settings(out, settings)
    # an existing output is opened first (its finished ids are skipped); a new one only once the screen passed
    writer = ResumableJsonlWriter(out) if out is not None and Path(out).exists() else None
    done = writer.done if writer is not None else set()
    todo = [r for r in records if key(r) not in done]
    skipped = len(records) - len(todo)
    try:
        admitted = screen(todo) if screen is not None and todo else todo
        refused = len(todo) - len(admitted)
        todo = order(admitted) if order is not None and admitted else admitted
    except BaseException:
        if writer is not None:
            writer.close()
        raise
    if out is not None and writer is None:
        writer = ResumableJsonlWriter(out)
    result = RunResult(total=len(records), skipped=skipped, generated=len(todo), refused=refused)
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
