"""``tokenskip tale estimate|run|search``: the TALE baseline (arXiv 2412.18547) on any local model and backend.

* ``estimate``: ask the model itself for the minimal token budget of each question (zero-shot, strict
  ``[[N]]`` parse with a documented fallback), or predict it with the regression estimator.
* ``run`` (TALE-EP): estimate, then answer with "Let's think step by step and use less than β tokens:";
  the token accounting includes the estimation call.
* ``search``: per question, halve the budget from the vanilla CoT length while the answer stays feasible
  (correct, or correct AND shorter: token elasticity); saves each trace, the elasticity PNG, a summary and
  a regression estimator fitted on the searched budgets. TALE-PT trains on these traces
  (:mod:`tokenskip.training.tale_pt`).

Every prompt goes through the model's chat template; every token count is in the target model's
tokenizer. The pure logic lives in :mod:`tokenskip.inference.tale_budget`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

from tokenskip.data.datasets import Record, load_records
from tokenskip.data.inputs import locate, read_rows
from tokenskip.data.jsonl import ResumableJsonlWriter, read_jsonl, write_json_atomic
from tokenskip.data.prompts import PromptPreset, format_prompt, split_cot
from tokenskip.errors import UserError
from tokenskip.eval.grading import grade
from tokenskip.inference.base import Generator, SamplingConfig
from tokenskip.inference.tale_budget import (
    DEFAULT_FALLBACK_BUDGET,
    DEFAULT_MAX_BUDGET,
    DEFAULT_MIN_BUDGET,
    BudgetEstimate,
    BudgetSearch,
    RegressionEstimator,
    TaleTemplate,
    check_budget,
    elasticity_curve,
    estimation_message,
    get_template,
    mean_tokens_by_step,
    parse_budget,
)
from tokenskip.models import DEFAULT_MODEL

Estimator = Literal["zero-shot", "regression"]
RunEstimator = Literal["zero-shot", "regression", "none"]
Rule = Literal["elasticity", "correct"]

# A user message goes into the chat template as-is: no instruction, the template's own system prompt.
_RAW_MESSAGE = PromptPreset(name="tale-raw", instruction="")


def chat_prompt(tokenizer: Any, message: str) -> str:
    """``message`` as the single user turn of the model's chat template (generation prompt added)."""
    return format_prompt(tokenizer, message, None, _RAW_MESSAGE)


# ------------------------------------------------------------------------------------------- helpers


def _check_bounds(min_budget: int, max_budget: int, fallback_budget: int | None = None) -> None:
    for name, value in (
        ("min_budget", min_budget),
        ("max_budget", max_budget),
        ("fallback_budget", fallback_budget),
    ):
        if value is None:
            continue
        try:
            check_budget(value)
        except ValueError as e:
            raise UserError(f"--{name}: {e}") from None
    if min_budget > max_budget:
        raise UserError(f"--min_budget {min_budget} is larger than --max_budget {max_budget}")


def _template(name: str) -> TaleTemplate:
    try:
        return get_template(name)
    except ValueError as e:
        raise UserError(str(e)) from None


def _records(dataset: str, split: str, limit: int | None, column_map, on_error) -> list[Record]:
    records, stats = load_records(dataset, split=split, column_map=column_map, on_error=on_error, limit=limit)
    for msg in stats.skipped:
        print(f"tokenskip: skipped {msg}")
    return records


def _generator(
    backend: str,
    model: str,
    adapter: str | None,
    batch_size: int,
    dtype: str,
    device: str,
    trust_remote_code: bool,
) -> Generator:
    from tokenskip.inference import make_generator

    return make_generator(
        backend,
        model=model,
        adapter=adapter,
        batch_size=batch_size,
        dtype=dtype,
        device=device,
        trust_remote_code=trust_remote_code,
    )


def _check_common(batch_size: int, max_new_tokens: int, temperature: float = 0.0) -> None:
    if batch_size < 1:
        raise UserError(f"--batch_size must be >= 1, got {batch_size}")
    if max_new_tokens < 1:
        raise UserError(f"--max_new_tokens must be >= 1, got {max_new_tokens}")
    if temperature < 0:
        raise UserError(f"--temperature must be >= 0, got {temperature}")


def _check_estimator(estimator: str, regressor: str | None) -> None:
    if estimator not in ("zero-shot", "regression", "none"):
        raise UserError(f"unknown --estimator '{estimator}' (zero-shot, regression, none)")
    if estimator == "regression" and not regressor:
        raise UserError(
            "--estimator regression needs --regressor (regressor.json or the folder of `tale search`)"
        )
    if regressor and not Path(regressor).exists():
        raise UserError(f"--regressor {regressor}: file not found")


def _chunks(items: Sequence[Any], size: int):
    for start in range(0, len(items), size):
        yield items[start : start + size]


