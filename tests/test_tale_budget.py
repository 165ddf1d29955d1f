"""TALE's pure logic: budget parser, prompts, halving schedule, feasibility rules, search, regression."""

from __future__ import annotations

import random
import string

import pytest

from tokenskip.inference.budget_search import (
    BudgetSearch,
    elasticity_curve,
    halve,
    halving_schedule,
    is_feasible,
    mean_tokens_by_step,
    run_search,
)
from tokenskip.inference.tale_budget import (
    DEFAULT_FALLBACK_BUDGET,
    DEFAULT_MAX_BUDGET,
    ESTIMATION_INSTRUCTION,
    TEMPLATES,
    RegressionEstimator,
    check_budget,
    clamp_budget,
    estimation_message,
    get_template,
    parse_budget,
)

# ------------------------------------------------------------------------------------------- parser


@pytest.mark.parametrize(
    "text, budget",
    [
        ("Budget: [[120]]", 120),
        ("[[ 42 ]]", 42),
        ("Budget: [[+64]].", 64),
        ("The answer needs about [[1,200]] tokens", 1200),
        ("[[80]] and again [[080]]", 80),  # the same value twice is not ambiguous
        ("multi\nline [[\n33\n]] reply", 33),
    ],
)
def test_parse_valid(text: str, budget: int) -> None:
    est = parse_budget(text)
    assert (est.budget, est.source, est.reason) == (budget, "parsed", "")


@pytest.mark.parametrize(
    "text, reason",
    [
        (None, "empty"),
        ("", "empty"),
        ("   \n", "empty"),
        ("I think about fifty tokens.", "no [[N]]"),
        ("Budget: [[budget]]", "integer"),
        ("Budget: [[12.5]]", "integer"),
        ("Budget: [[about 50]]", "integer"),
        ("Budget: [[-5]]", "negative"),
        ("Budget: [[ - 12 ]]", "negative"),
        ("Budget: [[0]]", "is 0"),
        ("Budget: [[000]]", "is 0"),
        ("Budget: [[12]] ... no wait [[150]]", "ambiguous"),
        ("Budget: [12]", "no [[N]]"),
        ("Budget: 12", "no [[N]]"),
    ],
)
def test_parse_garbage_falls_back(text: str | None, reason: str) -> None:
    est = parse_budget(text, fallback_budget=300)
    assert est.source == "fallback"
    assert est.budget == 300
    assert reason in est.reason


def test_parse_huge_numbers_are_clamped() -> None:
    assert parse_budget("[[5000]]", max_budget=4096).budget == 4096
    est = parse_budget("[[99999999999999999999999]]", max_budget=2048)
    assert (est.budget, est.source) == (2048, "clamped")
    # more digits than int() accepts from a string (4300): must not raise
    est = parse_budget("[[" + "9" * 5000 + "]]")
    assert (est.budget, est.source) == (DEFAULT_MAX_BUDGET, "clamped")
    assert "above max_budget" in est.reason


def test_parse_below_min_is_raised_to_min() -> None:
    est = parse_budget("[[3]]", min_budget=10)
    assert (est.budget, est.source) == (10, "clamped")


def test_parse_fallback_is_kept_inside_bounds_and_validated() -> None:
    assert parse_budget("nothing", fallback_budget=10_000, max_budget=500).budget == 500
    assert parse_budget("nothing", fallback_budget=5, min_budget=20).budget == 20
    with pytest.raises(ValueError):
        parse_budget("[[5]]", fallback_budget=0)
    with pytest.raises(ValueError):
        parse_budget("[[5]]", fallback_budget=-3)
    with pytest.raises(ValueError):
        parse_budget("[[5]]", min_budget=100, max_budget=10)


def test_parse_never_returns_non_positive_or_out_of_range() -> None:
    rng = random.Random(0)
    alphabet = string.printable + "[[]]" * 8 + "-" * 4
    for _ in range(2000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40)))
        est = parse_budget(text, fallback_budget=77, min_budget=5, max_budget=900)
        assert 5 <= est.budget <= 900
        assert est.source in ("parsed", "clamped", "fallback")
    assert DEFAULT_FALLBACK_BUDGET > 0


