"""``tokenskip compress``: prune every CoT of a file to each ratio γ from one scoring pass.

Checks every input row first (:func:`check_rows`, before any model loads), then reads the input as a
stream (memory stays flat in the dataset size; .jsonl / .json / .parquet via
:func:`tokenskip.data.inputs.read_rows`), scores blocks of CoTs with the chosen
scorer, prunes each scored CoT to every ratio, and appends one line per record to ``compressed_<γ>.jsonl``
(flushed and fsynced per record). Re-running the same command after a crash or Ctrl-C skips the records
already written to every ratio file and finishes the rest: nothing is lost or written twice.
``summary.json`` (mean achieved ratio per γ) is written at the end.

The ratio γ is the share of the CoT's *target-model* tokens that is kept (``--model``'s tokenizer):
``achieved_ratio = compressed_tokens / original_tokens``.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tokenskip.errors import UserError

SCORERS = ("llmlingua2", "selfinfo", "random", "truncation", "llmlingua")
DEFAULT_RATIOS = "0.9,0.8,0.7,0.6,0.5"
CONFIG_FILE = "compress_config.json"
SUMMARY_FILE = "summary.json"


# ------------------------------------------------------------------------------------------- options


def parse_ratios(ratios: str | float | Sequence[float]) -> list[float]:
    """``"0.9,0.8"`` (or a list) -> ``[0.9, 0.8]``; every γ must be in (0, 1]."""
    from tokenskip.data.prompts import check_ratio

    if isinstance(ratios, int | float):
        items: list[Any] = [ratios]
    elif isinstance(ratios, str):
        items = [x.strip() for x in ratios.split(",") if x.strip()]
    else:
        items = list(ratios)
    if not items:
        raise UserError("--ratios is empty (example: --ratios 0.9,0.8,0.7,0.6,0.5)")
    out: list[float] = []
    for item in items:
        value = check_ratio(item)
        if value not in out:
            out.append(value)
    return out


def parse_shard(shard: str | None) -> tuple[int, int]:
    """``"K/N"`` -> ``(K, N)`` with ``0 <= K < N``; ``None`` -> ``(0, 1)``."""
    if shard is None or str(shard).strip() == "":
        return 0, 1
    try:
        k, n = (int(x) for x in str(shard).split("/"))
    except ValueError:
        raise UserError(f"--shard must look like K/N (e.g. 0/4), got '{shard}'") from None
    if n < 1 or not 0 <= k < n:
        raise UserError(f"--shard {shard}: need 0 <= K < N")
    return k, n


def ratio_file(out: Path, ratio: float) -> Path:
    from tokenskip.data.prompts import format_ratio

    return out / f"compressed_{format_ratio(ratio)}.jsonl"


def make_scorer(
    scorer: str = "selfinfo",
    checkpoint: str | None = None,
    mode: str = "exact",
    force_tokens: Sequence[str] = (),
    keep_digits: bool = False,
    drop_consecutive: bool = False,
    device: str = "auto",
    dtype: str = "auto",
    max_batch_tokens: int | None = None,
    seed: int = 0,
) -> Any:
    """Build a scorer by name (``llmlingua`` gives the slow llmlingua reference backend)."""
    if scorer not in SCORERS:
        raise UserError(f"unknown --scorer '{scorer}' (one of: {', '.join(SCORERS)})")
    if scorer == "llmlingua2":
        from tokenskip.compressors.llmlingua2 import DEFAULT_CHECKPOINT, LLMLingua2Scorer

        kwargs = {"max_batch_tokens": max_batch_tokens} if max_batch_tokens else {}
        return LLMLingua2Scorer(
            checkpoint or DEFAULT_CHECKPOINT,
            mode=mode,
            force_tokens=force_tokens,
            keep_digits=keep_digits,
            drop_consecutive=drop_consecutive,
            device=device,
            dtype=dtype,
            **kwargs,
        )
    if scorer == "llmlingua":
        from tokenskip.compressors.llmlingua2 import DEFAULT_CHECKPOINT, LLMLinguaReference

        return LLMLinguaReference(
            checkpoint or DEFAULT_CHECKPOINT, force_tokens, keep_digits, drop_consecutive, device=device
        )
    if scorer == "selfinfo":
        from tokenskip.compressors.selfinfo import SelfInfoScorer
        from tokenskip.models import DEFAULT_MODEL

        kwargs = {"max_batch_tokens": max_batch_tokens} if max_batch_tokens else {}
        return SelfInfoScorer(checkpoint or DEFAULT_MODEL, device=device, dtype=dtype, force_tokens=force_tokens,
                              keep_digits=keep_digits, drop_consecutive=drop_consecutive, **kwargs)  # fmt: skip
    if scorer == "random":
        from tokenskip.compressors.baselines import RandomScorer

        return RandomScorer(seed=seed)
    from tokenskip.compressors.baselines import TruncationScorer

    return TruncationScorer()


# ------------------------------------------------------------------------------------ one block of CoTs


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
        import os

        lines = []
        for rec in records:
            rid = str(rec["id"])
            if rid not in self.done:
                lines.append(json.dumps(rec, ensure_ascii=False) + "\n")
                self.done.add(rid)
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
        return [len(e.ids) for e in backend.encode_batch(list(texts), add_special_tokens=False)]
    return [len(ids) for ids in tokenizer(list(texts), add_special_tokens=False)["input_ids"]]


def assign_costs(tokenizer: Any, scored: Sequence[Any]) -> None:
    """Set each exact-mode scored text's per-word cost in target-model tokens (in place)."""
    from tokenskip.compressors.prune import ScoredText, costs_from_offsets

    exact = [s for s in scored if isinstance(s, ScoredText)]
    if not exact:
        return
    enc = tokenizer([s.text for s in exact], add_special_tokens=False, return_offsets_mapping=True)
    for s, offs in zip(exact, enc["offset_mapping"], strict=True):
        starts = np.asarray(offs, dtype=np.int64).reshape(-1, 2)[:, 0]
        s.costs = costs_from_offsets(s.starts, s.ends, starts)