def regressor_source(path: str) -> RegressionEstimator | list[dict[str, Any]]:
    """``--regressor``, read before any model loads: a fitted ``regressor.json`` (written by ``tale
    search``), or the searched traces (``traces.jsonl`` or the search's output folder) to fit one on."""
    p = Path(path)
    if p.is_dir():
        p = p / "regressor.json" if (p / "regressor.json").exists() else p / "traces.jsonl"
    if not p.exists():
        raise UserError(f"--regressor {path}: file not found")
    if p.suffix == ".jsonl":
        return _read_traces(p)
    import json

    try:
        return RegressionEstimator.from_dict(json.loads(p.read_text(encoding="utf-8-sig")))
    except (ValueError, TypeError, AttributeError) as e:
        raise UserError(f"--regressor {p}: {str(e).splitlines()[0][:200]}") from None


def make_regressor(
    source: RegressionEstimator | list[dict[str, Any]] | None,
    count_tokens: Callable[[str], int] | None = None,
) -> RegressionEstimator | None:
    """The estimator of a :func:`regressor_source` (traces are fitted here, with ``count_tokens``)."""
    if source is None or isinstance(source, RegressionEstimator):
        return source
    return fit_regressor(source, count_tokens)


def fit_regressor(
    traces: list[dict[str, Any]], count_tokens: Callable[[str], int] | None = None, l2: float = 1.0
) -> RegressionEstimator:
    """Fit the regression estimator on the optimal budgets of searched traces."""
    rows = [t for t in traces if t.get("searched")]
    questions = [str(t["question"]) for t in rows]
    tokens = []
    for t in rows:
        n = t.get("question_tokens")
        if n is None:
            if count_tokens is None:
                raise UserError("trace has no question_tokens and no tokenizer was given to count them")
            n = count_tokens(str(t["question"]))
        tokens.append(int(n))
    try:
        return RegressionEstimator.fit(questions, tokens, [int(t["optimal_budget"]) for t in rows], l2=l2)
    except ValueError as e:
        raise UserError(f"cannot fit the regression estimator: {e}") from None


def _read_traces(path: str | Path) -> list[dict[str, Any]]:
    rows = []
    for lineno, row in read_rows(path):
        if "id" not in row or "searched" not in row:
            raise UserError(f"{locate(path, lineno)}: not a TALE search trace (no 'id'/'searched')")
        rows.append(row)
    return rows


class BudgetEstimator:
    """Produce one :class:`BudgetEstimate` (+ token accounting) per question, in batches.

    ``zero-shot``: one generation per question with TALE's estimation prompt, parsed by
    :func:`~tokenskip.inference.tale_budget.parse_budget`. ``regression``: no model call.
    """

    def __init__(
        self,
        kind: str,
        tokenizer: Any,
        count_tokens: Callable[[str], int],
        generator: Generator | None = None,
        regressor: RegressionEstimator | None = None,
        fallback_budget: int = DEFAULT_FALLBACK_BUDGET,
        min_budget: int = DEFAULT_MIN_BUDGET,
        max_budget: int = DEFAULT_MAX_BUDGET,
        max_new_tokens: int = 64,
    ) -> None:
        if kind not in ("zero-shot", "regression"):
            raise UserError(f"unknown --estimator '{kind}' (zero-shot, regression)")
        if kind == "zero-shot" and generator is None:
            raise ValueError("the zero-shot estimator needs a generator")
        if kind == "regression" and regressor is None:
            raise UserError(
                "--estimator regression needs --regressor (regressor.json or traces.jsonl of tale search)"
            )
        self.kind, self.tokenizer, self.count_tokens = kind, tokenizer, count_tokens
        self.generator, self.regressor = generator, regressor
        self.fallback_budget, self.min_budget, self.max_budget = fallback_budget, min_budget, max_budget
        self.sampling = SamplingConfig(max_new_tokens=max_new_tokens, temperature=0.0)

    def estimate(self, records: Sequence[Record]) -> list[dict[str, Any]]:
        if self.kind == "regression":
            assert self.regressor is not None
            out = []
            for r in records:
                n = self.count_tokens(r.question)
                budget = min(max(self.regressor.predict(r.question, n), self.min_budget), self.max_budget)
                est = BudgetEstimate(budget, "regression")
                out.append(self._row(est, None, 0, 0, 0.0, n))
            return out
        assert self.generator is not None
        prompts = [chat_prompt(self.tokenizer, estimation_message(r.question)) for r in records]
        gens = self.generator.generate(prompts, self.sampling)
        out = []
        for r, prompt, gen in zip(records, prompts, gens, strict=True):
            est = parse_budget(gen.text, self.fallback_budget, self.min_budget, self.max_budget)
            out.append(
                self._row(
                    est,
                    gen.text,
                    self.count_tokens(prompt),
                    gen.num_tokens,
                    gen.latency_s,
                    self.count_tokens(r.question),
                )
            )
        return out

    def _row(
        self,
        est: BudgetEstimate,
        text: str | None,
        prompt_tokens: int,
        tokens: int,
        latency: float,
        question_tokens: int,
    ) -> dict[str, Any]:
        return {
            "budget": est.budget,
            "budget_source": est.source,
            "budget_reason": est.reason,
            "estimator": self.kind,
            "estimate_output": text,
            "estimate_prompt_tokens": prompt_tokens,
            "estimate_tokens": tokens,
            "estimate_latency_s": round(latency, 4),
            "question_tokens": question_tokens,
        }