def test_check_and_clamp_budget() -> None:
    assert check_budget(5) == 5
    assert check_budget(8.0) == 8
    for bad in (0, -1, 2.5, True, "12", None):
        with pytest.raises(ValueError):
            check_budget(bad)
    assert clamp_budget(12.6, 1, 100) == 13
    assert clamp_budget(-40.0, 1, 100) == 1
    assert clamp_budget(1e30, 1, 100) == 100
    assert clamp_budget(float("nan"), 1, 100) == 100
    assert clamp_budget(float("-inf"), 3, 100) == 3


# ------------------------------------------------------------------------------------------ prompts


def test_prompts_match_the_reference() -> None:
    t = get_template("tale")
    assert t.user_message("What is 2+3? ") == "Q: What is 2+3?\nLet's think step by step:\n"
    assert t.user_message("What is 2+3?", 50) == (
        "Q: What is 2+3?\nLet's think step by step and use less than 50 tokens:\n"
    )
    boxed = TEMPLATES["tale-boxed"].user_message("x?", 7)
    assert (
        boxed
        == "Q: x?\nPlease put your final answer within \\boxed{}.\nLet's think step by step and use less than 7 tokens:\n"
    )
    msg = estimation_message("  How many?  ")
    assert msg.startswith(ESTIMATION_INSTRUCTION)
    assert msg.endswith('Below is the question:\n\nQuestion: "How many?"\n')
    assert "[[budget]]" in ESTIMATION_INSTRUCTION and "Budget: [[12]]" in ESTIMATION_INSTRUCTION
    with pytest.raises(ValueError):
        t.user_message("q", 0)
    with pytest.raises(ValueError):
        get_template("nope")


# ----------------------------------------------------------------------------- halving + feasibility


def test_halving_schedule() -> None:
    assert halve(100) == 50 and halve(3) == 1 and halve(1) == 0
    assert halving_schedule(100) == [50, 25, 12, 6, 3, 1]
    assert halving_schedule(100, min_budget=10) == [50, 25, 12]
    assert halving_schedule(100, max_steps=2) == [50, 25]
    assert halving_schedule(1) == [] and halving_schedule(0) == []
    assert halving_schedule(2) == [1]
    assert all(b >= 1 for b in halving_schedule(10**9))


def test_feasibility_rules() -> None:
    # plain halving: correctness only
    assert is_feasible("correct", True, tokens=500, previous_tokens=10)
    assert not is_feasible("correct", False, tokens=1, previous_tokens=10)
    # token elasticity: correct AND strictly fewer tokens than at the previous budget
    assert is_feasible("elasticity", True, tokens=9, previous_tokens=10)
    assert not is_feasible("elasticity", True, tokens=10, previous_tokens=10)
    assert not is_feasible("elasticity", True, tokens=11, previous_tokens=10)
    assert not is_feasible("elasticity", False, tokens=5, previous_tokens=10)
    with pytest.raises(ValueError):
        is_feasible("shortest", True, 1, 2)


def test_search_follows_the_halving_schedule_while_feasible() -> None:
    s = run_search(100, lambda b: (b, True), rule="correct")
    assert [st.budget for st in s.steps] == halving_schedule(100)
    assert (s.best_budget, s.stop_reason) == (1, "min_budget")
    s = run_search(100, lambda b: (b, True), rule="correct", min_budget=10, max_steps=None)
    assert [st.budget for st in s.steps] == [50, 25, 12] and s.best_budget == 12
    s = run_search(100, lambda b: (b, True), rule="correct", max_steps=2)
    assert [st.budget for st in s.steps] == [50, 25] and s.stop_reason == "max_steps"


