"""``tokenskip compress --engine ray``: the compress job as a Ray Data pipeline, for many GPUs on many nodes.

::

    read_datasource(InputRows)      the input split into parts (line ranges of a .jsonl, row groups of a
                                    .parquet), each part read on the cluster by tokenskip's own reader
    -> limit(N)                     --limit: the first N usable rows
    -> map_batches(Compressor,      one scorer per actor: an actor pool of --ray_workers actors, num_gpus = 1
                   compute, num_gpus)      each on a GPU cluster: score a batch once, prune it to every γ, count
                                    target tokens and render each ratio's JSONL line
    -> iter_batches (in order)      the driver appends each ratio's lines to OUT/compressed_<γ>.jsonl

The output folder is the local engine's: the same ratio files, byte for byte (same reader, ids, scorer,
pruning and JSON rendering; ``preserve_order`` keeps the input order), ``compress_config.json`` and
``summary.json``. One writer per ratio (the resumable :class:`~tokenskip.data.jsonl.ResumableJsonlWriter`, on the driver):
a killed job is resumed by the same command, which skips the ids already in every ratio file before
anything is scored. Rows are checked before Ray starts (see ``compress``): a bad row is a one-line error.

Why not ``ray.data.read_json``/``read_parquet``: they lose the line numbers that give id-less rows their ids
(``<stem>-<line - 1>``) and name a bad row, and Arrow's JSON reader retypes values (``"answer": 18`` vs
``"18"``, mixed types fail); the datasource below reads the same files in parallel parts with exact values.
The input must be a path every node can read (a shared filesystem or a mounted bucket); the driver writes OUT.
"""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path
from typing import Any

from tokenskip.compressors.blocks import Row, compress_block, iter_rows, result_row
from tokenskip.compressors.outputs import ratio_file
from tokenskip.compressors.registry import scorer_class
from tokenskip.compressors.thinking import ReadSpec, ThinkSplit
from tokenskip.data.jsonl import ResumableJsonlWriter
from tokenskip.errors import UserError

PART_BYTES = 32 << 20  # a .jsonl part is at least this large (fewer, longer read tasks)


# --------------------------------------------------------------------------------------- the input parts