def _print_sources(rows: list[dict[str, Any]]) -> str:
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["budget_source"]] = counts.get(r["budget_source"], 0) + 1
    return ", ".join(f"{k}: {v}" for k, v in sorted(counts.items()))


def _mean(values: list[float]) -> float | None:
    return round(sum(values) / len(values), 2) if values else None


# ------------------------------------------------------------------------------------------ estimate


def estimate(
    out: str,
    model: str = DEFAULT_MODEL,
    dataset: str = "sample",
    split: str = "test",
    limit: int | None = None,
    estimator: Estimator = "zero-shot",
    regressor: str | None = None,
    fallback_budget: int = DEFAULT_FALLBACK_BUDGET,
    min_budget: int = DEFAULT_MIN_BUDGET,
    max_budget: int = DEFAULT_MAX_BUDGET,
    estimate_max_new_tokens: int = 64,
    batch_size: int = 8,
    backend: Literal["hf", "vllm"] = "hf",
    adapter: str | None = None,
    dtype: str = "auto",
    device: str = "auto",
    column_map: dict[str, str] | None = None,
    on_error: Literal["raise", "skip"] = "raise",
    trust_remote_code: bool = False,
) -> dict[str, Any]:
    """Estimate each question's token budget (TALE-EP step 1) and write one JSONL record per question.

    Args:
        out: output JSONL (id, question, answer, budget, budget_source, budget_reason, estimate_output,
            estimate_prompt_tokens, estimate_tokens, question_tokens, ...). Re-running resumes.
        model: embedded alias (smollm2-135m), Hugging Face id, or local folder / .gguf file.
        dataset: sample, gsm8k, math500, gsm8k-zero, a .jsonl/.json/.parquet file, or a hub dataset id.
        split: dataset split for named/hub datasets (ignored for files).
        limit: only the first N questions.
        estimator: zero-shot (the model is asked for [[N]]) or regression (fitted on `tale search` budgets).
        regressor: for --estimator regression: regressor.json, or a search's traces.jsonl / output folder.
        fallback_budget: budget used when the zero-shot reply has no usable [[N]] (never 0 or negative).
        min_budget: estimates below this are raised to it.
        max_budget: estimates above this (including absurdly long numbers) are lowered to it.
        estimate_max_new_tokens: cap on the tokens of the estimation reply.
        batch_size: prompts per generate call.
        backend: hf (transformers) or vllm.
        adapter: optional peft LoRA adapter folder.
        dtype: auto (bf16 on GPU, fp32 on CPU), float32, bfloat16, float16.
        device: auto, cpu, cuda, cuda:N.
        column_map: rename columns of a custom file, e.g. {"question": "prompt", "answer": "target"}.
        on_error: a malformed row is fatal (raise) or skipped and counted (skip).
        trust_remote_code: allow custom model code from the hub (off by default).
    """
    _check_bounds(min_budget, max_budget, fallback_budget)
    if estimate_max_new_tokens < 1:
        raise UserError(f"--estimate_max_new_tokens must be >= 1, got {estimate_max_new_tokens}")
    _check_estimator(estimator, regressor)
    records = _records(dataset, split, limit, column_map, on_error)
    reg_source = regressor_source(regressor) if regressor else None  # read before any model loads
    t0 = time.perf_counter()
    generator: Generator | None = None
    if estimator == "zero-shot":
        generator = _generator(backend, model, adapter, batch_size, dtype, device, trust_remote_code)
        tokenizer, count = generator.tokenizer, generator.count_tokens
    else:
        from tokenskip.models import load_tokenizer

        tokenizer = load_tokenizer(model, trust_remote_code=trust_remote_code)

        def count(text: str) -> int:
            return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    reg = make_regressor(reg_source, count)
    est = BudgetEstimator(
        estimator,
        tokenizer,
        count,
        generator,
        reg,
        fallback_budget,
        min_budget,
        max_budget,
        estimate_max_new_tokens,
    )
    written = 0
    with ResumableJsonlWriter(out) as writer:
        todo = [r for r in records if r.id not in writer.done]
        for batch in _chunks(todo, batch_size):
            for r, e in zip(batch, est.estimate(batch), strict=True):
                writer.write(
                    {
                        "id": r.id,
                        "question": r.question,
                        "answer": r.answer,
                        "task": r.task,
                        "model": model,
                        **e,
                    }
                )
                written += 1
    if generator is not None:
        generator.close()
    rows = [row for _, row in read_jsonl(out)]
    summary = {
        "total": len(records),
        "estimated": written,
        "skipped": len(records) - len(todo),
        "mean_budget": _mean([float(r["budget"]) for r in rows]),
        "sources": {
            s: sum(1 for r in rows if r["budget_source"] == s)
            for s in sorted({r["budget_source"] for r in rows})
        },
    }
    print(
        f"tokenskip: {written} budgets estimated, {summary['skipped']} already done ({_print_sources(rows)}); "
        f"mean budget {summary['mean_budget']} -> {out} ({time.perf_counter() - t0:.1f}s)"
    )
    return summary


