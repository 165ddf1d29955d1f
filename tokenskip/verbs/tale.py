"""``tokenskip tale estimate|run``: the TALE baseline (arXiv 2412.18547) on any local model and backend.

* ``estimate``: ask the model itself for the minimal token budget of each question (zero-shot, strict
  ``[[N]]`` parse with a documented fallback), or predict it with the regression estimator.
* ``run`` (TALE-EP): the ``tale-ep`` method: estimate, then answer with "Let's think step by step and use
  less than β tokens:"; the token accounting includes the estimation call.

Both run as methods through one :class:`~tokenskip.session.Session` (resumable; a re-run with another
model, budget, estimator, template, dtype ... into the same ``--out`` is refused). ``tale search`` (the budget search behind TALE-PT) is in
:mod:`tokenskip.verbs.tale_search`; the method itself in :mod:`tokenskip.methods.tale_ep`.
"""

from __future__ import annotations

import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, Literal

from tokenskip.args import DataArgs, ModelArgs, SamplingArgs, flat_options
from tokenskip.data.datasets import Record
from tokenskip.data.jsonl import read_jsonl, write_json_atomic
from tokenskip.data.prompts import PromptPreset
from tokenskip.errors import UserError
from tokenskip.inference.tale_budget import check_budget, estimation_message
from tokenskip.methods import Context, Method
from tokenskip.methods.tale_ep import (
    BudgetEstimator,
    EstimateArgs,
    TaleEP,
    make_regressor,
    raw_preset,
    regressor_source,
)
from tokenskip.session import Session

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


class TaleEstimate(Method):
    """TALE-EP's first step alone: one budget estimate per question (zero-shot: the model is asked; regression:
    the fitted estimator, tokenizer only). Its prompt is the estimation prompt."""

    kind = "tale-estimate"

    def __init__(self, estimator: str, est: EstimateArgs, regressor: Any = None) -> None:
        super().__init__(None)
        self.estimator, self.est, self.source = estimator, est, regressor
        self._budgets: BudgetEstimator | None = None

    def record_settings(self) -> dict[str, Any]:
        e = self.est
        return {"estimator": self.estimator, "regressor": e.regressor, "fallback_budget": e.fallback_budget,
                "min_budget": e.min_budget, "max_budget": e.max_budget}  # fmt: skip

    def preset(self, base: PromptPreset) -> PromptPreset:
        return raw_preset(base)

    def messages(
        self, question: str, base: PromptPreset, eos: str | None, fields: dict[str, Any] | None = None
    ) -> list[dict[str, str]]:
        return [{"role": "user", "content": estimation_message(question)}]

    def run_batch(self, ctx: Context, records: list[Record]) -> list[dict[str, Any]]:
        if self._budgets is None:
            g, e = ctx.generator, self.est
            self._budgets = BudgetEstimator(
                self.estimator, g.tokenizer, g.count_tokens, g if self.estimator == "zero-shot" else None,
                make_regressor(self.source, g.count_tokens), e.fallback_budget, e.min_budget, e.max_budget,
                ctx.sampling.max_new_tokens, ctx.preset,
            )  # fmt: skip
        rows = self._budgets.estimate(records)
        return [
            {"id": r.id, "question": r.question, "answer": r.answer, "task": r.task, "model": ctx.model, **e}
            for r, e in zip(records, rows, strict=True)
        ]


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
    method = TaleEstimate(estimator, est, reg_source)
    greedy = replace(sampling, max_new_tokens=est.estimate_max_new_tokens, temperature=0.0)
    with Session(model, greedy, on_error=data.on_error) as session:
        result = session.run(method, records, out, needs_model=estimator == "zero-shot", desc="estimate")
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
    with Session(model, sampling, on_error=data.on_error) as session:
        result = session.run(method, records, out)
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
