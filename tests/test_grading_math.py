"""MATH grading without ``\\boxed{}``: math-verify's extraction, its regression pairs, time limits, no eval."""

import json
import os
import re
import signal
import threading
import time
from pathlib import Path

import pytest

from tokenskip import grading, mathcheck
from tokenskip.grading import extract_answer, grade

PAIRS = Path(__file__).parent / "fixtures" / "math_verify_pairs.json"

# Pairs of math-verify's suite where tokenskip disagrees on purpose: (test, gold, pred prefix, why).
DELIBERATE = [
    (
        "test_complex_math_expressions",
        "$(\\begin{pmatrix}\\frac{1}{3}\\\\ \\frac{1}{5} \\end{pmatrix})$",
        "$\\begin",
        "upstream compares at 2 decimals (precision=2); tokenskip at math-verify's default 6: 0.33 != 1/3",
    ),
    (
        "test_complex_math_expressions",
        "$(\\frac{3}{5},\\frac{8}{3}]$",
        "$(0.6,2.6667]$",
        "upstream compares at 2 decimals (precision=2); at 6 decimals 2.6667 != 8/3",
    ),
    (
        "test_latex_notation",
        "$9$",
        "Answer $ \n 9 \n $",
        "upstream extracts LaTeX only; tokenskip also takes the last bare number (as math-verify's default "
        "parse, LaTeX + expressions, does), so the 9 is found",
    ),
    (
        "test_latex_notation",
        "$9$",
        "Answer \\( \n 9 \n \\)",
        "as above: the bare 9 is extracted (math-verify's default parse agrees)",
    ),
    (
        "test_math_extraction_additional_cases",
        " So the answer is: \\[ \\boxed{32349} \\]",
        "is $\\boxed{32, 349}$",
        "a comma is a thousands separator in tokenskip's numeric path (GSM8K writes 1,000), so '32, 349' "
        "reads as 32349; math-verify reads the pair (32, 349)",
    ),
]


def _deliberate(pair: dict) -> bool:
    return any(
        pair["test"] == test and pair["gold"] == gold and pair["pred"].startswith(pred)
        for test, gold, pred, _ in DELIBERATE
    )


def test_math_verify_regression_pairs(monkeypatch):
    doc = json.loads(PAIRS.read_text())
    assert doc["licence"].startswith("MIT") and "Permission is hereby granted" in doc["licence_text"]
    assert re.fullmatch(r"[0-9a-f]{40}", doc["commit"]) and doc["commit"] in doc["source"]
    pairs = doc["pairs"]
    assert len(pairs) == 190
    for test, gold, pred, _ in DELIBERATE:  # each names one pair of the fixture
        assert sum(p["test"] == test and p["gold"] == gold and p["pred"].startswith(pred) for p in pairs) == 1
    # the agreement of extraction and comparison, not of the clock: a loaded machine must not time out here
    monkeypatch.setattr(grading, "VERIFY_TIMEOUT_S", 30)
    agree, boxed, boxed_agree, undeclared = 0, 0, 0, []
    for p in pairs:
        reference = extract_answer(p["gold"], "math")  # a MATH reference comes from its solution the same way
        pred, ok = grade(p["pred"], reference, "math")
        same = int(ok) == p["expected"]
        agree += same
        if "\\boxed" in p["pred"]:
            boxed += 1
            boxed_agree += same
            assert same or _deliberate(p), ("a boxed pair disagrees", p["gold"][:80], pred)
        if not same and not _deliberate(p):
            undeclared.append((p["test"], p["gold"][:60], pred[:60], p["expected"]))
    print(
        f"\nmath-verify regression pairs: {agree}/{len(pairs)} agree ({agree / len(pairs):.1%}); "
        f"boxed {boxed_agree}/{boxed}; deliberate disagreements {len(DELIBERATE)}; others {undeclared}"
    )
    assert agree >= 181, (agree, undeclared)


@pytest.mark.parametrize(
    "output, answer",
    [
        ("So the length is $\\frac{1}{3} \\text{meters}$", "\\frac{1}{3}"),  # the last number is 3
        ("The side is $\\sqrt3$", "\\sqrt{3}"),
        ("Therefore $x \\geq 5$ is the solution.", "x \\geq 5"),
        ("We get $k = \\dfrac{2}{7}$", "k = \\frac{2}{7}"),
        (
            "The matrix is $\\begin{pmatrix}1 & 2 \\\\ 3 & 5\\end{pmatrix}$.",
            "\\begin{pmatrix}1 & 2 \\\\ 3 & 5\\end{pmatrix}",
        ),
        ("so P(A) = 2/3. <|im_start|>user", "2/3"),  # a plain expression
        ("Soucis : 2,74 $ a..", "2.74"),  # math-verify reads a decimal comma
        ("AZYUK2A", ""),  # no answer rather than the 2 inside a word
        ("Final Answer: The final answer is \\((-6, 10)\\). I hope it is correct.", "(-6, 10)"),
        ("$\\boxed{-2} \\quad \\text{and} \\quad \\boxed{1}$", "-2, 1"),  # boxes that make one answer
        ("\\boxed{200} ... Final Answer: The final answer is $10,455$. I hope it is correct.", "10,455"),
        ("42", "42"),  # the plain-number fast path
    ],
)
def test_math_extraction_without_box(output, answer):
    assert extract_answer(output, "math") == answer


