"""``tokenskip tale estimate|run``: the TALE baseline (arXiv 2412.18547) on any local model and backend.

* ``estimate``: ask the model itself for the minimal token budget of each question (zero-shot, strict
  ``[[N]]`` parse with a documented fallback), or predict it with the regression estimator.
* ``run`` (TALE-EP): the ``tale-ep`` method: estimate, then answer with "Let's think step by step and use
  less than β tokens:"; the token accounting includes the estimation call.

Both run through the one resumable runner. ``tale search`` (the budget search behind TALE-PT) is in
:mod:`tokenskip.workflows.tale_search`; the method itself in :mod:`tokenskip.methods.tale_ep`.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Literal

from tokenskip.args import DataArgs, ModelArgs, SamplingArgs, flat_options
from tokenskip.data.datasets import Record
from tokenskip.data.jsonl import read_jsonl, write_json_atomic
from tokenskip.errors import UserError
from tokenskip.inference.runner import run_records
from tokenskip.inference.tale_budget import (
    check_budget,
)
from tokenskip.methods.tale_ep import BudgetEstimator, EstimateArgs, TaleEP, make_regressor, regressor_source
from tokenskip.workflows.generate import run_method

Estimator = Literal["zero-shot", "regression"]
RunEstimator = Literal["zero-shot", "regression", "none"]


def check_estimator(estimator: str, regressor: str | None) -> None:
    if estimator not in ("zero-shot", "regression", "none"):
        raise UserError(f"unknown --estimator '{estimator}' (zero-shot, regression, none)")
    if estimator == "regression" and not regressor:
        raise UserError(
            "--estimator regression needs --regressor (regressor.json or the folder of `tale search`)"
        )
    if regressor and not Path(regressor).exists():
        raise UserError(f"--regressor {regressor}: file not found")


def _mean(values: list[float]) -> float | None:
    return round(sum(values) / len(values), 2) if values else None


def _sources(rows: list[dict[str, Any]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["budget_source"]] = counts.get(r["budget_source"], 0) + 1
    return dict(sorted(counts.items()))


@flat_options(data=DataArgs(), model=ModelArgs(), sampling=SamplingArgs(), est=EstimateArgs())
def estimate(
    out: str,
    data: DataArgs,
    model: ModelArgs,
    sampling: SamplingArgs,
    est: EstimateArgs,
    estimator: Estimator = "zero-shot",
) -> dict[str, Any]:
    """Estimate each question's token budget (TALE-EP step 1) and write one JSONL record per question.

    Args:
        out: output JSONL (id, question, answer, budget, budget_source, budget_reason, estimate_output,
            estimate_prompt_tokens, estimate_tokens, question_tokens, ...). Re-running resumes.
        estimator: zero-shot (the model is asked for [[N]]) or regression (fitted on `tale search` budgets).
    """
    check_estimator(estimator, est.regressor)
    records, _ = data.load()
    reg_source = regressor_source(est.regressor) if est.regressor else None  # read before any model loads
    t0 = time.perf_counter()
    batch = sampling.batch(model.backend)
    generator = None
    if estimator == "zero-shot":
        generator = model.open(batch)
        tokenizer, count = generator.tokenizer, generator.count_tokens
    else:
        from tokenskip.models import load_tokenizer

        tokenizer = load_tokenizer(model.model, trust_remote_code=model.trust_remote_code)

        def count(text: str) -> int:
            return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    reg = make_regressor(reg_source, count)
    estimator_ = BudgetEstimator(
        estimator, tokenizer, count, generator, reg, est.fallback_budget, est.min_budget, est.max_budget,
        est.estimate_max_new_tokens, model.preset(None),
    )  # fmt: skip

    def step(batch_records: list[Record]) -> list[dict[str, Any]]:
        return [
            {
                "id": r.id,
                "question": r.question,
                "answer": r.answer,
                "task": r.task,
                "model": model.model,
                **e,
            }
            for r, e in zip(batch_records, estimator_.estimate(batch_records), strict=True)
        ]

    try:
        result = run_records(records, step, out, batch, desc="estimate")
    finally:
        if generator is not None:
            generator.close()
    rows = [row for _, row in read_jsonl(out)]
    summary = {
        "total": len(records),
        "estimated": result.generated,
        "skipped": result.skipped,
        "mean_budget": _mean([float(r["budget"]) for r in rows]),
        "sources": _sources(rows),
    }
    sources = ", ".join(f"{k}: {v}" for k, v in summary["sources"].items())
    print(
        f"tokenskip: {result.generated} budgets estimated, {result.skipped} already done ({sources}); "
        f"mean budget {summary['mean_budget']} -> {out} ({time.perf_counter() - t0:.1f}s)"
    )
    return summary


@flat_options(data=DataArgs(), model=ModelArgs(), sampling=SamplingArgs(), est=EstimateArgs())
def run(
    out: str,
    data: DataArgs,
    model: ModelArgs,
    sampling: SamplingArgs,
    est: EstimateArgs,
    estimator: RunEstimator = "zero-shot",
    budgets: str | None = None,
    budget: int | None = None,
    template: str = "tale",
) -> dict[str, Any]:
    """TALE-EP end to end: estimate a budget, answer with the budget-aware prompt, grade, count tokens.

    Args:
        out: output JSONL; one graded record per question (budget, estimate_*, prompt, output, cot,
            prediction, correct, output_tokens, total_output_tokens = estimation + answer, latency_s, ...).
            Re-running resumes. A summary goes to <out>.summary.json.
        estimator: zero-shot (the model is asked for [[N]]), regression (fitted on `tale search` budgets),
            or none (no budget: the vanilla "Let's think step by step:" prompt; the baseline, and how a
            TALE-PT adapter is evaluated).
        budgets: reuse the budgets of a `tale estimate` output instead of estimating again (its estimation
            tokens are still counted).
        budget: one fixed budget for every question (no estimation; for budget sweeps).
        template: prompt template: tale ("Q: ...\\nLet's think step by step and use less than β tokens:")
            or tale-boxed (also asks for \\boxed{}; use it for MATH).
    """
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
        check_estimator(estimator, est.regressor)
    kind = "fixed" if budget is not None else estimator
    method = TaleEP(budget, estimator=kind, template=template, budgets=budgets, **asdict(est))
    records, _ = data.load()
    t0 = time.perf_counter()
    result = run_method(method, model, records, out, sampling, settings={"model": model.model})
    rows = [row for _, row in read_jsonl(out)]
    summary = summarize_run(rows)
    summary.update(result.counts())
    write_json_atomic(Path(out).with_suffix(".summary.json"), summary)
    acc = summary["accuracy"]
    print(
        f"tokenskip: TALE-EP {result.generated} answered, {result.skipped} already done; accuracy "
        f"{'-' if acc is None else f'{100 * acc:.1f}%'}, mean budget {summary['mean_budget']}, mean tokens "
        f"{summary['mean_output_tokens']} answer + {summary['mean_estimate_tokens']} estimation -> {out} "
        f"({time.perf_counter() - t0:.1f}s)"
    )
    return summary


def summarize_run(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Accuracy and token accounting of TALE-EP records (answer, estimation and their sum)."""
    return {
        "n": len(rows),
        "accuracy": _mean([float(bool(r["correct"])) for r in rows]),
        "mean_budget": _mean([float(r["budget"]) for r in rows if r.get("budget") is not None]),
        "mean_output_tokens": _mean([float(r["output_tokens"]) for r in rows]),
        "mean_estimate_tokens": _mean([float(r.get("estimate_tokens") or 0) for r in rows]),
        "mean_total_output_tokens": _mean([float(r["total_output_tokens"]) for r in rows]),
        "mean_latency_s": _mean([float(r["latency_s"]) for r in rows]),
        "budget_respected_share": _mean(
            [float(r["budget_respected"]) for r in rows if r.get("budget_respected") is not None]
        ),
        "budget_sources": _sources(rows),
    }
