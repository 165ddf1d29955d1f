"""``tokenskip infer``: ask a (TokenSkip-trained) model for reasoning at a chosen compression ratio γ.

Questions come from ``--question "..."`` or a file: ``.jsonl`` / ``.json`` / ``.parquet`` rows with
``question`` -- or MATH's ``problem`` -- and optional ``id`` / ``answer``, or ``.txt``, one question per
line (read by :func:`tokenskip.data.inputs.read_rows`). Every prompt is
written by :func:`tokenskip.data.prompts.format_prompt`: chat template, the question and, for γ < 1,
``<delim>γ<delim>`` exactly as training wrote it. Rows with an answer are graded.

Records are appended and flushed one by one; re-running with the same ``--out`` skips finished ids (and
refuses an ``--out`` written with another model, adapter, ratio or preset).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Literal

from tokenskip.data.datasets import Record, collect_rows, row_to_record
from tokenskip.data.inputs import field_problem, read_rows
from tokenskip.data.jsonl import BadLineStats, ResumableJsonlWriter
from tokenskip.data.prompts import PromptPreset, check_ratio, format_prompt
from tokenskip.errors import UserError
from tokenskip.eval.grading import extract_answer
from tokenskip.inference.base import Generator, SamplingConfig
from tokenskip.models import DEFAULT_MODEL

# fields that must match between an existing --out and a resumed run
SETTINGS = ("model", "adapter", "ratio", "preset")


def question_from_row(
    row: dict[str, Any], default_id: str, column_map: dict[str, str] | None = None
) -> tuple[Record, bool]:
    """One input row as ``(Record, has_answer)``; raises ValueError with a short reason if unusable.

    Rows with an answer go through :func:`tokenskip.data.datasets.row_to_record` (GSM8K ``#### N``, MATH
    ``solution`` etc.); rows without one only need a question.
    """
    if column_map:
        row = dict(row)
        for target, source in column_map.items():
            if source not in row:
                raise ValueError(f"column '{source}' (mapped to '{target}') is missing")
            row[target] = row[source]
    answer = row.get("answer")
    has_answer = (answer is not None and str(answer).strip() != "") or isinstance(row.get("solution"), str)
    if has_answer:
        return row_to_record(row, default_id), True
    qkey = "problem" if "problem" in row and "question" not in row else "question"
    problem = field_problem(row, qkey, "text")
    if problem:
        raise ValueError(problem)
    rid = str(row.get("id") if row.get("id") not in (None, "") else default_id)
    return Record(id=rid, question=row[qkey].strip(), answer=""), False


def load_questions(
    path: str,
    column_map: dict[str, str] | None = None,
    on_error: Literal["raise", "skip"] = "raise",
    limit: int | None = None,
) -> tuple[list[tuple[Record, bool]], BadLineStats]:
    """Questions of an input file (``.jsonl``, ``.json``, ``.parquet`` or ``.txt``), with line-accurate
    errors and unique ids. Required: ``question`` (or ``problem``) as non-blank text; ``answer`` optional."""
    if limit is not None and limit < 1:
        raise UserError(f"--limit must be >= 1, got {limit}")
    p = Path(path)
    stats = BadLineStats()
    rows = read_rows(p, on_error=on_error, stats=stats, txt_field="question")
    out = collect_rows(
        rows,
        str(p),
        lambda lineno, row: question_from_row(row, f"{p.stem}-{lineno - 1}", column_map),
        lambda item: item[0].id,
        on_error,
        stats,
        limit,
    )
    return out, stats


def check_resume(out: str | Path, settings: dict[str, Any]) -> None:
    """Refuse to append to an ``--out`` whose first record was written with different settings."""
    p = Path(out)
    if not p.exists() or p.stat().st_size == 0:
        return
    with p.open("r", encoding="utf-8-sig", errors="replace") as f:
        first = f.readline()
    try:
        rec = json.loads(first)
    except ValueError:
        return  # a half-written single line: the writer cuts it
    if not isinstance(rec, dict):
        return
    for key in SETTINGS:
        if key in rec and rec[key] != settings[key]:
            raise UserError(
                f"{p} was written with {key}={rec[key]!r}, this run has {key}={settings[key]!r}; "
                "pick another --out (or delete the file) instead of mixing runs"
            )


def make_infer_record(
    rec: Record, has_answer: bool, prompt: str, gen: Any, generator: Generator, settings: dict[str, Any]
) -> dict[str, Any]:
    """The output record: ``generate``'s fields (graded when the row has an answer) + the run settings."""
    from tokenskip.inference.generate import make_record

    row = make_record(rec, prompt, gen, generator, settings["model"])
    if not has_answer:
        row.update(answer=None, prediction=extract_answer(gen.text), correct=None)
    row.update(settings)
    return row