def compress_block(
    scorer: Any, tokenizer: Any, cots: Sequence[str], ratios: Sequence[float]
) -> list[list[str]]:
    """Compressed text of every CoT at every ratio: ``out[i][j]`` = ``cots[i]`` at ``ratios[j]``."""
    from tokenskip.compressors.prune import ScoredText, prune, prune_calibrated

    if hasattr(scorer, "score"):
        scored = scorer.score(list(cots))
        assign_costs(tokenizer, scored)
        if scored and all(isinstance(s, ScoredText) for s in scored):
            return prune_calibrated(scored, list(ratios), lambda texts: count_tokens(tokenizer, texts))
        return [[prune(s, r) for r in ratios] for s in scored]
    return [[scorer.compress(c, r) if c.strip() else "" for r in ratios] for c in cots]


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


def iter_rows(path: Path, field: str, on_error: str, stats: Any) -> Iterator[Row]:
    """Stream the input's rows as :class:`Row` (id defaults to ``<stem>-<line-1>``).

    Required per row: ``question`` (or MATH's ``problem``) as non-blank text, ``answer`` as non-blank text
    or a number, and ``field`` (the CoT) as a string -- an empty CoT is kept (compressed to ""). Anything
    else is a UserError naming file, line and field, or skipped and counted (``on_error="skip"``).
    """
    from tokenskip.data.inputs import locate, read_rows, require_fields

    seen: set[str] = set()
    for lineno, obj in read_rows(path, on_error=on_error, stats=stats):  # type: ignore[arg-type]
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


def read_ids(path: Path) -> set[str]:
    """Ids already written to a ratio file (tolerates a half-written last line)."""
    ids: set[str] = set()
    if not path.exists():
        return ids
    with path.open("r", encoding="utf-8") as f:
        for line in f:
            try:
                ids.add(str(json.loads(line)["id"]))
            except (ValueError, KeyError, TypeError):
                continue
    return ids


# ------------------------------------------------------------------------------------------ the job


