"""One part of a ``tokenskip compress`` job: stream the input rows, and for each block of CoTs score once,
prune to every ratio, count target tokens and append to the ratio files (:func:`run_shard`).

On a GPU the next block is scored while a host thread prunes and writes the previous one.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tokenskip.errors import UserError


class BlockWriter:
    """:class:`~tokenskip.data.jsonl.ResumableJsonlWriter` that appends a block of records with one
    write + fsync (per-record fsyncs dominate a fast scorer's run time). Recovery is the same: whole lines
    are done records; a half-written last line is cut on reopen and recomputed."""

    def __init__(self, path: Path) -> None:
        from tokenskip.data.jsonl import ResumableJsonlWriter

        self._writer = ResumableJsonlWriter(path)
        self.done = self._writer.done
        self.path = path

    def write_many(self, records: Sequence[dict]) -> None:
        lines = []
        for rec in records:
            rid = str(rec["id"])
            if rid not in self.done:
                lines.append(json.dumps(rec, ensure_ascii=False) + "\n")
                self.done.add(rid)
        self.write_lines(lines)

    def write_lines(self, lines: Sequence[str]) -> None:
        """Append finished JSONL lines (the caller has added their ids to ``done``)."""
        import os

        if lines:
            f = self._writer._f
            f.write("".join(lines))
            f.flush()
            os.fsync(f.fileno())

    def close(self) -> None:
        self._writer.close()


@dataclass
class Row:
    id: str
    question: Any
    answer: Any
    cot: str


def count_tokens(tokenizer: Any, texts: Sequence[str]) -> list[int]:
    """Target-model tokens of each text (no special tokens)."""
    if not texts:
        return []
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        encode = getattr(backend, "encode_batch_fast", backend.encode_batch)  # no offsets: ~2x faster
        return [len(e.ids) for e in encode(list(texts), add_special_tokens=False)]
    return [len(ids) for ids in tokenizer(list(texts), add_special_tokens=False)["input_ids"]]


def assign_costs(tokenizer: Any, scored: Sequence[Any]) -> list[int | None]:
    """Set each exact-mode scored text's per-word cost in target-model tokens (in place): one tokenizer
    call per text, each token counting for the word it starts in. Returns each text's token count (None for
    compat-mode results, which need no costs)."""
    from tokenskip.compressors.prune import ScoredText, costs_from_offsets

    idx = [i for i, s in enumerate(scored) if isinstance(s, ScoredText)]
    totals: list[int | None] = [None] * len(scored)
    if not idx:
        return totals
    texts = [scored[i].text for i in idx]
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        offsets = [e.offsets for e in backend.encode_batch(texts, add_special_tokens=False)]
    else:
        offsets = tokenizer(texts, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    for i, offs in zip(idx, offsets, strict=True):
        s = scored[i]
        starts = np.asarray(offs, dtype=np.int64).reshape(-1, 2)[:, 0]
        s.costs = costs_from_offsets(s.starts, s.ends, starts)
        totals[i] = len(starts)
    return totals


@dataclass
class BlockOutput:
    """A block of CoTs compressed to every ratio: ``texts[i][j]`` is CoT ``i`` at ratio ``j``, with its
    target-model token count ``compressed_tokens[i][j]``; ``original_tokens[i]`` counts CoT ``i``."""

    texts: list[list[str]]
    original_tokens: list[int]
    compressed_tokens: list[list[int]]


def finish_block(
    scored: Sequence[Any], tokenizer: Any, cots: Sequence[str], ratios: Sequence[float]
) -> BlockOutput:
    """Host side of a block: prune scored CoTs to every ratio and count the target tokens of the results.

    Exact-mode results (:class:`~tokenskip.compressors.prune.ScoredText`) are pruned by
    :func:`~tokenskip.compressors.calibrate.calibrate` against real target-token counts (which it returns,
    so nothing is counted twice); compat results are pruned by llmlingua's rule and counted once.
    """
    from tokenskip.compressors.calibrate import calibrate
    from tokenskip.compressors.prune import CompatScored, ScoredText, prune, prune_compat_many

    def count(texts: list[str]) -> list[int]:
        return count_tokens(tokenizer, texts)

    m = len(ratios)
    if scored and all(isinstance(s, ScoredText) for s in scored):
        totals = assign_costs(tokenizer, scored)
        original = [int(t) if len(s) else 0 for s, t in zip(scored, totals, strict=True)]
        empty = [i for i, s in enumerate(scored) if len(s) == 0 and cots[i]]
        for i, c in zip(empty, count([cots[i] for i in empty]), strict=True):
            original[i] = c  # text without words (whitespace only)
        texts, counts = calibrate(list(scored), list(ratios), count, original)
        return BlockOutput(texts, original, counts)
    texts = [prune_compat_many(s, ratios) if isinstance(s, CompatScored) else [prune(s, r) for r in ratios]
             for s in scored]  # fmt: skip
    flat = count([t for row in texts for t in row])
    counts = [flat[i * m : (i + 1) * m] for i in range(len(texts))]
    return BlockOutput(texts, count(list(cots)), counts)


def compress_block(scorer: Any, tokenizer: Any, cots: Sequence[str], ratios: Sequence[float]) -> BlockOutput:
    """Compress a block of CoTs to every ratio (score once, then :func:`finish_block`)."""
    if hasattr(scorer, "score"):
        return finish_block(scorer.score(list(cots)), tokenizer, cots, ratios)
    texts = [[scorer.compress(c, r) if c.strip() else "" for r in ratios] for c in cots]
    m = len(ratios)
    flat = count_tokens(tokenizer, [t for row in texts for t in row])
    counts = [flat[i * m : (i + 1) * m] for i in range(len(texts))]
    return BlockOutput(texts, count_tokens(tokenizer, list(cots)), counts)


def result_row(row: Row, ratio: float, compressed: str, original_tokens: int, compressed_tokens: int) -> dict:
    achieved = compressed_tokens / original_tokens if original_tokens else 1.0
    return {
        "id": row.id,
        "question": row.question,
        "answer": row.answer,
        "cot": row.cot,
        "compressed_cot": compressed,
        "ratio": ratio,
        "original_tokens": original_tokens,
        "compressed_tokens": compressed_tokens,
        "achieved_ratio": round(achieved, 6),
    }


# --------------------------------------------------------------------------------------------- input


def iter_rows(
    path: Path, field: str, on_error: str, stats: Any, rows: Iterable[tuple[int, dict]] | None = None
) -> Iterator[Row]:
    """Stream the input's rows as :class:`Row` (id defaults to ``<stem>-<line-1>``).

    Required per row: ``question`` (or MATH's ``problem``) as non-blank text, ``answer`` as non-blank text
    or a number, and ``field`` (the CoT) as a string -- an empty CoT is kept (compressed to ""). Anything
    else is a UserError naming file, line and field, or skipped and counted (``on_error="skip"``).
    ``rows``: numbered rows of one part of ``path`` (default: every row of it).
    """
    from tokenskip.data.inputs import locate, read_rows, require_fields

    seen: set[str] = set()
    if rows is None:
        rows = read_rows(path, on_error=on_error, stats=stats)  # type: ignore[arg-type]
    for lineno, obj in rows:
        rid = obj.get("id")
        rid = f"{path.stem}-{lineno - 1}" if rid in (None, "") else str(rid)
        qkey = "problem" if "problem" in obj and "question" not in obj else "question"
        try:
            require_fields(obj, text=[qkey], values=["answer"], strings=[field])
            if rid in seen:
                raise ValueError(f"duplicate id '{rid}'")
        except ValueError as e:
            msg = f"{locate(path, lineno)}: {e}"
            if on_error == "raise":
                raise UserError(msg) from None
            stats.add(msg)
            continue
        seen.add(rid)
        yield Row(rid, obj[qkey], obj["answer"], obj[field])


def check_rows(path: Path, field: str, on_error: str, limit: int | None) -> tuple[int, Any]:
    """Read every row the run will use once, before any model loads: bad input fails fast. Returns the
    number of usable rows (at most ``limit``) and the stats of skipped ones."""
    from tokenskip.data.jsonl import BadLineStats

    stats = BadLineStats()
    n = 0
    for _ in iter_rows(path, field, on_error, stats):
        n += 1
        if limit is not None and n >= limit:
            break
    if n == 0:
        first = f", first: {stats.skipped[0]}" if len(stats) else ""
        raise UserError(f"{path}: no usable rows ({len(stats)} malformed{first})")
    return n, stats


def run_shard(
    input_path: Path,
    out: Path,
    ratios: list[float],
    scorer_kwargs: dict,
    model: str,
    field: str,
    on_error: str,
    shard: tuple[int, int],
    batch_size: int,
    limit: int | None,
    progress: bool,
    skip_ids: set[str] | None = None,
    position: int = 0,
    overlap: bool | None = None,
    total_rows: int | None = None,
) -> dict:
    """Compress the rows of one shard (``index % N == K``) into ``out``; returns counters.

    ``overlap``: prune and write block ``b`` on a host thread while block ``b + 1`` is scored (default:
    when the scorer runs on CUDA; on a CPU the model already uses every core).
    """
    from tqdm import tqdm

    from tokenskip.compressors.compress import make_scorer, ratio_file
    from tokenskip.data.jsonl import BadLineStats
    from tokenskip.models import load_tokenizer

    writers = {r: BlockWriter(ratio_file(out, r)) for r in ratios}
    pool: ThreadPoolExecutor | None = None
    pending: Future | None = None
    try:
        done = set.intersection(*(w.done for w in writers.values()))
        if skip_ids:
            done |= skip_ids
        k, n_shards = shard
        total = total_rows or 0  # usable rows, counted by check_rows (limit applied)
        total = (total - k + n_shards - 1) // n_shards if n_shards > 1 else total
        bar = tqdm(
            total=total,
            initial=0,
            unit="cot",
            desc=f"compress[{k}]" if n_shards > 1 else "compress",
            disable=not progress,
            file=sys.stderr,
            position=position,
            dynamic_ncols=True,
        )
        tokenizer = load_tokenizer(model)
        scorer = None
        stats = BadLineStats()
        counts = {"written": 0, "skipped_done": 0}
        block: list[Row] = []

        def write(rows: list[Row], res: BlockOutput) -> None:
            for j, r in enumerate(ratios):
                writers[r].write_many(
                    [
                        result_row(
                            row, r, res.texts[i][j], res.original_tokens[i], res.compressed_tokens[i][j]
                        )
                        for i, row in enumerate(rows)
                    ]
                )
            counts["written"] += len(rows)
            bar.update(len(rows))

        def finish(rows: list[Row], scored: list) -> None:
            write(rows, finish_block(scored, tokenizer, [r.cot for r in rows], ratios))

        def flush() -> None:
            nonlocal scorer, pool, pending
            if not block:
                return
            if scorer is None:
                scorer = make_scorer(**scorer_kwargs)
                on_gpu = str(getattr(scorer, "device", "cpu")).startswith("cuda")
                if overlap or (overlap is None and on_gpu):
                    # prune and write block b on a host thread while the GPU scores block b + 1
                    pool = ThreadPoolExecutor(1, thread_name_prefix="tokenskip-prune")
            rows = list(block)
            block.clear()
            if not hasattr(scorer, "score"):  # the llmlingua backend: one call per CoT and ratio
                write(rows, compress_block(scorer, tokenizer, [r.cot for r in rows], ratios))
                return
            scored = scorer.score([r.cot for r in rows])
            if pool is None:
                finish(rows, scored)
                return
            if pending is not None:
                pending.result()
            pending = pool.submit(finish, rows, scored)

        for index, row in enumerate(iter_rows(input_path, field, on_error, stats)):
            if limit is not None and index >= limit:
                break
            if index % n_shards != k:
                continue
            if row.id in done:
                counts["skipped_done"] += 1
                bar.update(1)
                continue
            block.append(row)
            if len(block) >= batch_size:
                flush()
        flush()
        if pending is not None:
            pending.result()
            pending = None
        bar.close()
        counts["malformed_rows"] = len(stats)
        if scorer is not None and hasattr(scorer, "describe"):
            counts["scorer"] = scorer.describe()
        return counts
    finally:
        if pending is not None:
            pending.exception()  # let the host thread finish writing before the files close
        if pool is not None:
            pool.shutdown()
        for w in writers.values():
            w.close()
