"""``tokenskip pipeline``: the whole TokenSkip job end to end, one stage after another, in one process.

generate -> filter -> compress (several γ) -> build-sft -> LoRA train -> infer at a few γ (``quickstart``) or
``bench`` on a test set (``tokenskip-gsm8k``), each stage reading the previous stage's files under ``--out``
(every stage is a call of the verb of the same name). ``--recipe`` names the settings of every stage
(:mod:`tokenskip.verbs.recipes`); each option below overrides the recipe's value of the same name.

Resuming: ``OUT/pipeline.json`` records the recipe's resolved settings and, per stage, whether it finished and
its wall time summed over runs. Re-running the same command skips finished stages and continues the stage it
stopped in (each verb resumes on its own: generate and compress skip finished records, train restarts from
its last checkpoint, bench skips finished records per method). Other settings in the same ``--out`` are
refused. The filter keeps only correct CoTs unless ``--keep_incorrect true`` (the embedded-model quickstart:
that model gets ~0% of GSM8K right, so it keeps every CoT, and says so).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from tokenskip.data.adapters import ADAPTER_INFO
from tokenskip.data.jsonl import write_json_atomic
from tokenskip.data.prompts import check_ratio, format_ratio
from tokenskip.data.resume import check_same_settings
from tokenskip.errors import UserError
from tokenskip.models import release_memory
from tokenskip.verbs.recipes import Recipe, get_recipe

STATE = "pipeline.json"
CAVEAT = (
    "This is a pipeline check on {model}: a model that cannot do GSM8K arithmetic (accuracy ~0%) and {steps} "
    "LoRA steps, too few to teach it to read γ. It shows that every stage runs and hands its files to the next; "
    "the README's Results hold the tokenskip-gsm8k recipe on a model that reasons."
)


def _count(path: Path) -> int:
    if not path.exists():
        return 0
    with path.open("r", encoding="utf-8") as f:
        return sum(1 for line in f if line.strip())


def _mean_cot(path: Path) -> float | None:
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").split("\n") if line.strip()]
    return sum(r["cot_tokens"] for r in rows) / len(rows) if rows else None


def pipeline(
    out: str = "runs/pipeline",
    recipe: str = "quickstart",
    model: str | None = None,
    dataset: str | None = None,
    split: str | None = None,
    limit: int | None = None,
    backend: str | None = None,
    dtype: str | None = None,
    max_new_tokens: int | None = None,
    batch_size: int | None = None,
    max_cot_tokens: int | None = None,
    keep_incorrect: bool | None = None,
    ratios: str | None = None,
    scorer: str | None = None,
    every_ratio: bool | None = None,
    max_steps: int | None = None,
    epochs: float | None = None,
    learning_rate: float | None = None,
    train_dtype: str | None = None,
    save_dtype: str | None = None,
    final: str | None = None,
    infer_ratios: str | None = None,
    infer_limit: int | None = None,
    bench_dataset: str | None = None,
    bench_limit: int | None = None,
    bench_methods: str | None = None,
    merge_adapter: bool | None = None,
) -> list[dict[str, Any]]:
    """Run generate -> filter -> compress -> build-sft -> train -> infer or bench, and print one summary table.

    Args:
        out: run folder; every stage writes below it. Re-running resumes (finished stages are skipped).
        recipe: the settings of every stage: quickstart (embedded model, 16 problems, a few LoRA steps, infer)
            or tokenskip-gsm8k (qwen2.5-coder-0.5b, 3,000 GSM8K train questions, bench on 200 test ones).
            Each option below, when given, overrides the recipe's value.
        model: target model (embedded alias, Hugging Face id or local folder).
        dataset: questions with reference answers (sample = the 16 bundled problems; gsm8k, a file, ...).
        split: dataset split for named datasets.
        limit: only the first N questions.
        backend: hf or vllm (generate, infer and bench).
        dtype: model dtype for generation (auto, float32, bfloat16).
        max_new_tokens: cap on generated tokens (generate and infer).
        batch_size: generation batch size.
        max_cot_tokens: the filter drops CoTs longer than this (target-model tokens).
        keep_incorrect: keep CoTs whose answer is wrong too (only for models that get ~nothing right).
        ratios: the γ values to compress to (comma list).
        scorer: token-importance scorer for compress (selfinfo offline; llmlingua2 with its checkpoint).
        every_ratio: build-sft writes every example at every γ instead of TokenSkip's one drawn γ.
        max_steps: LoRA optimizer steps (-1: by --epochs).
        epochs: training epochs when --max_steps is -1.
        learning_rate: peak LoRA learning rate.
        train_dtype: dtype of LoRA training (auto, float32, bfloat16).
        save_dtype: dtype of the saved adapter weights (default: the training dtype).
        final: the last stage: infer (a few questions at --infer_ratios) or bench (--bench_methods on a test set).
        infer_ratios: the γ values to ask the trained adapter for (comma list).
        infer_limit: questions answered at each inference γ.
        bench_dataset: test questions for the bench stage (gsm8k = its test split).
        bench_limit: the first N test questions.
        bench_methods: methods to bench (tokenskip@γ runs on the trained adapter).
        merge_adapter: bench the adapter merged into the weights (vllm: its own engine, at the base model's
            speed) instead of as LoRA.
    """
    given = {k: v for k, v in locals().items() if k not in ("out", "recipe")}
    cfg = get_recipe(recipe).with_overrides(given).check()
    gammas = [check_ratio(g) for g in cfg.ratios.split(",") if g.strip()]
    asks = [check_ratio(g) for g in cfg.infer_ratios.split(",") if g.strip()]
    run = Path(out)
    run.mkdir(parents=True, exist_ok=True)
    state = _open_state(run, recipe, cfg)
    files = {
        "generate": run / "gen.jsonl",
        "filter": run / "kept.jsonl",
        "compress": run / "compressed",
        "build-sft": run / "sft",
        "train": run / "adapter",
        "bench": run / "bench",
    }
    t0 = time.perf_counter()

    def stage(name: str, fn: Any, **kwargs: Any) -> Any:
        entry = state["stages"].setdefault(name, {"done": False, "seconds": 0.0, "runs": 0})
        if entry["done"]:
            print(f"\n== {name} == done earlier ({entry['seconds']:.0f}s): skipped", flush=True)
            return None
        print(f"\n== {name} ==", flush=True)
        start = time.perf_counter()
        try:
            result = fn(**kwargs)
            entry["done"] = True
            return result
        finally:
            release_memory()  # a stage's models (scorer, trainer) go back before the next stage loads its own
            entry["seconds"] += time.perf_counter() - start
            entry["runs"] += 1
            write_json_atomic(run / STATE, state)

    gen = {"model": cfg.model, "backend": cfg.backend, "dtype": cfg.dtype}
    stage("generate", _generate, out=str(files["generate"]), dataset=cfg.dataset, split=cfg.split,
          limit=cfg.limit, max_new_tokens=cfg.max_new_tokens, batch_size=cfg.batch_size, **gen)  # fmt: skip
    stage("filter", _filter, input=files["generate"], out=files["filter"], cfg=cfg)
    stage("compress", _compress, input=str(files["filter"]), out=str(files["compress"]),
          ratios=",".join(format_ratio(g) for g in gammas), scorer=cfg.scorer, model=cfg.model)  # fmt: skip
    stage("build-sft", _build_sft, original=str(files["filter"]), compressed=str(files["compress"]),
          out=str(files["build-sft"]), model=cfg.model, every_ratio=cfg.every_ratio)  # fmt: skip
    stage("train", _train, data=str(files["build-sft"]), out=str(files["train"]), cfg=cfg)
    if cfg.final == "bench":
        stage("bench", _bench, out=str(files["bench"]), adapter=str(files["train"]), cfg=cfg, **gen)
    else:
        sample = Path(__file__).resolve().parents[1] / "data" / "samples" / "grade_school.jsonl"
        for g in asks:
            path = run / f"infer-{format_ratio(g)}.jsonl"
            files[f"infer γ={format_ratio(g)}"] = path
            stage(f"infer γ={format_ratio(g)}", _infer, adapter=str(files["train"]), ratio=g,
                  input=str(sample), limit=cfg.infer_limit, out=str(path),
                  max_new_tokens=cfg.max_new_tokens, **gen)  # fmt: skip

    rows = summary_rows(run, files, gammas, asks if cfg.final == "infer" else [], state)
    print("\n" + summary_table(rows))
    if recipe == "quickstart":
        print("\n" + CAVEAT.format(model=cfg.model, steps=cfg.max_steps))
    print(f"\ntokenskip: pipeline finished in {time.perf_counter() - t0:.0f}s; files under {run}/")
    return rows


def _open_state(run: Path, recipe: str, cfg: Recipe) -> dict[str, Any]:
    """``pipeline.json``: the resolved settings (a re-run must share them) and each stage's progress."""
    path = run / STATE
    settings = {"recipe": recipe, **cfg.to_dict()}
    if path.exists():
        state = json.loads(path.read_text(encoding="utf-8"))
        check_same_settings(run, state.get("settings", {}), settings)
        state["settings"] = {**settings, **state.get("settings", {})}  # settings added since: recorded now
        return state
    return {"settings": settings, "stages": {}}