def _check_config(out: Path, config: dict) -> None:
    from tokenskip.data.jsonl import write_json_atomic

    path = out / CONFIG_FILE
    keys = (
        "scorer",
        "checkpoint",
        "mode",
        "model",
        "field",
        "force_tokens",
        "keep_digits",
        "drop_consecutive",
        "seed",
    )
    if path.exists():
        try:
            old = json.loads(path.read_text(encoding="utf-8"))
        except ValueError:
            old = {}
        diff = [k for k in keys if k in old and old.get(k) != config.get(k)]
        if diff:
            raise UserError(
                f"{out} holds a run with other settings ({', '.join(f'{k}={old[k]!r}' for k in diff)}); "
                "use another --out to compress with new settings"
            )
    write_json_atomic(path, config)


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
    total_rows: int | None = None,
) -> dict:
    """Compress the rows of one shard (``index % N == K``) into ``out``; returns counters."""
    from tqdm import tqdm

    from tokenskip.data.jsonl import BadLineStats
    from tokenskip.models import load_tokenizer

    writers = {r: BlockWriter(ratio_file(out, r)) for r in ratios}
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

        def flush() -> None:
            nonlocal scorer
            if not block:
                return
            if scorer is None:
                scorer = make_scorer(**scorer_kwargs)
            cots = [r.cot for r in block]
            outputs = compress_block(scorer, tokenizer, cots, ratios)
            original = count_tokens(tokenizer, cots)
            compressed_counts = [count_tokens(tokenizer, [o[j] for o in outputs]) for j in range(len(ratios))]
            for j, r in enumerate(ratios):
                writers[r].write_many(
                    [
                        result_row(row, r, outputs[i][j], original[i], compressed_counts[j][i])
                        for i, row in enumerate(block)
                    ]
                )
            counts["written"] += len(block)
            bar.update(len(block))
            block.clear()

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
        bar.close()
        counts["malformed_rows"] = len(stats)
        if scorer is not None and hasattr(scorer, "describe"):
            counts["scorer"] = scorer.describe()
        return counts
    finally:
        for w in writers.values():
            w.close()


def _worker(kwargs: dict) -> dict:
    import os

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        return run_shard(**kwargs)
    except UserError as e:
        return {"error": str(e)}


def merge_shards(out: Path, shard_dirs: list[Path], ratios: list[float]) -> None:
    """Append every shard's rows to the final ratio files (round-robin, so the input order is kept)."""
    from tokenskip.data.jsonl import ResumableJsonlWriter

    for r in ratios:
        with ResumableJsonlWriter(ratio_file(out, r)) as writer:
            files = [
                ratio_file(d, r).open("r", encoding="utf-8") for d in shard_dirs if ratio_file(d, r).exists()
            ]
            try:
                live = list(files)
                while live:
                    for f in list(live):
                        line = f.readline()
                        if not line:
                            live.remove(f)
                            continue
                        if line.endswith("\n"):
                            writer.write(json.loads(line))
            finally:
                for f in files:
                    f.close()


def summarize(out: Path, ratios: list[float], extra: dict) -> dict:
    """Mean achieved ratio (and mean |achieved - γ|) per γ, read back from the ratio files."""
    from tokenskip.data.jsonl import write_json_atomic
    from tokenskip.data.prompts import format_ratio

    per_ratio = {}
    for r in ratios:
        n = empty = 0
        total = abs_err = orig = comp = 0.0
        with ratio_file(out, r).open("r", encoding="utf-8") as f:
            for line in f:
                if not line.strip():
                    continue
                row = json.loads(line)
                if not row["original_tokens"]:
                    empty += 1
                    continue
                n += 1
                total += row["achieved_ratio"]
                abs_err += abs(row["achieved_ratio"] - r)
                orig += row["original_tokens"]
                comp += row["compressed_tokens"]
        per_ratio[format_ratio(r)] = {
            "ratio": r,
            "records": n + empty,
            "empty_cots": empty,
            "mean_achieved_ratio": round(total / n, 4) if n else None,
            "mean_abs_error": round(abs_err / n, 4) if n else None,
            "token_weighted_ratio": round(comp / orig, 4) if orig else None,
            "original_tokens": int(orig),
            "compressed_tokens": int(comp),
        }
    summary = {**extra, "ratios": per_ratio}
    write_json_atomic(out / SUMMARY_FILE, summary)
    return summary


def _resolve_devices(devices: str | None, device: str, scorer: str) -> list[str]:
    if devices is None or devices.strip() == "":
        if device == "auto" and scorer in ("llmlingua2", "selfinfo"):
            try:
                import torch

                n = torch.cuda.device_count()
            except Exception:  # torch without CUDA
                n = 0
            if n > 1:
                return [f"cuda:{i}" for i in range(n)]
        return [device]
    items = [d.strip() for d in devices.split(",") if d.strip()]
    if not items:
        raise UserError("--devices is empty (example: --devices cuda:0,cuda:1)")
    return items


