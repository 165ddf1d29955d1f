"""``tokenskip bench``: every method on the same questions, one table, CSV, JSON and two plots.

Layout of ``--out DIR``::

    run.json                 what was run (model, adapter, dataset, methods, limits)
    records/<method>.jsonl   per-question records of the batched run (resumable per method)
    records/<method>.b1.jsonl  the first --latency_samples questions again at batch size 1
    results.md / .csv / .json  one row per method (see tokenskip.eval.metrics.method_summary)
    accuracy_vs_tokens.png   accuracy against mean CoT tokens
    ratio_adherence.png      requested γ against achieved ActRatio

Killing the job and re-running the same command resumes: finished records are skipped per method.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Literal

from tokenskip.data.datasets import Record, load_records
from tokenskip.data.jsonl import ResumableJsonlWriter, read_jsonl, write_json_atomic
from tokenskip.data.prompts import PromptPreset, format_prompt
from tokenskip.errors import UserError
from tokenskip.eval.methods import (
    DEFAULT_METHODS,
    Method,
    execution_order,
    method_preset,
    parse_methods,
    prompt_ratio,
    truncation_budget,
)
from tokenskip.inference.base import Generation, Generator, SamplingConfig
from tokenskip.inference.generate import make_record
from tokenskip.models import DEFAULT_MODEL


def _read_done(path: Path) -> dict[str, dict[str, Any]]:
    if not path.exists() or path.stat().st_size == 0:
        return {}
    return {str(r["id"]): r for _, r in read_jsonl(path, on_error="skip")}


def _cut_to_tokens(generator: Generator, gen: Generation, budget: int) -> Generation:
    """Truncation baseline: keep the first ``budget`` generated tokens of ``gen``."""
    if gen.num_tokens <= budget:
        return gen
    ids = generator.tokenizer(gen.text, add_special_tokens=False)["input_ids"][:budget]
    text = generator.tokenizer.decode(ids, skip_special_tokens=True)
    return Generation(text, budget, "length", gen.latency_s, gen.batch_size)


def run_method(
    method: Method,
    generator: Generator,
    records: list[Record],
    out: Path,
    model: str,
    base_preset: PromptPreset,
    max_new_tokens: int,
    batch_size: int,
    original: dict[str, dict[str, Any]],
    tale_template: str = "tale",
) -> None:
    """Generate ``method``'s answers for every record not yet in ``out`` (appending as they finish)."""
    from tqdm import tqdm

    preset = method_preset(method, base_preset)
    ratio = prompt_ratio(method)
    with ResumableJsonlWriter(out) as writer:
        todo = [r for r in records if r.id not in writer.done]
        if method.kind == "truncation":  # similar budgets together: less padding, fewer wasted tokens
            todo.sort(key=lambda r: int(original[r.id]["output_tokens"]))
        bar = tqdm(
            total=len(records), initial=len(records) - len(todo), desc=f"{method.name} ({out.name})", unit="q"
        )
        for start in range(0, len(todo), batch_size):
            batch = todo[start : start + batch_size]
            extra: list[dict[str, Any]] = [{} for _ in batch]
            limit = max_new_tokens
            if method.kind == "tale-ep":
                prompts, extra = _tale_prompts(generator, batch, tale_template)
            else:
                prompts = [format_prompt(generator.tokenizer, r.question, ratio, preset) for r in batch]
            if method.kind == "truncation":
                budgets = [
                    truncation_budget(float(method.ratio), int(original[r.id]["output_tokens"]))
                    for r in batch
                ]
                limit = max(budgets)
                extra = [{"budget": b} for b in budgets]
            gens = generator.generate(prompts, SamplingConfig(max_new_tokens=limit))
            for rec, prompt, gen, ext in zip(batch, prompts, gens, extra, strict=True):
                if method.kind == "truncation":
                    gen = _cut_to_tokens(generator, gen, ext["budget"])
                row = make_record(rec, prompt, gen, generator, model)
                row.update(method=method.name, **ext)
                if method.kind == "tale-ep":
                    row["latency_s"] = round(row["latency_s"] + ext.get("estimate_latency_s", 0.0), 4)
                    row["total_output_tokens"] = row["output_tokens"] + int(ext.get("estimate_tokens") or 0)
                writer.write(row)
            bar.update(len(batch))
        bar.close()


def _tale_prompts(generator: Generator, batch: list[Record], template: str) -> tuple[list[str], list[dict]]:
    """TALE-EP: the model estimates each question's budget, then gets the budget-aware prompt."""
    from tokenskip.inference.tale import BudgetEstimator, chat_prompt
    from tokenskip.inference.tale_budget import get_template

    estimator = BudgetEstimator("zero-shot", generator.tokenizer, generator.count_tokens, generator=generator)
    estimates = estimator.estimate(batch)
    tmpl = get_template(template)
    prompts = [
        chat_prompt(generator.tokenizer, tmpl.user_message(r.question, e["budget"]))
        for r, e in zip(batch, estimates, strict=True)
    ]
    return prompts, estimates


