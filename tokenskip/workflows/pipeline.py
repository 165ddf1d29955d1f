"""``tokenskip pipeline``: the whole TokenSkip job end to end, one stage after another, in one process.

generate -> filter -> compress (several γ) -> build-sft -> a short LoRA train -> infer at each requested γ, each
stage reading the previous stage's files under ``--out`` (exactly what the verbs of the same names do: every stage
is a call of that verb's function). Re-running resumes: finished stages are skipped. It ends with one table: the
records per stage, the achieved compression ratio per γ, and the adapter's CoT tokens per requested γ, plus where
every file is.

On the embedded model this is a pipeline check, not a quality run: smollm2-135m cannot do GSM8K arithmetic and a
few CPU LoRA steps do not teach it to read γ (docs/training.md has the runs that do).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from tokenskip.data.adapters import ADAPTER_INFO
from tokenskip.data.prompts import check_ratio, format_ratio
from tokenskip.errors import UserError
from tokenskip.models import DEFAULT_MODEL

CAVEAT = (
    "This is a pipeline check on {model}: a model that cannot do GSM8K arithmetic (accuracy ~0%) and {steps} "
    "LoRA steps, too few to teach it to read γ. It shows that every stage runs and hands its files to the next; "
    "docs/training.md has runs that do follow γ."
)


def _count(path: Path) -> int:
    if not path.exists():
        return 0
    with path.open("r", encoding="utf-8") as f:
        return sum(1 for line in f if line.strip())


def _mean_cot(path: Path) -> float | None:
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return sum(r["cot_tokens"] for r in rows) / len(rows) if rows else None


def pipeline(
    out: str = "runs/pipeline",
    model: str = DEFAULT_MODEL,
    dataset: str = "sample",
    split: str = "train",
    limit: int | None = None,
    max_new_tokens: int = 96,
    ratios: str = "0.9,0.7,0.5",
    max_steps: int = 4,
    infer_ratios: str = "1.0,0.5",
    infer_limit: int = 4,
    scorer: str = "selfinfo",
) -> list[dict[str, Any]]:
    """Run generate -> filter -> compress -> build-sft -> train -> infer and print one summary table.

    Args:
        out: run folder; every stage writes below it. Re-running resumes (finished stages are skipped).
        model: target model (embedded alias, Hugging Face id or local folder).
        dataset: questions with reference answers (sample = the 16 bundled problems; or gsm8k, a file, ...).
        split: dataset split for named datasets.
        limit: only the first N questions.
        max_new_tokens: cap on generated tokens (generate and infer).
        ratios: the γ values to compress to (comma list).
        max_steps: LoRA optimizer steps (a short CPU-sized run; raise it for a real one).
        infer_ratios: the γ values to ask the trained adapter for (comma list).
        infer_limit: questions answered at each inference γ.
        scorer: token-importance scorer for compress (selfinfo offline; llmlingua2 with its checkpoint).
    """
    from tokenskip.compressors.compress import compress
    from tokenskip.data.filter import filter_records
    from tokenskip.training.sft import build_sft
    from tokenskip.training.train import train
    from tokenskip.workflows.generate import generate, infer

    gammas = [check_ratio(g) for g in ratios.split(",") if g.strip()]
    asks = [check_ratio(g) for g in infer_ratios.split(",") if g.strip()]
    if max_steps < 1 or infer_limit < 1:
        raise UserError("--max_steps and --infer_limit must be >= 1")
    run = Path(out)
    files = {
        "generate": run / "gen.jsonl",
        "filter": run / "kept.jsonl",
        "compress": run / "compressed",
        "build-sft": run / "sft",
        "train": run / "adapter",
    }
    t0 = time.perf_counter()
    stage_times: dict[str, float] = {}

    def timed(name: str, fn: Any, **kwargs: Any) -> Any:
        print(f"\n== {name} ==", flush=True)
        start = time.perf_counter()
        result = fn(**kwargs)
        stage_times[name] = time.perf_counter() - start
        return result

    gen_args = {"model": model, "max_new_tokens": max_new_tokens}
    timed(
        "generate",
        generate,
        out=str(files["generate"]),
        dataset=dataset,
        split=split,
        limit=limit,
        **gen_args,
    )
    timed("filter", filter_records, input=str(files["generate"]), out=str(files["filter"]),
          require_correct=False, max_cot_tokens=400)  # fmt: skip
    timed("compress", compress, input=str(files["filter"]), out=str(files["compress"]),
          ratios=",".join(format_ratio(g) for g in gammas), scorer=scorer, model=model)  # fmt: skip
    timed("build-sft", build_sft, original=str(files["filter"]), compressed=str(files["compress"]),
          out=str(files["build-sft"]), model=model)  # fmt: skip
    if (files["train"] / ADAPTER_INFO).exists():
        print(f"\n== train ==\ntokenskip: {files['train']} already holds the finished adapter: skipped")
    else:
        timed("train", train, data=str(files["build-sft"]), out=str(files["train"]), model=model,
              max_steps=max_steps, batch_size=4, grad_accum=1, learning_rate=1e-3, cutoff=512,
              save_steps=max(1, max_steps // 2), eval_size=0, progress="none")  # fmt: skip
    sample = Path(__file__).resolve().parents[1] / "data" / "samples" / "grade_school.jsonl"
    for g in asks:
        path = run / f"infer-{format_ratio(g)}.jsonl"
        files[f"infer γ={format_ratio(g)}"] = path
        timed(f"infer γ={format_ratio(g)}", infer, adapter=str(files["train"]), ratio=g, input=str(sample),
              limit=infer_limit, out=str(path), **gen_args)  # fmt: skip

    rows = summary_rows(run, files, gammas, asks)
    print("\n" + summary_table(rows))
    print("\n" + CAVEAT.format(model=model, steps=max_steps))
    print(f"\ntokenskip: pipeline finished in {time.perf_counter() - t0:.0f}s; files under {run}/")
    return rows


def summary_rows(
    run: Path, files: dict[str, Path], gammas: list[float], asks: list[float]
) -> list[dict[str, Any]]:
    """One row per stage (and per γ): records, the figure that stage is about, and where its files are."""
    rows: list[dict[str, Any]] = [
        {"stage": "generate", "records": _count(files["generate"]), "figure": "", "files": files["generate"]},
        {"stage": "filter", "records": _count(files["filter"]), "figure": "", "files": files["filter"]},
    ]
    summary = json.loads((files["compress"] / "summary.json").read_text(encoding="utf-8"))
    for g in gammas:
        s = summary["ratios"][format_ratio(g)]
        rows.append({
            "stage": f"compress γ={format_ratio(g)}", "records": s["records"],
            "figure": f"achieved ratio {s['mean_achieved_ratio']:.3f}",
            "files": files["compress"] / f"compressed_{format_ratio(g)}.jsonl",
        })  # fmt: skip
    sft = files["build-sft"] / "sft.jsonl"
    rows.append({"stage": "build-sft", "records": _count(sft), "figure": "", "files": sft})
    info = json.loads((files["train"] / ADAPTER_INFO).read_text(encoding="utf-8"))
    loss = info.get("train_loss")
    rows.append({
        "stage": "train", "records": info.get("global_step"),
        "figure": f"steps; final train loss {loss:.3f}" if isinstance(loss, int | float) else "steps",
        "files": files["train"],
    })  # fmt: skip
    for g in asks:
        path = files[f"infer γ={format_ratio(g)}"]
        mean = _mean_cot(path)
        rows.append({
            "stage": f"infer γ={format_ratio(g)}", "records": _count(path),
            "figure": "" if mean is None else f"mean CoT tokens {mean:.1f}", "files": path,
        })  # fmt: skip
    return rows


def summary_table(rows: list[dict[str, Any]]) -> str:
    lines = ["| stage | records | figure | files |", "|---|---|---|---|"]
    lines += [f"| {r['stage']} | {r['records']} | {r['figure']} | {r['files']} |" for r in rows]
    return "\n".join(lines)