def run_infer(
    generator: Generator,
    questions: list[tuple[Record, bool]],
    out: str | Path | None,
    sampling: SamplingConfig,
    settings: dict[str, Any],
    batch_size: int = 8,
    progress: bool = True,
    prompt_preset: PromptPreset | None = None,
) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """Generate every question not yet in ``out`` (all of them when ``out`` is None), appending each record.

    ``settings`` holds model, adapter, ratio, preset (its name) and backend; it is written into every
    record. ``prompt_preset`` is the preset object to write prompts with (default: the named preset).
    Returns the new records and the counts.
    """
    from tqdm import tqdm

    ratio = settings["ratio"]
    preset = prompt_preset or settings["preset"]
    writer = ResumableJsonlWriter(out) if out is not None else None
    done = writer.done if writer is not None else set()
    todo = [(r, a) for r, a in questions if r.id not in done]
    rows: list[dict[str, Any]] = []
    try:
        bar = tqdm(
            total=len(questions),
            initial=len(questions) - len(todo),
            desc="infer",
            unit="q",
            disable=not progress,
        )
        for start in range(0, len(todo), batch_size):
            chunk = todo[start : start + batch_size]
            prompts = [format_prompt(generator.tokenizer, r.question, ratio, preset) for r, _ in chunk]
            gens = generator.generate(prompts, sampling)
            for (rec, has_answer), prompt, gen in zip(chunk, prompts, gens, strict=True):
                row = make_infer_record(rec, has_answer, prompt, gen, generator, settings)
                if writer is not None:
                    writer.write(row)
                rows.append(row)
            bar.update(len(chunk))
        bar.close()
    finally:
        if writer is not None:
            writer.close()
    return rows, {"total": len(questions), "skipped": len(questions) - len(todo), "generated": len(todo)}