def bench(
    out: str,
    model: str = DEFAULT_MODEL,
    adapter: str | None = None,
    dataset: str = "sample",
    split: str = "test",
    methods: str = DEFAULT_METHODS,
    limit: int | None = 16,
    max_new_tokens: int = 512,
    batch_size: int = 8,
    latency_samples: int = 4,
    preset: str | None = None,
    tale_template: str = "tale",
    backend: Literal["hf", "vllm"] = "hf",
    dtype: str = "auto",
    device: str = "auto",
    column_map: dict[str, str] | None = None,
    on_error: Literal["raise", "skip"] = "raise",
) -> list[dict[str, Any]]:
    """Compare original CoT, TokenSkip ratios, baselines and TALE-EP on the same questions.

    Args:
        out: output folder (records/, results.md/.csv/.json, accuracy_vs_tokens.png, ratio_adherence.png).
            Re-running with the same folder resumes.
        model: base model: embedded alias, Hugging Face id, or local folder.
        adapter: TokenSkip LoRA adapter (from `tokenskip train`) used by the tokenskip@γ methods. Without it
            tokenskip@γ prompts the base model with the ratio marker (what an untrained model does with it).
        dataset: sample, gsm8k, math500, gsm8k-zero, or a file (see `tokenskip generate --help`).
        split: dataset split for named datasets.
        methods: comma list of original, tokenskip@γ, truncation@γ, lc-prompt@γ, beconcise, tale-ep.
            `original` always runs (ActRatio and truncation are relative to it).
        limit: number of questions (the first N).
        max_new_tokens: cap on generated tokens per answer, the same for every method.
        batch_size: prompts per generate call in the batched run (throughput and batched latency).
        latency_samples: the first N questions of each method are also run at batch size 1 to measure
            per-sample latency as the TokenSkip paper reports it (0 = skip).
        preset: prompt preset (default or tokenskip); must match how the adapter was trained. Default: the
            preset the adapter's tokenskip_adapter.json records (else default).
        tale_template: TALE prompt template (tale, or tale-boxed for MATH).
        backend: hf (transformers) or vllm.
        dtype: auto, float32, bfloat16, float16.
        device: auto, cpu, cuda.
        column_map: rename columns of a custom dataset file.
        on_error: a malformed dataset row is fatal (raise) or skipped (skip).
    """
    from tokenskip.eval.report import render

    if max_new_tokens < 1 or batch_size < 1 or latency_samples < 0:
        raise UserError("--max_new_tokens and --batch_size must be >= 1, --latency_samples >= 0")
    plan = execution_order(parse_methods(methods))
    if adapter and not (Path(adapter) / "adapter_config.json").exists():
        raise UserError(f"--adapter {adapter}: not a peft adapter folder (no adapter_config.json)")
    from tokenskip.inference import make_generator, resolve_preset

    prompt_preset = resolve_preset(preset, adapter, model)
    records, stats = load_records(dataset, split=split, column_map=column_map, on_error=on_error, limit=limit)
    for msg in stats.skipped:
        print(f"tokenskip: skipped {msg}")
    root = Path(out)
    (root / "records").mkdir(parents=True, exist_ok=True)
    meta = {
        "model": model,
        "adapter": adapter,
        "dataset": dataset,
        "split": split,
        "limit": limit,
        "methods": [m.name for m in plan],
        "max_new_tokens": max_new_tokens,
        "batch_size": batch_size,
        "latency_samples": latency_samples,
        "preset": prompt_preset.name,
        "backend": backend,
    }
    previous = root / "run.json"
    if previous.exists():
        import json

        old = json.loads(previous.read_text())
        for key in ("model", "adapter", "dataset", "split", "max_new_tokens", "preset"):
            if old.get(key) != meta[key]:
                raise UserError(
                    f"{out} holds a run with {key}={old.get(key)!r}, not {meta[key]!r}: use another --out"
                )
    write_json_atomic(previous, meta)

    t0 = time.perf_counter()
    generator: Generator | None = None
    loaded_adapter: str | None = "unset"
    for method in plan:
        want = adapter if method.uses_adapter else None
        if generator is None or loaded_adapter != want:
            if generator is not None:
                generator.close()
            generator = make_generator(
                backend, model=model, adapter=want, batch_size=batch_size, dtype=dtype, device=device
            )
            loaded_adapter = want
        original = _read_done(root / "records" / "original.jsonl")
        path = root / "records" / f"{method.name}.jsonl"
        run_method(
            method,
            generator,
            records,
            path,
            model,
            prompt_preset,
            max_new_tokens,
            batch_size,
            original,
            tale_template,
        )
        if latency_samples:
            b1 = root / "records" / f"{method.name}.b1.jsonl"
            run_method(
                method,
                generator,
                records[:latency_samples],
                b1,
                model,
                prompt_preset,
                max_new_tokens,
                1,
                original,
                tale_template,
            )
    if generator is not None:
        generator.close()
    rows = render([root], root)
    print(f"tokenskip: bench finished in {time.perf_counter() - t0:.0f}s -> {root}")
    return rows