# ----------------------------------------------------------------------------------------------- run


def _load_budget_file(path: str, records: list[Record]) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for lineno, row in read_rows(path):
        if "id" not in row or "budget" not in row:
            raise UserError(f"{locate(path, lineno)}: not a `tale estimate` record (no 'id'/'budget')")
        try:
            row["budget"] = check_budget(row["budget"])
        except ValueError as e:
            raise UserError(f"{locate(path, lineno)}: field 'budget': {e}") from None
        found[str(row["id"])] = row
    missing = [r.id for r in records if r.id not in found]
    if missing:
        raise UserError(f"--budgets {path} has no budget for {len(missing)} question(s), e.g. '{missing[0]}'")
    keys = (
        "budget",
        "budget_source",
        "budget_reason",
        "estimator",
        "estimate_output",
        "estimate_prompt_tokens",
        "estimate_tokens",
        "estimate_latency_s",
        "question_tokens",
    )
    return {rid: {k: row.get(k) for k in keys} for rid, row in found.items()}


def run(
    out: str,
    model: str = DEFAULT_MODEL,
    dataset: str = "sample",
    split: str = "test",
    limit: int | None = None,
    estimator: RunEstimator = "zero-shot",
    regressor: str | None = None,
    budgets: str | None = None,
    budget: int | None = None,
    template: str = "tale",
    fallback_budget: int = DEFAULT_FALLBACK_BUDGET,
    min_budget: int = DEFAULT_MIN_BUDGET,
    max_budget: int = DEFAULT_MAX_BUDGET,
    estimate_max_new_tokens: int = 64,
    max_new_tokens: int = 512,
    temperature: float = 0.0,
    top_p: float = 1.0,
    seed: int = 42,
    batch_size: int = 8,
    backend: Literal["hf", "vllm"] = "hf",
    adapter: str | None = None,
    dtype: str = "auto",
    device: str = "auto",
    column_map: dict[str, str] | None = None,
    on_error: Literal["raise", "skip"] = "raise",
    trust_remote_code: bool = False,
) -> dict[str, Any]:
    """TALE-EP end to end: estimate a budget, answer with the budget-aware prompt, grade, count tokens.

    Args:
        out: output JSONL; one graded record per question (budget, estimate_*, prompt, output, cot,
            prediction, correct, output_tokens, total_output_tokens = estimation + answer, latency_s, ...).
            Re-running resumes. A summary goes to <out>.summary.json.
        model: embedded alias (smollm2-135m), Hugging Face id, or local folder / .gguf file.
        dataset: sample, gsm8k, math500, gsm8k-zero, a .jsonl/.json/.parquet file, or a hub dataset id.
        split: dataset split for named/hub datasets (ignored for files).
        limit: only the first N questions.
        estimator: zero-shot (the model is asked for [[N]]), regression (fitted on `tale search` budgets),
            or none (no budget: the vanilla "Let's think step by step:" prompt; the baseline, and how a
            TALE-PT adapter is evaluated).
        regressor: for --estimator regression: regressor.json, or a search's traces.jsonl / output folder.
        budgets: reuse the budgets of a `tale estimate` output instead of estimating again (its estimation
            tokens are still counted).
        budget: one fixed budget for every question (no estimation; for budget sweeps).
        template: prompt template: tale ("Q: ...\\nLet's think step by step and use less than β tokens:")
            or tale-boxed (also asks for \\boxed{}; use it for MATH).
        fallback_budget: budget used when the zero-shot reply has no usable [[N]] (never 0 or negative).
        min_budget: estimates below this are raised to it.
        max_budget: estimates above this (including absurdly long numbers) are lowered to it.
        estimate_max_new_tokens: cap on the tokens of the estimation reply.
        max_new_tokens: cap on the tokens of the answer (the budget is a request in the prompt, not a cap).
        temperature: 0 = greedy decoding.
        top_p: nucleus mass when sampling.
        seed: random seed for sampling.
        batch_size: prompts per generate call.
        backend: hf (transformers) or vllm.
        adapter: optional peft LoRA adapter folder (e.g. a TALE-PT adapter).
        dtype: auto (bf16 on GPU, fp32 on CPU), float32, bfloat16, float16.
        device: auto, cpu, cuda, cuda:N.
        column_map: rename columns of a custom file, e.g. {"question": "prompt", "answer": "target"}.
        on_error: a malformed row is fatal (raise) or skipped and counted (skip).
        trust_remote_code: allow custom model code from the hub (off by default).
    """
    _check_bounds(min_budget, max_budget, fallback_budget)
    _check_common(batch_size, max_new_tokens, temperature)
    if estimate_max_new_tokens < 1:
        raise UserError(f"--estimate_max_new_tokens must be >= 1, got {estimate_max_new_tokens}")
    if budget is not None and budgets is not None:
        raise UserError(
            "give either --budget (one fixed budget) or --budgets (a `tale estimate` file), not both"
        )
    if budget is not None:
        try:
            budget = check_budget(budget)
        except ValueError as e:
            raise UserError(f"--budget: {e}") from None
    if budget is None and budgets is None:
        _check_estimator(estimator, regressor)
    tmpl = _template(template)
    records = _records(dataset, split, limit, column_map, on_error)
    from_file = _load_budget_file(budgets, records) if budgets else None
    use_regressor = regressor and from_file is None and budget is None and estimator != "none"
    reg_source = regressor_source(regressor) if use_regressor else None  # read before any model loads

    t0 = time.perf_counter()
    generator = _generator(backend, model, adapter, batch_size, dtype, device, trust_remote_code)
    est: BudgetEstimator | None = None
    vanilla = estimator == "none" and from_file is None and budget is None
    if from_file is None and budget is None and not vanilla:
        reg = make_regressor(reg_source, generator.count_tokens)
        est = BudgetEstimator(
            estimator,
            generator.tokenizer,
            generator.count_tokens,
            generator,
            reg,
            fallback_budget,
            min_budget,
            max_budget,
            estimate_max_new_tokens,
        )
    sampling = SamplingConfig(max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, seed=seed)

    written = 0
    with ResumableJsonlWriter(out) as writer:
        todo = [r for r in records if r.id not in writer.done]
        for batch in _chunks(todo, batch_size):
            if est is not None:
                estimates = est.estimate(batch)
            elif from_file is not None:
                estimates = [{**from_file[r.id], "budgets_file": str(budgets)} for r in batch]
            else:
                estimates = [
                    {
                        "budget": None if vanilla else budget,
                        "budget_source": "none" if vanilla else "fixed",
                        "budget_reason": "",
                        "estimator": "none" if vanilla else "fixed",
                        "estimate_output": None,
                        "estimate_prompt_tokens": 0,
                        "estimate_tokens": 0,
                        "estimate_latency_s": 0.0,
                        "question_tokens": generator.count_tokens(r.question),
                    }
                    for r in batch
                ]
            prompts = [
                chat_prompt(generator.tokenizer, tmpl.user_message(r.question, e["budget"]))
                for r, e in zip(batch, estimates, strict=True)
            ]
            gens = generator.generate(prompts, sampling)
            for r, e, prompt, gen in zip(batch, estimates, prompts, gens, strict=True):
                prediction, correct = grade(gen.text, r.answer, r.task)
                cot = split_cot(gen.text)
                est_tokens = int(e.get("estimate_tokens") or 0)
                est_latency = float(e.get("estimate_latency_s") or 0.0)
                writer.write(
                    {
                        "id": r.id,
                        "question": r.question,
                        "answer": r.answer,
                        "task": r.task,
                        "model": model,
                        "template": tmpl.name,
                        **e,
                        "prompt": prompt,
                        "prompt_tokens": generator.count_tokens(prompt),
                        "output": gen.text,
                        "cot": cot,
                        "prediction": prediction,
                        "correct": correct,
                        "cot_tokens": generator.count_tokens(cot),
                        "output_tokens": gen.num_tokens,
                        "total_output_tokens": gen.num_tokens + est_tokens,
                        "budget_respected": None if e["budget"] is None else gen.num_tokens < e["budget"],
                        "finish_reason": gen.finish_reason,
                        "answer_latency_s": round(gen.latency_s, 4),
                        "latency_s": round(gen.latency_s + est_latency, 4),
                        "batch_size": gen.batch_size,
                    }
                )
                written += 1
    generator.close()
    rows = [row for _, row in read_jsonl(out)]
    summary = summarize_run(rows)
    summary.update(total=len(records), generated=written, skipped=len(records) - len(todo))
    write_json_atomic(Path(out).with_suffix(".summary.json"), summary)
    acc = summary["accuracy"]
    print(
        f"tokenskip: TALE-EP {written} answered, {summary['skipped']} already done; accuracy "
        f"{'-' if acc is None else f'{100 * acc:.1f}%'}, mean budget {summary['mean_budget']}, mean tokens "
        f"{summary['mean_output_tokens']} answer + {summary['mean_estimate_tokens']} estimation -> {out} "
        f"({time.perf_counter() - t0:.1f}s)"
    )
    return summary