def infer(
    model: str = DEFAULT_MODEL,
    adapter: str | None = None,
    ratio: float = 1.0,
    input: str | None = None,
    question: str | None = None,
    out: str | None = None,
    backend: Literal["hf", "vllm"] = "hf",
    preset: str | None = None,
    max_new_tokens: int = 512,
    temperature: float = 0.0,
    top_p: float = 1.0,
    seed: int = 42,
    stop: list[str] | None = None,
    batch_size: int | None = None,
    limit: int | None = None,
    column_map: dict[str, str] | None = None,
    on_error: Literal["raise", "skip"] = "raise",
    merge_adapter: bool = False,
    tensor_parallel_size: int | None = None,
    max_model_len: int | None = None,
    dtype: str = "auto",
    device: str = "auto",
    trust_remote_code: bool = False,
) -> dict[str, Any]:
    """Generate reasoning at compression ratio γ for one question or a file of questions.

    Args:
        model: embedded alias (smollm2-135m), Hugging Face id, or local folder / .gguf file.
        adapter: peft LoRA adapter folder (e.g. from `tokenskip train`); without it the base model answers.
        ratio: compression ratio γ in (0, 1]; 1.0 = full CoT (no ratio in the prompt).
        input: .jsonl / .json / .parquet (question or problem; optional id, answer) or .txt (one question
            per line). JSONL may have a BOM and CRLF line ends.
        question: a single question instead of --input; the answer is printed.
        out: output JSONL (id, question, answer, prompt, output, cot, prediction, correct, cot_tokens,
            output_tokens, finish_reason, latency_s, batch_size, model, adapter, ratio, preset, backend).
            Required with --input; re-running resumes.
        backend: hf (transformers) or vllm.
        preset: prompt preset: default, or tokenskip (published TokenSkip adapters). Default: the preset
            recorded by `tokenskip train` in the adapter (or merged model), including its delimiter; else default.
        max_new_tokens: cap on generated tokens per question.
        temperature: 0 = greedy decoding.
        top_p: nucleus mass when sampling.
        seed: random seed for sampling.
        stop: extra strings that end generation.
        batch_size: questions per generate call (and per flush); default 8 for hf, 64 for vllm.
        limit: only the first N questions of --input.
        column_map: rename columns of the input, e.g. {"question": "prompt"}.
        on_error: a malformed input row is fatal (raise) or skipped and counted (skip).
        merge_adapter: merge the adapter into the weights (hf backend; same outputs, faster).
        tensor_parallel_size: vllm: GPUs to shard over (default: all visible GPUs).
        max_model_len: vllm: context length cap (default: the model's).
        dtype: auto (bf16 on GPU, fp32 on CPU), float32, bfloat16, float16.
        device: auto, cpu, cuda, cuda:N.
        trust_remote_code: allow custom model code from the hub (off by default).
    """
    ratio = check_ratio(ratio)
    from tokenskip.inference import make_generator, resolve_preset

    prompt_preset = resolve_preset(preset, adapter, model)
    if (input is None) == (question is None):
        raise UserError("give exactly one of --input FILE or --question TEXT")
    if input is not None and out is None:
        raise UserError("--out is required with --input")
    if max_new_tokens < 1:
        raise UserError(f"--max_new_tokens must be >= 1, got {max_new_tokens}")
    if temperature < 0:
        raise UserError(f"--temperature must be >= 0, got {temperature}")
    if batch_size is None:
        batch_size = 64 if backend == "vllm" else 8
    if batch_size < 1:
        raise UserError(f"--batch_size must be >= 1, got {batch_size}")
    if backend not in ("hf", "vllm"):
        raise UserError(f"unknown backend '{backend}' (hf, vllm)")
    if question is not None:
        if not question.strip():
            raise UserError("--question is empty")
        questions = [(Record(id="question-0", question=question.strip(), answer=""), False)]
        stats = BadLineStats()
    else:
        assert input is not None
        questions, stats = load_questions(input, column_map, on_error, limit)
    for msg in stats.skipped:
        print(f"tokenskip: skipped {msg}")
    settings = {
        "model": model,
        "adapter": adapter,
        "ratio": ratio,
        "preset": prompt_preset.name,
        "backend": backend,
    }
    if out is not None:
        check_resume(out, settings)

    kwargs: dict[str, Any] = {
        "model": model,
        "adapter": adapter,
        "merge_adapter": merge_adapter,
        "batch_size": batch_size,
        "dtype": dtype,
        "device": device,
        "trust_remote_code": trust_remote_code,
    }
    if backend == "vllm":
        kwargs.update(tensor_parallel_size=tensor_parallel_size, max_model_len=max_model_len)
    t0 = time.perf_counter()
    generator = make_generator(backend, **kwargs)
    try:
        sampling = SamplingConfig(
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            top_p=top_p,
            seed=seed,
            stop=tuple(stop or ()),
        )
        rows, counts = run_infer(
            generator,
            questions,
            out,
            sampling,
            settings,
            batch_size,
            progress=input is not None,
            prompt_preset=prompt_preset,
        )
    finally:
        generator.close()
    if question is not None and rows:
        print(rows[0]["output"])
    counts["malformed_skipped"] = len(stats)
    if out is not None:
        tokens = [r["cot_tokens"] for r in rows]
        mean = f", mean CoT {sum(tokens) / len(tokens):.1f} tokens" if tokens else ""
        print(
            f"tokenskip: {counts['generated']} generated, {counts['skipped']} already done{mean} "
            f"(γ={ratio}, {backend}) -> {out} ({time.perf_counter() - t0:.1f}s)"
        )
    return counts