def test_search_elasticity_stops_when_tokens_grow() -> None:
    # below budget 25 the answer gets longer again (token elasticity)
    tokens = {50: 60, 25: 40, 12: 45}
    s = run_search(100, lambda b: (tokens[b], True), rule="elasticity")
    assert [st.budget for st in s.steps] == [50, 25, 12]
    assert [st.feasible for st in s.steps] == [True, True, False]
    assert (s.best_budget, s.best_tokens, s.best_step, s.stop_reason) == (
        25,
        40,
        1,
        "tokens did not decrease",
    )
    # the plain rule keeps halving through the same answers
    s2 = run_search(100, lambda b: (tokens.get(b, 50), True), rule="correct")
    assert s2.best_budget == 1


def test_search_elasticity_first_step_compares_with_vanilla() -> None:
    s = run_search(100, lambda b: (100, True), rule="elasticity")
    assert len(s.steps) == 1 and not s.steps[0].feasible
    assert s.summary()["improved"] is False and s.best_budget == 100


def test_search_stops_on_incorrect_answer() -> None:
    s = run_search(64, lambda b: (b // 2, b >= 16), rule="correct")
    assert [st.budget for st in s.steps] == [32, 16, 8]
    assert (s.best_budget, s.stop_reason) == (16, "incorrect")
    summary = s.summary()
    assert summary["budgets"] == [32, 16, 8] and summary["optimal_budget"] == 16 and summary["improved"]


def test_search_without_correctness_requirement() -> None:
    s = run_search(64, lambda b: (b // 2, False), rule="elasticity", require_correct=False)
    assert s.best_budget == 1 and all(not st.correct for st in s.steps) and all(st.feasible for st in s.steps)
    s = run_search(64, lambda b: (b // 2, False), rule="elasticity", require_correct=True)
    assert s.best_budget == 64 and s.stop_reason == "incorrect"


def test_search_edge_cases() -> None:
    s = BudgetSearch(0)
    assert s.done and s.next_budget() is None and s.stop_reason == "empty vanilla answer"
    s = BudgetSearch(1)
    assert s.done and s.stop_reason == "min_budget"
    with pytest.raises(RuntimeError):
        s.record(1, True)
    with pytest.raises(ValueError):
        BudgetSearch(10, rule="nope")
    with pytest.raises(ValueError):
        BudgetSearch(10, min_budget=0)
    with pytest.raises(ValueError):
        BudgetSearch(10).record(-1, True)


def test_elasticity_curve_points() -> None:
    trace = {"vanilla_tokens": 80, "steps": [{"budget": 40, "tokens": 50}, {"budget": 20, "tokens": 55}]}
    assert elasticity_curve(trace) == [(80, 80), (40, 50), (20, 55)]
    other = {"vanilla_tokens": 40, "steps": [{"budget": 20, "tokens": 30}]}
    assert mean_tokens_by_step([trace, other]) == [(60.0, 60.0, 2), (30.0, 40.0, 2), (20.0, 55.0, 1)]


# ------------------------------------------------------------------------------------- regression


def test_regression_estimator_fits_and_round_trips() -> None:
    questions = [f"Q {' '.join(['word'] * n)} with {n} things." for n in range(5, 60, 5)]
    q_tokens = [n + 5 for n in range(5, 60, 5)]
    budgets = [3 * t for t in q_tokens]
    est = RegressionEstimator.fit(questions, q_tokens, budgets, l2=1e-6)
    for q, n, b in zip(questions, q_tokens, budgets, strict=True):
        assert abs(est.predict(q, n) - b) <= 0.15 * b
    again = RegressionEstimator.from_dict(est.to_dict())
    assert again.predict(questions[3], q_tokens[3]) == est.predict(questions[3], q_tokens[3])
    assert 1 <= est.predict("?", 10**9) <= est.max_budget  # clamped, never out of bounds


def test_regression_estimator_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        RegressionEstimator.fit(["a"], [3], [10])
    with pytest.raises(ValueError):
        RegressionEstimator.fit(["a", "b"], [3], [10, 20])
    with pytest.raises(ValueError):
        RegressionEstimator.fit(["a", "b"], [3, 4], [10, 0])
    with pytest.raises(ValueError):
        RegressionEstimator.from_dict({"kind": "something-else"})
    with pytest.raises(ValueError):
        RegressionEstimator.from_dict({"kind": "tale-regression", "features": ["bias"], "weights": [1.0]})