@pytest.mark.parametrize(
    "output, wrong, reference",
    [
        (
            "So the length is $\\frac{1}{3} \\text{meters}$",
            "So the length is $\\frac{1}{4} \\text{m}$",
            "\\frac13",
        ),
        ("The side is $\\sqrt3$", "The side is $\\sqrt2$", "\\sqrt{3}"),
        ("Therefore $x \\geq 5$ is the solution.", "Therefore $x \\leq 5$ is the solution.", "x \\ge 5"),
        ("Thus the domain is $x \\in [-2, 7]$.", "Thus the domain is $x \\in (-2, 7]$.", "[-2,7]"),
        ("We find $y=-\\frac{1}{2}x+\\frac{3}{4}$", "We find $y=-\\frac{1}{2}x+\\frac{1}{4}$", "2x+4y-3=0"),
    ],
)
def test_unboxed_math_answers_grade_right(output, wrong, reference):
    assert grade(output, reference, "math")[1]
    assert not grade(wrong, reference, "math")[1]


def test_gsm8k_stays_numeric():
    assert extract_answer("The side is $\\sqrt3$") == "3"  # gsm8k: the last number, as before
    assert extract_answer("So the length is $\\frac{1}{3} \\text{meters}$", "gsm8k") == "3"
    assert grade("so she pays $1,200.", "1200") == ("1200", True)


def test_past_the_limit_returns_in_time():
    """A sympy bomb and a regex bomb return within the limit, in the main thread (SIGALRM) and in another
    thread (the child process)."""
    grade("$\\frac{1}{2}$", "1/2", "math")  # loads math-verify
    limit = grading.VERIFY_TIMEOUT_S
    for output in ("\\boxed{10^{10^{10}}}", "\\[" * 20_000):
        t0 = time.perf_counter()
        assert not grade(output, "7", "math")[1]
        assert time.perf_counter() - t0 < limit + 0.5

    took: list[float] = []

    def in_thread():
        grade("$\\frac{1}{2}$", "1/2", "math")  # starts the child process (not timed)
        t0 = time.perf_counter()
        took.append(float(grade("\\boxed{9^{9^{9}}}", "7", "math")[1]))
        took.append(time.perf_counter() - t0)
        took.append(float(grade("So $x = \\frac{3}{6}$", "1/2", "math")[1]))  # the child still answers

    t = threading.Thread(target=in_thread)
    t.start()
    t.join(60)
    # the child keeps the limit itself; the parent kills it GRACE_S later if it cannot
    assert took[0] == 0 and took[1] < limit + mathcheck._Child.GRACE_S + 0.5 and took[2] == 1


def test_unresponsive_child_is_killed_and_replaced():
    """A check stuck where SIGALRM cannot reach (here: a stopped child) is killed at its deadline + grace."""
    result: list = []

    def in_thread():
        mathcheck.prepare()
        child = mathcheck._child
        os.kill(child.proc.pid, signal.SIGSTOP)
        t0 = time.perf_counter()
        result.append(mathcheck.run("equal", "\\frac{1}{2}", "0.5", deadline=time.monotonic() + 0.5))
        result.append(time.perf_counter() - t0)
        result.append(child.proc.poll() is not None)  # killed
        result.append(mathcheck.run("equal", "\\frac{1}{2}", "0.5", deadline=time.monotonic() + 60))

    t = threading.Thread(target=in_thread)
    t.start()
    t.join(120)
    assert result[0] is None and result[1] < 0.5 + mathcheck._Child.GRACE_S + 0.5
    assert result[2] is True and result[3] is True


def test_no_model_text_reaches_eval(monkeypatch):
    """sympy's parse_expr ``eval``s its transformed input: grading sends it nothing but lexed numbers."""
    import sympy.parsing.sympy_parser as sympy_parser
    import sympy.physics.units  # noqa: F401  (sympy builds its unit symbols with sympify on first import)

    grade("$\\frac{1}{2} \\text{m}$ and $x \\in [-2,7]$", "1/2", "math")  # the lazy imports, before the spy
    seen: list[str] = []
    real = sympy_parser.eval_expr
    monkeypatch.setattr(sympy_parser, "eval_expr", lambda code, *a: seen.append(code) or real(code, *a))
    outputs = [
        "__import__('os').system('echo pwned')",
        "The answer is $__import__('os').getcwd()$",
        "so x = (1/2) * (4/3) = 2/3 and 3**3",
        "$\\frac{x}{7}+\\frac{2}{7}$ or $\\sqrt[3]{x}^2$, $[0,1)$",
    ]
    for out in outputs:
        grade(out, "\\frac{2}{3}", "math")
    for p in json.loads(PAIRS.read_text())["pairs"][:60]:
        grade(p["pred"], "\\frac{1}{3}", "math")
    assert seen, "the spy saw no call: it watches the wrong function"
    assert all(re.fullmatch(r"(Integer|Float) \('?[\d.]+'? \)", code) for code in seen), set(seen)