def summarize_run(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Accuracy and token accounting of TALE-EP records (answer, estimation and their sum)."""
    n = len(rows)
    return {
        "n": n,
        "accuracy": _mean([float(bool(r["correct"])) for r in rows]),
        "mean_budget": _mean([float(r["budget"]) for r in rows if r.get("budget") is not None]),
        "mean_output_tokens": _mean([float(r["output_tokens"]) for r in rows]),
        "mean_estimate_tokens": _mean([float(r.get("estimate_tokens") or 0) for r in rows]),
        "mean_total_output_tokens": _mean([float(r["total_output_tokens"]) for r in rows]),
        "mean_latency_s": _mean([float(r["latency_s"]) for r in rows]),
        "budget_respected_share": _mean(
            [float(r["budget_respected"]) for r in rows if r.get("budget_respected") is not None]
        ),
        "budget_sources": {
            s: sum(1 for r in rows if r["budget_source"] == s)
            for s in sorted({r["budget_source"] for r in rows})
        },
    }


# -------------------------------------------------------------------------------------------- search


def _answer(gen_text: str, record: Record) -> tuple[str, bool]:
    return grade(gen_text, record.answer, record.task)


def search_batch(
    generator: Generator,
    records: Sequence[Record],
    template: TaleTemplate,
    sampling: SamplingConfig,
    rule: str = "elasticity",
    require_correct: bool = True,
    min_budget: int = DEFAULT_MIN_BUDGET,
    max_steps: int | None = None,
) -> list[dict[str, Any]]:
    """Budget search for a batch of questions, in lockstep (one generate call per halving round).

    Returns one trace per question: the vanilla answer, every budget tried (tokens, correctness,
    feasibility, output), the optimal budget and answer, and why the search stopped.
    """
    tok = generator.tokenizer
    vanilla_prompts = [chat_prompt(tok, template.user_message(r.question)) for r in records]
    vanilla = generator.generate(vanilla_prompts, sampling)
    traces: list[dict[str, Any]] = []
    searches: list[BudgetSearch | None] = []
    outputs: list[list[dict[str, Any]]] = []
    for r, gen in zip(records, vanilla, strict=True):
        prediction, correct = _answer(gen.text, r)
        trace = {
            "id": r.id,
            "question": r.question,
            "answer": r.answer,
            "task": r.task,
            "question_tokens": generator.count_tokens(r.question),
            "template": template.name,
            "rule": rule,
            "require_correct": require_correct,
            "min_budget": min_budget,
            "max_steps": max_steps,
            "max_new_tokens": sampling.max_new_tokens,
            "vanilla_output": gen.text,
            "vanilla_prediction": prediction,
            "vanilla_correct": correct,
            "vanilla_tokens": gen.num_tokens,
            "vanilla_finish_reason": gen.finish_reason,
        }
        traces.append(trace)
        outputs.append([])
        if require_correct and not correct:
            searches.append(None)
        else:
            searches.append(
                BudgetSearch(
                    gen.num_tokens,
                    rule=rule,
                    min_budget=min_budget,
                    max_steps=max_steps,
                    require_correct=require_correct,
                )
            )
    while True:
        active = [i for i, s in enumerate(searches) if s is not None and not s.done]
        if not active:
            break
        budgets = [searches[i].next_budget() for i in active]  # type: ignore[union-attr]
        prompts = [
            chat_prompt(tok, template.user_message(records[i].question, b))
            for i, b in zip(active, budgets, strict=True)
        ]
        gens = generator.generate(prompts, sampling)
        for i, gen in zip(active, gens, strict=True):
            prediction, correct = _answer(gen.text, records[i])
            searches[i].record(gen.num_tokens, correct)  # type: ignore[union-attr]
            outputs[i].append(
                {"output": gen.text, "prediction": prediction, "finish_reason": gen.finish_reason}
            )
    for trace, search, outs in zip(traces, searches, outputs, strict=True):
        if search is None:
            trace.update(
                searched=False,
                steps=[],
                optimal_budget=None,
                optimal_tokens=None,
                optimal_output=None,
                optimal_correct=None,
                improved=False,
                stop_reason="vanilla answer incorrect",
            )
            continue
        s = search.summary()
        steps = [{**step, **out} for step, out in zip(s["steps"], outs, strict=True)]
        best = s["optimal_step"]
        trace.update(
            searched=True,
            steps=steps,
            optimal_budget=s["optimal_budget"],
            optimal_tokens=s["optimal_tokens"],
            optimal_output=trace["vanilla_output"] if best is None else steps[best]["output"],
            optimal_correct=trace["vanilla_correct"] if best is None else steps[best]["correct"],
            improved=s["improved"],
            stop_reason=s["stop_reason"],
        )
    return traces


def summarize_search(traces: list[dict[str, Any]]) -> dict[str, Any]:
    """Counts and mean token costs of search traces (vanilla vs optimal budget, searched questions only)."""
    searched = [t for t in traces if t.get("searched")]
    vanilla = [float(t["vanilla_tokens"]) for t in searched]
    optimal = [float(t["optimal_tokens"]) for t in searched]
    stops: dict[str, int] = {}
    for t in traces:
        stops[t["stop_reason"]] = stops.get(t["stop_reason"], 0) + 1
    mean_v, mean_o = _mean(vanilla), _mean(optimal)
    return {
        "questions": len(traces),
        "searched": len(searched),
        "skipped_incorrect_vanilla": sum(1 for t in traces if not t.get("searched")),
        "improved": sum(1 for t in searched if t.get("improved")),
        "vanilla_accuracy": _mean([float(bool(t["vanilla_correct"])) for t in traces]),
        "mean_vanilla_tokens": mean_v,
        "mean_optimal_tokens": mean_o,
        "mean_optimal_budget": _mean([float(t["optimal_budget"]) for t in searched]),
        "token_reduction": None if not mean_v or mean_o is None else round(1 - mean_o / mean_v, 4),
        "mean_steps": _mean([float(len(t["steps"])) for t in searched]),
        "generations": len(traces) + sum(len(t["steps"]) for t in traces),
        "stop_reasons": dict(sorted(stops.items())),
    }


def plot_elasticity(traces: list[dict[str, Any]], path: str | Path, title: str = "") -> Path:
    """Draw tokens vs budget for every searched question (the token-elasticity curve) into a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    searched = [t for t in traces if t.get("searched")]
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    lo, hi = float("inf"), 1.0
    for t in searched:
        pts = elasticity_curve(t)
        xs, ys = [p[0] for p in pts], [max(p[1], 1) for p in pts]
        ax.plot(xs, ys, color="tab:blue", alpha=0.25, linewidth=1, marker="o", markersize=2)
        lo, hi = min(lo, *xs, *ys), max(hi, *xs, *ys)
    if searched:
        mean = mean_tokens_by_step(searched)
        ax.plot(
            [m[0] for m in mean],
            [max(m[1], 1) for m in mean],
            color="tab:red",
            linewidth=2,
            marker="s",
            markersize=4,
            label="mean per halving step",
        )
        ax.plot([lo, hi], [lo, hi], color="grey", linestyle="--", linewidth=1, label="tokens = budget")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log", base=2)
        ax.legend(loc="upper left", fontsize=8)
    else:
        ax.text(
            0.5,
            0.5,
            "no searched questions\n(vanilla answers all incorrect?)",
            ha="center",
            va="center",
            transform=ax.transAxes,
        )
    ax.set_xlabel("token budget in the prompt (rightmost point: vanilla CoT length)")
    ax.set_ylabel("tokens actually generated")
    ax.set_title(title or f"Token elasticity ({len(searched)} searched questions)", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(p.stem + ".tmp.png")
    fig.savefig(tmp, format="png")
    plt.close(fig)
    tmp.replace(p)
    return p


def _check_resume(path: Path, settings: dict[str, Any]) -> None:
    """Refuse to append traces made with other search settings to an existing traces.jsonl."""
    for lineno, trace in read_jsonl(path):
        diff = [k for k, v in settings.items() if k in trace and trace[k] != v]
        if diff:
            changes = ", ".join(f"{k}: {trace[k]!r} -> {settings[k]!r}" for k in diff)
            raise UserError(
                f"{path}:{lineno} was searched with other settings ({changes}); "
                "use the same settings to resume, or another --out"
            )


def search(
    out: str,
    model: str = DEFAULT_MODEL,
    dataset: str = "sample",
    split: str = "train",
    limit: int | None = None,
    rule: Rule = "elasticity",
    require_correct: bool = True,
    min_budget: int = DEFAULT_MIN_BUDGET,
    max_steps: int | None = None,
    template: str = "tale",
    max_new_tokens: int = 512,
    temperature: float = 0.0,
    top_p: float = 1.0,
    seed: int = 42,
    batch_size: int = 8,
    backend: Literal["hf", "vllm"] = "hf",
    adapter: str | None = None,
    dtype: str = "auto",
    device: str = "auto",
    column_map: dict[str, str] | None = None,
    on_error: Literal["raise", "skip"] = "raise",
    trust_remote_code: bool = False,
) -> dict[str, Any]:
    """Offline budget search: per question, halve the budget from the vanilla CoT length while feasible.

    Writes into the folder --out: traces.jsonl (one trace per question, resumable), elasticity.png
    (tokens vs budget), summary.json, and regressor.json (regression estimator fitted on the optimal
    budgets, when at least 2 questions were searched).

    Args:
        out: output folder.
        model: embedded alias (smollm2-135m), Hugging Face id, or local folder / .gguf file.
        dataset: sample, gsm8k, math500, gsm8k-zero, a .jsonl/.json/.parquet file, or a hub dataset id.
        split: dataset split for named/hub datasets (ignored for files); train, as TALE-PT trains on it.
        limit: only the first N questions.
        rule: elasticity (feasible = correct AND fewer tokens than at the previous budget; the paper's
            search) or correct (feasible = correct: plain binary halving).
        require_correct: the paper's rule: only questions whose vanilla CoT is correct are searched, and a
            budget is feasible only if its answer is correct. false = correctness is recorded but not
            required (every question is searched; for pipeline tests on models that cannot solve the task;
            the budgets found are then not TALE's).
        min_budget: never try a budget below this.
        max_steps: at most this many halvings per question (none: until infeasible or below min_budget).
        template: prompt template: tale or tale-boxed (see `tale run`).
        max_new_tokens: cap on every generated answer (the vanilla answer's length starts the search).
        temperature: 0 = greedy decoding (recommended: the search compares single samples).
        top_p: nucleus mass when sampling.
        seed: random seed for sampling.
        batch_size: questions searched together (one generate call per halving round).
        backend: hf (transformers) or vllm.
        adapter: optional peft LoRA adapter folder.
        dtype: auto (bf16 on GPU, fp32 on CPU), float32, bfloat16, float16.
        device: auto, cpu, cuda, cuda:N.
        column_map: rename columns of a custom file, e.g. {"question": "prompt", "answer": "target"}.
        on_error: a malformed row is fatal (raise) or skipped and counted (skip).
        trust_remote_code: allow custom model code from the hub (off by default).
    """
    _check_bounds(min_budget, max(min_budget, DEFAULT_MAX_BUDGET))
    _check_common(batch_size, max_new_tokens, temperature)
    if max_steps is not None and max_steps < 1:
        raise UserError(f"--max_steps must be >= 1, got {max_steps}")
    if rule not in ("elasticity", "correct"):
        raise UserError(f"unknown --rule '{rule}' (elasticity, correct)")
    tmpl = _template(template)
    folder = Path(out)
    if folder.exists() and not folder.is_dir():
        raise UserError(f"--out {out} is a file; tale search writes a folder")
    records = _records(dataset, split, limit, column_map, on_error)
    traces_path = folder / "traces.jsonl"

    t0 = time.perf_counter()
    sampling = SamplingConfig(max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, seed=seed)
    written = 0
    generator: Generator | None = None
    settings = {"model": model, "template": tmpl.name, "rule": rule, "require_correct": require_correct,
                "min_budget": min_budget, "max_steps": max_steps, "max_new_tokens": max_new_tokens}  # fmt: skip
    with ResumableJsonlWriter(traces_path) as writer:
        if writer.done:
            _check_resume(traces_path, settings)
        todo = [r for r in records if r.id not in writer.done]
        if todo:
            generator = _generator(backend, model, adapter, batch_size, dtype, device, trust_remote_code)
        for batch in _chunks(todo, batch_size):
            assert generator is not None
            for trace in search_batch(
                generator, batch, tmpl, sampling, rule, require_correct, min_budget, max_steps
            ):
                trace["model"] = model
                writer.write(trace)
                written += 1
            print(f"tokenskip: searched {written}/{len(todo)} ({time.perf_counter() - t0:.0f}s)", flush=True)
    if generator is not None:
        generator.close()

    ids = {r.id for r in records}
    traces = [t for t in _read_traces(traces_path) if str(t["id"]) in ids]
    summary = summarize_search(traces)
    summary.update(
        rule=rule,
        require_correct=require_correct,
        min_budget=min_budget,
        model=model,
        new=written,
        resumed=len(records) - len(todo),
    )
    plot_elasticity(
        traces,
        folder / "elasticity.png",
        f"Token elasticity: {model}, rule={rule}, {summary['searched']} searched questions",
    )
    if summary["searched"] >= 2:
        write_json_atomic(folder / "regressor.json", fit_regressor(traces).to_dict())
        summary["regressor"] = str(folder / "regressor.json")
    else:
        summary["regressor"] = None
    write_json_atomic(folder / "summary.json", summary)
    red = summary["token_reduction"]
    print(
        f"tokenskip: {summary['searched']} of {summary['questions']} questions searched "
        f"({summary['improved']} with a smaller feasible budget); mean tokens {summary['mean_vanilla_tokens']} "
        f"vanilla -> {summary['mean_optimal_tokens']} at the optimal budget"
        f"{'' if red is None else f' ({100 * red:.1f}% fewer)'} -> {folder} ({time.perf_counter() - t0:.1f}s)"
    )
    return summary
