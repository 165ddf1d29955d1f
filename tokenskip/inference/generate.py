"""``tokenskip generate``: run a model over a dataset and write one graded record per question.

TokenSkip step 1: the target model's own CoTs (on the train split) are what later gets compressed.
Records are appended and flushed one by one; re-running with the same ``--out`` skips finished ids.
"""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any, Literal

from tokenskip.data.datasets import Record, load_records
from tokenskip.data.jsonl import ResumableJsonlWriter
from tokenskip.data.prompts import PromptPreset, check_ratio, format_prompt, split_cot
from tokenskip.errors import UserError
from tokenskip.grading import grade
from tokenskip.inference.base import Generation, Generator, SamplingConfig
from tokenskip.models import DEFAULT_MODEL


def make_record(
    rec: Record, prompt: str, gen: Generation, generator: Generator, model: str
) -> dict[str, Any]:
    """The output record of one question (shared by generate, infer and bench)."""
    prediction, correct = grade(gen.text, rec.answer, rec.task)
    cot = split_cot(gen.text)
    return {
        "id": rec.id,
        "question": rec.question,
        "answer": rec.answer,
        "task": rec.task,
        "prompt": prompt,
        "output": gen.text,
        "cot": cot,
        "prediction": prediction,
        "correct": correct,
        "cot_tokens": generator.count_tokens(cot),
        "output_tokens": gen.num_tokens,
        "finish_reason": gen.finish_reason,
        "latency_s": round(gen.latency_s, 4),
        "batch_size": gen.batch_size,
        "model": model,
    }


def run_generation(
    generator: Generator,
    records: list[Record],
    out: str | Path,
    sampling: SamplingConfig,
    model: str,
    ratio: float | None = None,
    preset: PromptPreset | str = "default",
    batch_size: int = 8,
    extra: dict[str, Any] | None = None,
    progress: bool = True,
) -> dict[str, int]:
    """Generate for every record not yet in ``out``; append each finished record. Returns counts."""
    from tqdm import tqdm

    with ResumableJsonlWriter(out) as writer:
        todo = [r for r in records if r.id not in writer.done]
        skipped = len(records) - len(todo)
        bar = tqdm(total=len(records), initial=skipped, desc="generate", unit="q", disable=not progress)
        for start in range(0, len(todo), batch_size):
            batch = todo[start : start + batch_size]
            prompts = [format_prompt(generator.tokenizer, r.question, ratio, preset) for r in batch]
            gens = generator.generate(prompts, sampling)
            for rec, prompt, gen in zip(batch, prompts, gens, strict=True):
                row = make_record(rec, prompt, gen, generator, model)
                if ratio is not None:
                    row["ratio"] = ratio
                if extra:
                    row.update(extra)
                writer.write(row)
            bar.update(len(batch))
        bar.close()
    return {"total": len(records), "skipped": skipped, "generated": len(todo)}


def generate(
    out: str,
    model: str = DEFAULT_MODEL,
    dataset: str = "sample",
    split: str = "train",
    limit: int | None = None,
    batch_size: int = 8,
    max_new_tokens: int = 512,
    temperature: float = 0.0,
    top_p: float = 1.0,
    seed: int = 42,
    preset: str | None = None,
    ratio: float | None = None,
    backend: Literal["hf", "vllm"] = "hf",
    adapter: str | None = None,
    dtype: str = "auto",
    device: str = "auto",
    column_map: dict[str, str] | None = None,
    on_error: Literal["raise", "skip"] = "raise",
    trust_remote_code: bool = False,
) -> dict[str, int]:
    """Generate chain-of-thought answers for a dataset and grade them (TokenSkip step 1).

    Args:
        out: output JSONL; one record per question (id, question, answer, prompt, output, cot, prediction,
            correct, cot_tokens, output_tokens, finish_reason, latency_s). Re-running resumes.
        model: embedded alias (smollm2-135m), Hugging Face id, or local folder / .gguf file.
        dataset: sample, gsm8k, math500, gsm8k-zero, a .jsonl/.json/.parquet file, or a hub dataset id.
        split: dataset split for named/hub datasets (ignored for files).
        limit: only the first N questions.
        batch_size: prompts per generate call.
        max_new_tokens: cap on generated tokens per question.
        temperature: 0 = greedy decoding.
        top_p: nucleus mass when sampling.
        seed: random seed (sampling and any shuffling).
        preset: prompt preset: default (model's chat template) or tokenskip (original TokenSkip prompt);
            default: the preset an adapter from `tokenskip train` records, else default.
        ratio: optional compression ratio γ in (0, 1] appended to the prompt (for TokenSkip-trained models).
        backend: hf (transformers) or vllm.
        adapter: optional peft LoRA adapter folder.
        dtype: auto (bf16 on GPU, fp32 on CPU), float32, bfloat16, float16.
        device: auto, cpu, cuda, cuda:N.
        column_map: rename columns of a custom file, e.g. {"question": "prompt", "answer": "target"}.
        on_error: a malformed row is fatal (raise) or skipped and counted (skip).
        trust_remote_code: allow custom model code from the hub (off by default).
    """
    if max_new_tokens < 1:
        raise UserError(f"--max_new_tokens must be >= 1, got {max_new_tokens}")
    if temperature < 0:
        raise UserError(f"--temperature must be >= 0, got {temperature}")
    if ratio is not None:
        ratio = check_ratio(ratio)
    from tokenskip.data.adapters import resolve_preset
    from tokenskip.inference import make_generator

    prompt_preset = resolve_preset(preset, adapter, model)
    records, stats = load_records(dataset, split=split, column_map=column_map, on_error=on_error, limit=limit)
    for msg in stats.skipped:
        print(f"tokenskip: skipped {msg}")
    random.seed(seed)

    t0 = time.perf_counter()
    generator = make_generator(
        backend,
        model=model,
        adapter=adapter,
        batch_size=batch_size,
        dtype=dtype,
        device=device,
        trust_remote_code=trust_remote_code,
    )
    sampling = SamplingConfig(max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, seed=seed)
    counts = run_generation(generator, records, out, sampling, model, ratio, prompt_preset, batch_size)
    generator.close()
    counts["malformed_skipped"] = len(stats)
    print(
        f"tokenskip: {counts['generated']} generated, {counts['skipped']} already done, "
        f"{len(stats)} malformed rows skipped -> {out} ({time.perf_counter() - t0:.1f}s)"
    )
    return counts
