"""``tokenskip tale search``: TALE's offline budget search, the data behind TALE-PT and the regression estimator.

Per question, halve the budget from the vanilla CoT length while the answer stays feasible (correct, or
correct AND shorter: token elasticity); save each trace, the elasticity PNG, a summary and a regression
estimator fitted on the searched budgets. TALE-PT trains on these traces (:mod:`tokenskip.training.tale_pt`).
Questions are searched in lockstep batches (one generate call per halving round): the search is a method
(:class:`TaleSearch`, prompts written with the run's preset) run through one :class:`~tokenskip.session.Session`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from tokenskip.args import DataArgs, ModelArgs, SamplingArgs, flat_options
from tokenskip.data.datasets import Record
from tokenskip.data.jsonl import write_json_atomic
from tokenskip.data.prompts import PromptPreset
from tokenskip.errors import UserError
from tokenskip.grading import grade
from tokenskip.inference.budget_search import (
    BudgetSearch,
    elasticity_curve,
    mean_tokens_by_step,
)
from tokenskip.inference.tale_budget import (
    DEFAULT_MAX_BUDGET,
    DEFAULT_MIN_BUDGET,
    get_template,
)
from tokenskip.methods import Context, Method
from tokenskip.methods.tale_ep import _read_traces, check_bounds, fit_regressor, raw_preset
from tokenskip.session import Session

Rule = Literal["elasticity", "correct"]


@dataclass
class SearchArgs:
    """How the budget search runs.

    Attributes:
        rule: elasticity (feasible = correct AND fewer tokens than at the previous budget; the paper's
            search) or correct (feasible = correct: plain binary halving).
        require_correct: the paper's rule: only questions whose vanilla CoT is correct are searched, and a
            budget is feasible only if its answer is correct. false = correctness is recorded but not
            required (every question is searched; for pipeline tests on models that cannot solve the task;
            the budgets found are then not TALE's).
        min_budget: never try a budget below this.
        max_steps: at most this many halvings per question (none: until infeasible or below min_budget).
        template: prompt template: tale or tale-boxed (see `tale run`).
    """

    rule: Rule = "elasticity"
    require_correct: bool = True
    min_budget: int = DEFAULT_MIN_BUDGET
    max_steps: int | None = None
    template: str = "tale"

    def check(self) -> None:
        check_bounds(self.min_budget, max(self.min_budget, DEFAULT_MAX_BUDGET))
        if self.max_steps is not None and self.max_steps < 1:
            raise UserError(f"--max_steps must be >= 1, got {self.max_steps}")
        if self.rule not in ("elasticity", "correct"):
            raise UserError(f"unknown --rule '{self.rule}' (elasticity, correct)")
        try:
            get_template(self.template)
        except ValueError as e:
            raise UserError(str(e)) from None


class TaleSearch(Method):
    """The budget search as a method: a batch of questions in, one search trace per question out. Its prompts
    are TALE's (the vanilla "Let's think step by step:" one, then "... use less than β tokens:"), written with
    the run's preset like ``tale run``'s."""

    kind = "tale-search"

    def __init__(self, args: SearchArgs) -> None:
        super().__init__(None)
        self.args = args
        self.template = get_template(args.template)

    def preset(self, base: PromptPreset) -> PromptPreset:
        return raw_preset(base)

    def messages(
        self, question: str, base: PromptPreset, eos: str | None, fields: dict[str, Any] | None = None
    ) -> list[dict[str, str]]:
        return [
            {"role": "user", "content": self.template.user_message(question, (fields or {}).get("budget"))}
        ]

    def run_batch(self, ctx: Context, records: list[Record]) -> list[dict[str, Any]]:
        return search_batch(ctx, records, self)


def search_batch(ctx: Context, records: Sequence[Record], method: TaleSearch) -> list[dict[str, Any]]:
    """Budget search for a batch of questions, in lockstep (one generate call per halving round).

    Returns one trace per question: the vanilla answer, every budget tried (tokens, correctness,
    feasibility, output), the optimal budget and answer, and why the search stopped.
    """
    args, generator, sampling = method.args, ctx.generator, ctx.sampling
    template, rule, require_correct = method.template, args.rule, args.require_correct
    min_budget, max_steps = args.min_budget, args.max_steps
    vanilla_prompts = [method.prompt(ctx, r.question) for r in records]
    vanilla = generator.generate(vanilla_prompts, sampling)
    traces: list[dict[str, Any]] = []
    searches: list[BudgetSearch | None] = []
    outputs: list[list[dict[str, Any]]] = []
    for r, gen in zip(records, vanilla, strict=True):
        prediction, correct = grade(gen.text, r.answer, r.task)
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
            method.prompt(ctx, records[i].question, {"budget": b})
            for i, b in zip(active, budgets, strict=True)
        ]
        gens = generator.generate(prompts, sampling)
        for i, gen in zip(active, gens, strict=True):
            prediction, correct = grade(gen.text, records[i].answer, records[i].task)
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


@flat_options(data=DataArgs(split="train"), model=ModelArgs(), sampling=SamplingArgs(), search=SearchArgs())
def search(
    out: str, data: DataArgs, model: ModelArgs, sampling: SamplingArgs, search: SearchArgs
) -> dict[str, Any]:
    """Offline budget search: per question, halve the budget from the vanilla CoT length while feasible.

    Writes into the folder --out: traces.jsonl (one trace per question, resumable), elasticity.png
    (tokens vs budget), summary.json, and regressor.json (regression estimator fitted on the optimal
    budgets, when at least 2 questions were searched).

    Args:
        out: output folder.
    """
    folder = Path(out)
    if folder.exists() and not folder.is_dir():
        raise UserError(f"--out {out} is a file; tale search writes a folder")
    records, _ = data.load()
    traces_path = folder / "traces.jsonl"
    t0 = time.perf_counter()
    rule = search.rule
    method = TaleSearch(search)
    with Session(model, sampling, on_error=data.on_error) as session:
        result = session.run(method, records, traces_path, settings=asdict(search), desc="search")
    ids = {r.id for r in records}
    traces = [t for t in _read_traces(traces_path) if str(t["id"]) in ids]
    summary = summarize_search(traces)
    summary.update(rule=rule, require_correct=search.require_correct, min_budget=search.min_budget,
                   model=model.model, new=result.generated, resumed=result.skipped)  # fmt: skip
    plot_elasticity(
        traces,
        folder / "elasticity.png",
        f"Token elasticity: {model.model}, rule={rule}, {summary['searched']} searched questions",
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


def _mean(values: list[float]) -> float | None:
    return round(sum(values) / len(values), 2) if values else None
