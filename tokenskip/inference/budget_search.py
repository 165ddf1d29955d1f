"""TALE's budget search, pure: the halving schedule, the feasibility rules and the per-question search.

For each question TALE halves a token budget while the model's answer stays feasible (``correct``: still right;
``elasticity``: right and the tokens still fall), and keeps the last feasible budget as that question's optimal
budget. :mod:`tokenskip.verbs.tale_search` runs it on a model; everything here is free of models and files.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from tokenskip.inference.tale_budget import DEFAULT_MIN_BUDGET, check_budget

FeasibilityRule = Literal["correct", "elasticity"]
RULES: tuple[str, ...] = ("correct", "elasticity")


def halve(budget: int) -> int:
    """The next budget of TALE's search: ``⌊β / 2⌋``."""
    return check_budget(budget) // 2


def halving_schedule(
    start: int, min_budget: int = DEFAULT_MIN_BUDGET, max_steps: int | None = None
) -> list[int]:
    """Every budget the search may try from a vanilla CoT of ``start`` tokens: ``⌊start/2⌋, ⌊start/4⌋, ...``
    down to ``min_budget`` (inclusive), at most ``max_steps`` of them. ``start < 2`` gives ``[]``."""
    check_budget(min_budget)
    out: list[int] = []
    b = start
    while b >= 2 and (max_steps is None or len(out) < max_steps):
        b //= 2
        if b < min_budget:
            break
        out.append(b)
    return out


def is_feasible(rule: str, correct: bool, tokens: int, previous_tokens: int) -> bool:
    """Whether the answer at a candidate budget lets the search halve again.

    ``correct``: the answer is correct (plain binary halving). ``elasticity``: the answer is correct AND it
    used fewer tokens than the answer at the previous (last feasible) budget -- past the point where a
    smaller budget stops shrinking the output ("token elasticity"), the search stops.
    """
    if rule == "correct":
        return bool(correct)
    if rule == "elasticity":
        return bool(correct) and tokens < previous_tokens
    raise ValueError(f"unknown feasibility rule '{rule}' (known: {', '.join(RULES)})")


@dataclass
class SearchStep:
    """One budget tried: the budget, the answer's token count, its correctness and the verdict."""

    budget: int
    tokens: int
    correct: bool
    feasible: bool


@dataclass
class BudgetSearch:
    """TALE's per-question budget search as a state machine (drive it with any generator, in batches).

    The search starts at the vanilla CoT's token count ``vanilla_tokens`` (the budget upper bound, whose
    answer is the vanilla answer). While the last budget was feasible it proposes half of it; a step that
    is not feasible, a half below ``min_budget`` or ``max_steps`` tried ends it. The optimal budget is the
    last feasible one (the vanilla length when no halving was feasible).

    ``require_correct=False`` drops the correctness condition (correctness is still recorded): for
    exercising the pipeline on a model that cannot solve the task.

    >>> s = BudgetSearch(vanilla_tokens=100, rule="correct")
    >>> s.next_budget(), s.record(tokens=40, correct=True).feasible, s.next_budget()
    (50, True, 25)
    """

    vanilla_tokens: int
    rule: str = "elasticity"
    min_budget: int = DEFAULT_MIN_BUDGET
    max_steps: int | None = None
    require_correct: bool = True
    steps: list[SearchStep] = field(default_factory=list)
    best_budget: int = 0
    best_tokens: int = 0
    best_step: int | None = None  # index into steps; None = the vanilla answer
    stop_reason: str = ""

    def __post_init__(self) -> None:
        if self.rule not in RULES:
            raise ValueError(f"unknown feasibility rule '{self.rule}' (known: {', '.join(RULES)})")
        check_budget(self.min_budget)
        if self.max_steps is not None and self.max_steps < 0:
            raise ValueError(f"max_steps must be >= 0, got {self.max_steps}")
        if self.vanilla_tokens < 0:
            raise ValueError(f"vanilla_tokens must be >= 0, got {self.vanilla_tokens}")
        self.best_budget = self.vanilla_tokens
        self.best_tokens = self.vanilla_tokens
        if self.vanilla_tokens < 1:
            self.stop_reason = "empty vanilla answer"
        else:
            self._check_next()

    @property
    def done(self) -> bool:
        return bool(self.stop_reason)

    def _check_next(self) -> None:
        if self.max_steps is not None and len(self.steps) >= self.max_steps:
            self.stop_reason = "max_steps"
        elif self.best_budget // 2 < self.min_budget or self.best_budget < 2:
            self.stop_reason = "min_budget"

    def next_budget(self) -> int | None:
        """The budget to try next, or None when the search is over."""
        return None if self.done else self.best_budget // 2

    def record(self, tokens: int, correct: bool) -> SearchStep:
        """Record the answer obtained at :meth:`next_budget` and advance."""
        budget = self.next_budget()
        if budget is None:
            raise RuntimeError(f"the search is over ({self.stop_reason})")
        if tokens < 0:
            raise ValueError(f"tokens must be >= 0, got {tokens}")
        judged = bool(correct) or not self.require_correct
        feasible = is_feasible(self.rule, judged, tokens, self.best_tokens)
        step = SearchStep(budget=budget, tokens=int(tokens), correct=bool(correct), feasible=feasible)
        self.steps.append(step)
        if feasible:
            self.best_budget, self.best_tokens, self.best_step = budget, int(tokens), len(self.steps) - 1
            self._check_next()
        elif not judged:
            self.stop_reason = "incorrect"
        else:
            self.stop_reason = "tokens did not decrease"
        return step

    def summary(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "vanilla_tokens": self.vanilla_tokens,
            "budgets": [s.budget for s in self.steps],
            "steps": [asdict(s) for s in self.steps],
            "optimal_budget": self.best_budget,
            "optimal_tokens": self.best_tokens,
            "optimal_step": self.best_step,
            "improved": self.best_step is not None,
            "stop_reason": self.stop_reason,
        }


def run_search(
    vanilla_tokens: int,
    answer_at: Any,
    rule: str = "elasticity",
    min_budget: int = DEFAULT_MIN_BUDGET,
    max_steps: int | None = None,
    require_correct: bool = True,
) -> BudgetSearch:
    """Run one search to the end; ``answer_at(budget) -> (tokens, correct)`` produces each answer."""
    search = BudgetSearch(vanilla_tokens, rule, min_budget, max_steps, require_correct)
    while (budget := search.next_budget()) is not None:
        tokens, correct = answer_at(budget)
        search.record(tokens, correct)
    return search


def elasticity_curve(trace: dict[str, Any]) -> list[tuple[int, int]]:
    """``(budget, tokens)`` points of one trace: the vanilla answer at budget = its own length, then every
    budget tried (the curve the paper draws to show token elasticity)."""
    points = [(int(trace["vanilla_tokens"]), int(trace["vanilla_tokens"]))]
    points += [(int(s["budget"]), int(s["tokens"])) for s in trace.get("steps", [])]
    return points


def mean_tokens_by_step(traces: list[dict[str, Any]]) -> list[tuple[float, float, int]]:
    """Per halving step k (0 = vanilla): mean budget, mean tokens and how many traces reached step k."""
    columns: dict[int, list[tuple[int, int]]] = {}
    for t in traces:
        for k, point in enumerate(elasticity_curve(t)):
            columns.setdefault(k, []).append(point)
    out = []
    for k in sorted(columns):
        pts = columns[k]
        out.append((sum(p[0] for p in pts) / len(pts), sum(p[1] for p in pts) / len(pts), len(pts)))
    return out
