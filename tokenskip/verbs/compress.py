"""``tokenskip compress``: prune every CoT of a JSONL file to each ratio γ from one scoring pass.

Reads the input as a stream (memory stays flat in the dataset size), scores blocks of CoTs with the chosen
scorer, prunes each scored CoT to every ratio, and appends one line per record to ``compressed_<γ>.jsonl``
(flushed and fsynced per record). Re-running the same command after a crash or Ctrl-C skips the records
already written to every ratio file and finishes the rest: nothing is lost or written twice.
``summary.json`` (mean achieved ratio per γ) is written at the end. Several processes split the work
with ``--devices`` (one machine), ``--shard K/N`` or ``torchrun`` (see :mod:`tokenskip.compressors.sharding`).

The ratio γ is the share of the CoT's *target-model* tokens that is kept (``--model``'s tokenizer):
``achieved_ratio = compressed_tokens / original_tokens``.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from tokenskip.compressors.blocks import run_shard
from tokenskip.compressors.compress import DEFAULT_RATIOS, parse_ratios, scorer_dtype
from tokenskip.compressors.outputs import (
    _already_done,
    _check_config,
    merge_parts,
    ratio_file,
    summarize,
)
from tokenskip.compressors.ray_engine import check_engine
from tokenskip.compressors.registry import SCORERS, scorer_class
from tokenskip.compressors.rows import check_rows
from tokenskip.compressors.sharding import (
    parse_shard,
    resolve_devices,
    run_everywhere,
    shard_dirs,
    torchrun_env,
)
from tokenskip.errors import UserError


def _worker(kwargs: dict) -> dict:
    import os

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        return run_shard(**kwargs)
    except UserError as e:
        return {"error": str(e)}


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
    pick: str = "all",
    correct_field: str | None = None,
    think_tags: str | None = None,
    preset: str | None = None,
    engine: str = "local",
    ray_workers: int | None = None,
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
            ``length`` (toy: keep the longest words), or ``llmlingua`` (the llmlingua package itself, one
            text at a time: slow reference). Every scorer of ``tokenskip.compressors.registry.SCORERS``.
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
        dtype: ``auto`` (bf16/fp16 on CUDA or an AMX CPU, else fp32; compat mode: fp32), float32, tf32 (fp32 weights,
            TensorFloat-32 matmuls on CUDA), bfloat16, float16. Compat mode is llmlingua-identical in fp32;
            tf32/bf16 are faster on a GPU and near-identical.
        devices: comma-separated devices to shard the work across, one process each (e.g.
            ``cuda:0,cuda:1``); default: every visible GPU when ``device`` is auto and there are several.
            Under ``torchrun`` (one process per rank, any number of nodes) each rank takes part
            ``RANK/WORLD_SIZE`` on ``cuda:LOCAL_RANK`` (or the CPU) and rank 0 merges; OUT must be on a
            filesystem every node sees.
        shard: ``K/N``: compress only rows with index % N == K (split a dataset across machines by hand).
        batch_size: CoTs read and scored per block.
        max_batch_tokens: padded tokens per forward pass (default: scorer's own, 16384 / 8192).
        limit: compress only the first N rows.
        seed: seed of the random scorer.
        on_error: ``raise`` stops at the first malformed row (not UTF-8, not an object, a missing/null/empty
            question, answer or CoT field, a duplicate id); ``skip`` skips and counts them.
        progress: show a progress bar on stderr.
        pick: a field holding a list of texts: ``all`` (one record each, ids ``<row id>#<k>``), ``first``,
            ``correct`` or ``first_correct`` (flags in --correct_field); see docs/thinking.md.
        correct_field: the column of correctness flags (a list of true/false beside the list of texts).
        think_tags: ``OPEN,CLOSE`` (default ``<think>,</think>`` or --preset's; ``none``: off). In a text
            holding them only the thinking is pruned and counted; the tags, the text before the thinking
            and everything after the close tag stay byte for byte. An unclosed block is all thinking.
        preset: a prompt preset whose think tags to look for (``qwen3``; one without tags: off).
        engine: ``local`` (this process, or the ``--devices`` / ``--shard`` / torchrun split) or ``ray``: a
            Ray Data pipeline on the cluster of ``RAY_ADDRESS`` (else a local Ray runtime), one scorer actor
            per GPU; the same output files (``pip install 'tokenskip[ray]'``; see docs/scaling.md).
        ray_workers: ray engine: scorer actors (default: one per GPU of the cluster, else 1).
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
    if (forced or keep_digits or drop_consecutive) and "force_tokens" not in scorer_class(scorer).options:
        raise UserError(f"--force_tokens/--keep_digits/--drop_consecutive do not apply to --scorer {scorer}")
    from tokenskip.compressors.thinking import ReadSpec, resolve_think_tags
    from tokenskip.data.generations import check_pick

    check_pick(pick, correct_field)
    spec = ReadSpec(pick, correct_field, resolve_think_tags(think_tags, preset))
    check_engine(engine, shard or devices, ray_workers)
    k, n_shards = parse_shard(shard)
    picking: dict[str, int] = {}
    total_rows, bad_rows = check_rows(
        input_path, field, on_error, limit, spec, picking
    )  # before a model loads
    if len(bad_rows):
        print(
            f"tokenskip: skipping {len(bad_rows)} malformed rows, first: {bad_rows.skipped[0]}",
            file=sys.stderr,
        )
    job = torchrun_env() if engine == "local" else None
    if job is not None and (n_shards > 1 or devices):
        raise UserError("under torchrun every rank compresses its own part: drop --shard and --devices")
    device_list = [job.device(device)] if job is not None else resolve_devices(devices, device, scorer)
    if len(device_list) > 1 and n_shards > 1:
        raise UserError("use either --devices (one machine) or --shard (several machines), not both")
    settings = {
        "input": str(input_path),
        "scorer": scorer,
        "checkpoint": checkpoint,
        "mode": mode if "mode" in scorer_class(scorer).options else None,
        "model": model,
        "field": field,
        "force_tokens": forced,
        "keep_digits": keep_digits,
        "drop_consecutive": drop_consecutive,
        "seed": seed,
        "shard": f"{k}/{n_shards}",
        "pick": pick,
        "correct_field": correct_field,
        "think_tags": spec.tags.to_list() if spec.tags else None,
        **picking,
        "dtype": scorer_dtype(scorer, mode, dtype, device_list[0]),
    }
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
        "spec": spec,
    }

    def prepare() -> None:
        out_dir.mkdir(parents=True, exist_ok=True)
        if job is None or job.rank == 0:
            _check_config(out_dir, settings)

    if job is not None:
        job.start()
        finished = False
        try:
            run_everywhere(job, prepare)
            parts = shard_dirs(out_dir, job.world)
            already = _already_done(out_dir, ratio_list)
            workers = run_everywhere(
                job,
                lambda: (
                    run_shard(
                        out=parts[job.rank],
                        scorer_kwargs=scorer_kwargs,
                        shard=(job.rank, job.world),
                        progress=progress,
                        skip_ids=already,
                        position=job.rank,
                        **common,
                    )
                    | {"device": device_list[0]}
                ),
            )
            device_list = [w["device"] for w in workers]

            def merge_and_summarize() -> dict | None:
                if job.rank != 0:
                    return None
                merge_parts(out_dir, parts, ratio_list, input_path, field, on_error, limit, spec)
                return summarize(
                    out_dir, ratio_list, _extra(settings, device_list, len(bad_rows), workers, started)
                )

            summary = run_everywhere(job, merge_and_summarize)[0]
            finished = True
        finally:
            job.stop(barrier=finished)
        _report(summary, out_dir, progress and job.rank == 0)
        return summary
    prepare()
    if engine == "ray":
        from tokenskip.compressors.ray_engine import run_ray

        counts = run_ray(out_dir, scorer_kwargs, progress, ray_workers, **common)
        used = [f"ray: {counts['workers']} actors x {counts['gpus_per_worker']} GPU"]
        extra = _extra(settings, used, len(bad_rows), [counts], started) | {"engine": "ray"}
        summary = summarize(out_dir, ratio_list, extra)
        _report(summary, out_dir, progress)
        return summary
    if len(device_list) == 1:
        counts = run_shard(
            out=out_dir, scorer_kwargs=scorer_kwargs, shard=(k, n_shards), progress=progress, **common
        )
        workers = [counts]
    else:
        import multiprocessing as mp

        already = _already_done(out_dir, ratio_list)
        parts = shard_dirs(out_dir, len(device_list))
        jobs = [
            {
                **common,
                "out": parts[i],
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
        merge_parts(out_dir, parts, ratio_list, input_path, field, on_error, limit, spec)
    summary = summarize(out_dir, ratio_list, _extra(settings, device_list, len(bad_rows), workers, started))
    _report(summary, out_dir, progress)
    return summary


def _extra(settings: dict, devices: list[str], malformed: int, workers: list[dict], started: float) -> dict:
    return {
        **settings,
        "devices": devices,
        "scorer_info": next((w["scorer"] for w in workers if "scorer" in w), None),
        "written_this_run": sum(w.get("written", 0) for w in workers),
        "malformed_rows_skipped": malformed,
        "elapsed_s": round(time.time() - started, 2),
    }


def _report(summary: dict, out_dir: Path, progress: bool) -> None:
    if progress:
        for key, v in summary["ratios"].items():
            print(
                f"γ={key}: {v['records']} CoTs, mean achieved ratio {v['mean_achieved_ratio']}"
                f" -> {ratio_file(out_dir, v['ratio'])}",
                file=sys.stderr,
            )