def jsonl_spans(path: Path, parts: int, min_bytes: int = PART_BYTES) -> list[tuple[int, int, int]]:
    """Split a .jsonl file into at most ``parts`` line-aligned byte ranges ``(start, end, first_line)``."""
    size = path.stat().st_size
    n = max(1, min(parts, size // max(min_bytes, 1)))
    starts = [0]
    with path.open("rb") as f:
        for k in range(1, n):
            f.seek(max(size * k // n, starts[-1]))
            if f.tell() > 0:
                f.seek(f.tell() - 1)
                f.readline()  # to the start of the next line
            if f.tell() < size and f.tell() > starts[-1]:
                starts.append(f.tell())
        spans, line = [], 1
        for a, b in zip(starts, starts[1:] + [size], strict=True):
            spans.append((a, b, line))
            f.seek(a)
            line += f.read(b - a).count(b"\n")
    return spans


def parquet_spans(path: Path, parts: int) -> list[tuple[list[int], int]]:
    """Split a .parquet file's row groups into at most ``parts`` runs ``(row groups, first row number)``."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        meta = pq.ParquetFile(path).metadata
    except (OSError, ValueError, pa.ArrowException) as e:
        raise UserError(f"{path}: cannot read parquet ({str(e).splitlines()[0][:160]})") from None
    groups = list(range(meta.num_row_groups))
    n = max(1, min(parts, len(groups)))
    out, first = [], 1
    for k in range(n):
        run = groups[k * len(groups) // n : (k + 1) * len(groups) // n]
        out.append((run, first))
        first += sum(meta.row_group(g).num_rows for g in run)
    return out


def numbered_rows(path: Path, part: Any, on_error: str) -> Any:
    """The numbered raw rows of one part (for :func:`iter_rows`)."""
    from tokenskip.data.inputs import read_jsonl_rows, read_rows

    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        return read_jsonl_rows(path, on_error, None, span=part)  # type: ignore[arg-type]
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        groups, first = part
        table = pq.ParquetFile(path).read_row_groups(groups) if groups else None
        return enumerate(table.to_pylist() if table is not None else [], start=first)
    return read_rows(path, on_error=on_error)  # type: ignore[arg-type]  # .json: one part


def read_part(
    path: Path, part: Any, field: str, on_error: str, done: Any, spec: ReadSpec | None
) -> list[Any]:
    """One read task: the part's usable rows as an Arrow block (id, done, row = JSON [question, answer, cot,
    thinking split or null, picked fields or null])."""
    import pyarrow as pa
    import ray

    from tokenskip.data.jsonl import BadLineStats

    done_ids = ray.get(done) if isinstance(done, ray.ObjectRef) else done
    ids, flags, payload = [], [], []
    for row in iter_rows(
        path, field, on_error, BadLineStats(), spec, None, numbered_rows(path, part, on_error)
    ):
        ids.append(row.id)
        flags.append(row.id in done_ids)
        split = (
            None if row.part is None else [row.part.head, row.part.thinking, row.part.tail, row.part.closed]
        )
        payload.append(
            ""
            if flags[-1]
            else json.dumps([row.question, row.answer, row.cot, split, row.fields], ensure_ascii=False)
        )
    return [pa.table({"id": pa.array(ids, pa.string()), "done": pa.array(flags, pa.bool_()),
                      "row": pa.array(payload, pa.large_string())})]  # fmt: skip


def input_datasource(path: Path, field: str, on_error: str, done: Any, spec: ReadSpec | None) -> Any:
    """A Ray ``Datasource`` over the input file's parts."""
    from ray.data.block import BlockMetadata
    from ray.data.datasource import Datasource, ReadTask

    class InputRows(Datasource):
        def get_name(self) -> str:
            return "TokenskipInput"

        def estimate_inmemory_data_size(self) -> int:
            return path.stat().st_size

        def get_read_tasks(self, parallelism: int, per_task_row_limit: int | None = None, data_context=None):
            suffix = path.suffix.lower()
            if suffix == ".jsonl":
                parts: list[Any] = jsonl_spans(path, max(parallelism, 1))
            elif suffix == ".parquet":
                parts = parquet_spans(path, max(parallelism, 1))
            else:
                parts = [None]
            return [
                ReadTask(
                    functools.partial(read_part, path, part, field, on_error, done, spec),
                    BlockMetadata(num_rows=None, size_bytes=None, input_files=[str(path)], exec_stats=None),
                    per_task_row_limit=per_task_row_limit,
                )
                for part in parts
            ]

    return InputRows()


# ------------------------------------------------------------------------------------------- the scorer


class Compressor:
    """The ``map_batches`` actor: one scorer (and target tokenizer) per actor, loaded once."""

    def __init__(self, scorer_kwargs: dict, model: str, ratios: list[float], threads: int | None) -> None:
        import os

        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        if threads:
            import torch

            torch.set_num_threads(threads)
        from tokenskip.compressors.registry import make_scorer
        from tokenskip.models import load_tokenizer

        self.scorer = make_scorer(**scorer_kwargs)
        self.tokenizer = load_tokenizer(model)
        self.ratios = ratios

    def __call__(self, batch: dict[str, Any]) -> dict[str, list]:
        ids = [str(i) for i in batch["id"]]
        todo = [i for i, d in enumerate(batch["done"]) if not d]
        rows = []
        for i in todo:
            question, answer, cot, split, fields = json.loads(batch["row"][i])
            rows.append(Row(ids[i], question, answer, cot, ThinkSplit(*split) if split else None, fields))
        res = (  # a text with think tags: only its thinking is scored, pruned and counted
            compress_block(self.scorer, self.tokenizer, [r.text for r in rows], self.ratios) if rows else None
        )
        out: dict[str, list] = {"id": ids, "done": [bool(d) for d in batch["done"]]}
        for j, ratio in enumerate(self.ratios):
            lines = [""] * len(ids)
            for k, (i, row) in enumerate(zip(todo, rows, strict=True)):
                rec = result_row(
                    row, ratio, res.texts[k][j], res.original_tokens[k], res.compressed_tokens[k][j]
                )
                lines[i] = json.dumps(rec, ensure_ascii=False) + "\n"
            out[f"line_{j}"] = lines
        if hasattr(self.scorer, "describe"):
            out["scorer"] = [json.dumps(self.scorer.describe())] * len(ids)
        return out


# ------------------------------------------------------------------------------------------- the driver


def check_engine(engine: str, split: str | None, ray_workers: int | None) -> None:
    """The engine options of ``compress`` (``split``: its ``--shard`` or ``--devices``, if any)."""
    if engine not in ("local", "ray"):
        raise UserError(f"--engine must be 'local' or 'ray', got '{engine}'")
    if engine == "ray" and split:
        raise UserError("--engine ray spreads the work over the Ray cluster: drop --shard and --devices")
    if ray_workers is not None and (engine != "ray" or ray_workers < 1):
        raise UserError("--ray_workers is the number of Ray scorer actors: >= 1, with --engine ray")


def _user_error(e: BaseException) -> str | None:
    """The message of a UserError raised on the cluster (a scorer that could not load, ...), if any: an
    actor that died in ``__init__`` keeps only the text of the error's traceback."""
    import re

    seen, chain = set(), e
    while chain is not None and id(chain) not in seen:
        seen.add(id(chain))
        if isinstance(chain, UserError):
            return str(chain).splitlines()[0]
        cause = getattr(chain, "cause", None)
        chain = cause if isinstance(cause, BaseException) else chain.__cause__
    found = re.findall(r"tokenskip\.errors\.UserError: (.+)", str(e))
    return found[-1].strip() if found else None


def start_ray() -> bool:
    """Join the cluster of ``RAY_ADDRESS`` (or the one this process already joined), else start a local
    runtime; True when this call started or joined it (the caller shuts it down)."""
    import logging

    import ray
    import ray.data  # configures its loggers on import: quieten them after

    logging.getLogger("ray.data").setLevel(logging.WARNING)  # no per-dataset execution plans on stderr
    if ray.is_initialized():
        return False
    ray.init(logging_level=logging.WARNING, include_dashboard=False, log_to_driver=False)
    return True


def run_ray(
    out: Path,
    scorer_kwargs: dict,
    progress: bool,
    workers: int | None,
    *,
    input_path: Path,
    ratios: list[float],
    model: str,
    field: str,
    on_error: str,
    batch_size: int,
    limit: int | None,
    total_rows: int | None = None,
    spec: ReadSpec | None = None,
) -> dict:
    """Compress ``input_path`` into ``out`` on Ray; returns counters like the local engine's ``run_shard``
    (the keyword arguments are those of ``run_shard``)."""
    try:
        import ray
    except ImportError:
        raise UserError("--engine ray needs Ray: pip install 'tokenskip[ray]'") from None
    from tqdm import tqdm

    started = start_ray()
    writers = {r: ResumableJsonlWriter(ratio_file(out, r)) for r in ratios}
    counts: dict[str, Any] = {"written": 0, "skipped_done": 0}
    try:
        ctx = ray.data.DataContext.get_current()
        ctx.execution_options.preserve_order = True  # the ratio files keep the input order
        ctx.enable_progress_bars = False
        device = str(scorer_kwargs.get("device", "auto"))
        # a scorer that runs a model declares the device option (tokenskip.compressors.registry)
        on_gpu = "device" in scorer_class(scorer_kwargs["scorer"]).options and device != "cpu"
        gpus = int(ray.cluster_resources().get("GPU", 0)) if on_gpu else 0
        if device.startswith("cuda") and gpus == 0:
            raise UserError(f"--device {device}: the Ray cluster has no GPU")
        n_workers = workers or max(gpus, 1)
        done = set.intersection(*(w.done for w in writers.values()))
        # reading is light: it takes no CPU slot, so that scorer actors on every CPU do not starve it
        ds = ray.data.read_datasource(
            input_datasource(input_path, field, on_error, ray.put(done), spec), num_cpus=0
        )
        if limit is not None:
            ds = ds.limit(limit)
        ds = ds.map_batches(
            Compressor,
            fn_constructor_kwargs={
                "scorer_kwargs": {**scorer_kwargs, "device": "auto" if gpus else "cpu"},
                "model": model,
                "ratios": ratios,
                "threads": None if gpus else 1,
            },
            batch_size=batch_size,
            compute=ray.data.ActorPoolStrategy(size=n_workers),  # (`concurrency=n` is deprecated)
            num_gpus=1 if gpus else 0,
            num_cpus=1,
        )
        bar = tqdm(total=total_rows, unit="cot", desc="compress[ray]", disable=not progress, file=sys.stderr)
        try:
            for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
                n_done = _write(batch, ratios, writers)
                counts["written"] += len(batch["id"]) - n_done
                counts["skipped_done"] += n_done
                if "scorer" in batch and len(batch["scorer"]):
                    counts["scorer"] = json.loads(batch["scorer"][0])
                bar.update(len(batch["id"]))
        except Exception as e:
            message = _user_error(e)
            if message is not None:
                raise UserError(message) from None
            raise
        bar.close()
        counts["workers"] = n_workers
        counts["gpus_per_worker"] = 1 if gpus else 0
        return counts
    finally:
        for w in writers.values():
            w.close()
        if started:
            ray.shutdown()


def _write(batch: dict[str, Any], ratios: list[float], writers: dict[float, ResumableJsonlWriter]) -> int:
    """Append one result batch to every ratio file (rows already there are skipped); returns the number of
    rows that were done before this run."""
    ids, flags = batch["id"], batch["done"]
    for j, ratio in enumerate(ratios):
        w, lines = writers[ratio], []
        for i, rid in enumerate(ids):
            rid = str(rid)
            if not flags[i] and rid not in w.done:
                lines.append(batch[f"line_{j}"][i])
                w.done.add(rid)
        w.write_lines(lines)
    return int(sum(bool(f) for f in flags))