def compress(
    input: str,
    out: str,
    ratios: str = DEFAULT_RATIOS,
    scorer: str = "selfinfo",
    checkpoint: str | None = None,
    mode: str = "exact",
    model: str = "smollm2-135m",
    field: str = "cot",
    force_tokens: list[str] | None = None,
    keep_digits: bool = False,
    drop_consecutive: bool = False,
    tokenskip_llama3: bool = False,
    device: str = "auto",
    dtype: str = "auto",
    devices: str | None = None,
    shard: str | None = None,
    batch_size: int = 512,
    max_batch_tokens: int | None = None,
    limit: int | None = None,
    seed: int = 0,
    on_error: str = "raise",
    progress: bool = True,
) -> dict:
    """Compress every CoT of a JSONL file to each ratio γ (one scoring pass per CoT, all ratios from it).

    Writes ``OUT/compressed_<γ>.jsonl`` per ratio (fields: id, question, answer, cot, compressed_cot, ratio,
    original_tokens, compressed_tokens, achieved_ratio) and ``OUT/summary.json``. Re-run the same command
    to resume after an interruption.

    Args:
        input: .jsonl / .json / .parquet rows with question, answer and the CoT (``tokenskip generate``
            output or pre-split GSM8K); a row without ``id`` gets ``<file stem>-<line - 1>``. Every row is
            checked before any model loads: question and answer must be non-empty, the CoT a string.
        out: output folder.
        ratios: comma-separated γ values in (0, 1]: the share of target-model CoT tokens to keep.
        scorer: ``llmlingua2`` (LLMLingua-2 token classifier, TokenSkip's choice), ``selfinfo`` (causal-LM
            surprisal, Selective Context; offline default), ``random``, ``truncation`` (keep the first γ),
            or ``llmlingua`` (the llmlingua package itself, one text at a time: slow reference).
        checkpoint: scorer model: for llmlingua2 a token-classifier hub id or folder (default
            microsoft/llmlingua-2-xlm-roberta-large-meetingbank); for selfinfo a causal LM (default: the
            embedded smollm2-135m).
        mode: llmlingua2 only: ``exact`` (one threshold per CoT; kept target-token share closest to γ; keeps
            newlines) or ``compat`` (word-for-word llmlingua ``compress_prompt(cot, rate=γ)`` output).
        model: target model whose tokenizer defines γ and the token counts (alias, hub id or folder).
        field: input field holding the CoT.
        force_tokens: tokens always kept (llmlingua2 and selfinfo scorers), e.g. ``[Step, ":"]``.
        keep_digits: always keep words containing a digit (llmlingua2 and selfinfo scorers).
        drop_consecutive: drop a force token that repeats the kept word before it (llmlingua2 and selfinfo).
        tokenskip_llama3: TokenSkip's LLaMA-3 settings: force tokens Step and ``:``, keep digits,
            drop consecutive.
        device: ``auto`` (CUDA if present, else CPU), ``cpu``, ``cuda``, ``cuda:1`` ...
        dtype: ``auto`` (bf16/fp16 on CUDA, fp32 on CPU; compat mode: fp32), float32, bfloat16, float16.
        devices: comma-separated devices to shard the work across, one process each (e.g.
            ``cuda:0,cuda:1``); default: every visible GPU when ``device`` is auto and there are several.
        shard: ``K/N``: compress only rows with index % N == K (split a dataset across machines).
        batch_size: CoTs read and scored per block.
        max_batch_tokens: padded tokens per forward pass (default: scorer's own, 16384 / 8192).
        limit: compress only the first N rows.
        seed: seed of the random scorer.
        on_error: ``raise`` stops at the first malformed row (not UTF-8, not an object, a missing/null/empty
            question, answer or CoT field, a duplicate id); ``skip`` skips and counts them.
        progress: show a progress bar on stderr.
    """
    from tokenskip.data.jsonl import check_input_file

    started = time.time()
    ratio_list = parse_ratios(ratios)
    input_path = check_input_file(input)
    out_dir = Path(out)
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"--out {out_dir} exists and is not a folder")
    if scorer not in SCORERS:
        raise UserError(f"unknown --scorer '{scorer}' (one of: {', '.join(SCORERS)})")
    if mode not in ("exact", "compat"):
        raise UserError(f"--mode must be 'exact' or 'compat', got '{mode}'")
    if on_error not in ("raise", "skip"):
        raise UserError(f"--on_error must be 'raise' or 'skip', got '{on_error}'")
    if batch_size < 1:
        raise UserError(f"--batch_size must be >= 1, got {batch_size}")
    if limit is not None and limit < 1:
        raise UserError(f"--limit must be >= 1, got {limit}")
    forced = list(force_tokens or [])
    if tokenskip_llama3:
        forced = forced + [t for t in ("Step", ":") if t not in forced]
        keep_digits = drop_consecutive = True
    if (forced or keep_digits or drop_consecutive) and scorer in ("random", "truncation"):
        raise UserError(f"--force_tokens/--keep_digits/--drop_consecutive do not apply to --scorer {scorer}")
    k, n_shards = parse_shard(shard)
    total_rows, bad_rows = check_rows(input_path, field, on_error, limit)
    if len(bad_rows):
        print(
            f"tokenskip: skipping {len(bad_rows)} malformed rows, first: {bad_rows.skipped[0]}",
            file=sys.stderr,
        )
    device_list = _resolve_devices(devices, device, scorer)
    if len(device_list) > 1 and n_shards > 1:
        raise UserError("use either --devices (one machine) or --shard (several machines), not both")
    out_dir.mkdir(parents=True, exist_ok=True)
    settings = {
        "input": str(input_path),
        "scorer": scorer,
        "checkpoint": checkpoint,
        "mode": mode if scorer == "llmlingua2" else None,
        "model": model,
        "field": field,
        "force_tokens": forced,
        "keep_digits": keep_digits,
        "drop_consecutive": drop_consecutive,
        "seed": seed,
        "shard": f"{k}/{n_shards}",
    }
    _check_config(out_dir, settings)
    scorer_kwargs = {
        "scorer": scorer,
        "checkpoint": checkpoint,
        "mode": mode,
        "force_tokens": forced,
        "keep_digits": keep_digits,
        "drop_consecutive": drop_consecutive,
        "device": device_list[0],
        "dtype": dtype,
        "max_batch_tokens": max_batch_tokens,
        "seed": seed,
    }
    common = {
        "input_path": input_path,
        "ratios": ratio_list,
        "model": model,
        "field": field,
        "on_error": on_error,
        "batch_size": batch_size,
        "limit": limit,
        "total_rows": total_rows,
    }
    if len(device_list) == 1:
        counts = run_shard(
            out=out_dir, scorer_kwargs=scorer_kwargs, shard=(k, n_shards), progress=progress, **common
        )
        workers = [counts]
    else:
        import multiprocessing as mp

        already = set.intersection(*(read_ids(ratio_file(out_dir, r)) for r in ratio_list))
        shard_dirs = [out_dir / "shards" / f"{i}-of-{len(device_list)}" for i in range(len(device_list))]
        jobs = [
            {
                **common,
                "out": shard_dirs[i],
                "scorer_kwargs": {**scorer_kwargs, "device": d},
                "shard": (i, len(device_list)),
                "progress": progress,
                "skip_ids": already,
                "position": i,
            }
            for i, d in enumerate(device_list)
        ]
        with mp.get_context("spawn").Pool(len(jobs)) as pool:
            workers = pool.map(_worker, jobs)
        errors = [w["error"] for w in workers if "error" in w]
        if errors:
            raise UserError(errors[0])
        merge_shards(out_dir, shard_dirs, ratio_list)
    extra = {
        **settings,
        "devices": device_list,
        "scorer_info": next((w["scorer"] for w in workers if "scorer" in w), None),
        "written_this_run": sum(w.get("written", 0) for w in workers),
        "malformed_rows_skipped": len(bad_rows),
        "elapsed_s": round(time.time() - started, 2),
    }
    summary = summarize(out_dir, ratio_list, extra)
    if progress:
        for key, v in summary["ratios"].items():
            print(
                f"γ={key}: {v['records']} CoTs, mean achieved ratio {v['mean_achieved_ratio']}"
                f" -> {ratio_file(out_dir, v['ratio'])}",
                file=sys.stderr,
            )
    return summary