def _generate(**kwargs: Any) -> Any:
    from tokenskip.verbs.generate import generate

    return generate(**kwargs)


def _filter(input: Path, out: Path, cfg: Recipe) -> dict[str, int]:
    from tokenskip.verbs.filter import filter_records

    if cfg.keep_incorrect:
        print("tokenskip: --keep_incorrect true: CoTs with a wrong answer are kept too (TokenSkip keeps only "
              "correct ones; use this only for a model that gets ~nothing right, like the embedded one)")  # fmt: skip
    counts = filter_records(input=str(input), out=str(out), max_cot_tokens=cfg.max_cot_tokens,
                            require_correct=not cfg.keep_incorrect)  # fmt: skip
    if counts["kept"] == 0:
        out.unlink(missing_ok=True)
        raise UserError(
            f"{input}: the filter kept 0 of {counts['total']} CoTs (correct, at most {cfg.max_cot_tokens} "
            "CoT tokens); a model that gets nothing right can only run with --keep_incorrect true"
        )
    return counts


def _compress(**kwargs: Any) -> Any:
    from tokenskip.verbs.compress import compress

    return compress(**kwargs)


def _build_sft(**kwargs: Any) -> Any:
    from tokenskip.verbs.build_sft import build_sft

    return build_sft(**kwargs)


