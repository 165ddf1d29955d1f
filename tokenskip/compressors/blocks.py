"""One part of a ``tokenskip compress`` job: stream the input rows, and for each block of CoTs score once,
prune to every ratio, count target tokens and append to the ratio files (:func:`run_shard`).

On a GPU the next block is scored while a host thread prunes and writes the previous one.
"""

from __future__ import annotations

import sys
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from tokenskip.compressors.finish import BlockOutput, assign_costs, compress_block, count_tokens, finish_block
from tokenskip.compressors.outputs import ratio_file
from tokenskip.compressors.registry import make_scorer
from tokenskip.compressors.rows import Row, check_rows, iter_rows, result_row
from tokenskip.compressors.thinking import ReadSpec
from tokenskip.data.inputs import BadLineStats
from tokenskip.data.jsonl import ResumableJsonlWriter

# the block helpers live in finish.py (pruning, counting) and rows.py (input); importable from here too
__all__ = [
    "BlockOutput",
    "Row",
    "assign_costs",
    "check_rows",
    "compress_block",
    "count_tokens",
    "finish_block",
    "iter_rows",
    "result_row",
    "run_shard",
]


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
    spec: ReadSpec | None = None,
) -> dict:
    """Compress the rows of one shard (``index % N == K``) into ``out``; returns counters.

    ``overlap``: prune and write block ``b`` on a host thread while block ``b + 1`` is scored (default:
    when the scorer runs on CUDA; on a CPU the model already uses every core).
    """
    from tqdm import tqdm

    from tokenskip.models import load_tokenizer

    writers = {r: ResumableJsonlWriter(ratio_file(out, r)) for r in ratios}
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
            write(rows, scorer.finish(scored, tokenizer, [r.text for r in rows], ratios))

        def flush() -> None:
            nonlocal scorer, pool, pending
            if not block:
                return
            if scorer is None:
                scorer = make_scorer(**scorer_kwargs)
                on_gpu = str(scorer.device).startswith("cuda")
                if overlap or (overlap is None and on_gpu):
                    # prune and write block b on a host thread while the GPU scores block b + 1
                    pool = ThreadPoolExecutor(1, thread_name_prefix="tokenskip-prune")
            rows = list(block)
            block.clear()
            scored = scorer.score([r.text for r in rows])
            if pool is None:
                finish(rows, scored)
                return
            if pending is not None:
                pending.result()
            pending = pool.submit(finish, rows, scored)

        for index, row in enumerate(iter_rows(input_path, field, on_error, stats, spec)):
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
        if scorer is not None:
            counts["scorer"] = scorer.describe()
        return counts
    finally:
        if pending is not None:
            pending.exception()  # let the host thread finish writing before the files close
        if pool is not None:
            pool.shutdown()
        for w in writers.values():
            w.close()