def _train(data: str, out: str, cfg: Recipe) -> Any:
    from tokenskip.verbs.train import train

    if (Path(out) / ADAPTER_INFO).exists():
        print(f"tokenskip: {out} already holds the finished adapter: skipped")
        return None
    steps = cfg.save_steps or max(1, cfg.max_steps // 2)
    train(data=data, out=out, model=cfg.model, max_steps=cfg.max_steps, epochs=cfg.epochs,
                 batch_size=cfg.train_batch_size, grad_accum=cfg.grad_accum, learning_rate=cfg.learning_rate,
                 cutoff=cfg.cutoff, save_steps=steps, eval_size=0, dtype=cfg.train_dtype, progress="none",
                 save_dtype=cfg.save_dtype,
                 group_by_length=cfg.final == "bench")  # fmt: skip
    return None  # the result holds the trained model: dropped, so the next stage's generator gets its memory


def _infer(**kwargs: Any) -> Any:
    from tokenskip.verbs.generate import infer

    return infer(**kwargs)


def _bench(out: str, adapter: str, cfg: Recipe, **gen: Any) -> Any:
    from tokenskip.verbs.bench import bench

    return bench(out=out, adapter=adapter, dataset=cfg.bench_dataset, split=cfg.bench_split,
                 limit=cfg.bench_limit, methods=cfg.bench_methods, max_new_tokens=cfg.bench_max_new_tokens,
                 batch_size=cfg.bench_batch_size, latency_samples=cfg.latency_samples,
                 merge_adapter=cfg.merge_adapter, **gen)  # fmt: skip


def summary_rows(
    run: Path, files: dict[str, Path], gammas: list[float], asks: list[float], state: dict[str, Any]
) -> list[dict[str, Any]]:
    """One row per stage (and per γ): records, the figure that stage is about, wall time, where its files are."""

    def secs(name: str) -> str:
        entry = state["stages"].get(name)
        return f"{entry['seconds']:.0f}" if entry else ""

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
    if not asks and (files["bench"] / "results.json").exists():
        rows.append({"stage": "bench", "records": "", "figure": "table: results.md", "files": files["bench"]})
    for r in rows:
        r["seconds"] = secs(r["stage"].split(" ")[0] if r["stage"].startswith("compress") else r["stage"])
    return rows


def summary_table(rows: list[dict[str, Any]]) -> str:
    lines = ["| stage | records | figure | seconds | files |", "|---|---|---|---|---|"]
    lines += [
        f"| {r['stage']} | {r['records']} | {r['figure']} | {r['seconds']} | {r['files']} |" for r in rows
    ]
    return "\n".join(lines)
