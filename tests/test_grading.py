import json
import random
import time

import pytest

from tests.conftest import SHARED_DATA
from tokenskip.grading import extract_answer, grade, is_equiv, last_boxed, to_number


@pytest.mark.parametrize(
    "output, expected",
    [
        ("so x = 3 and \\boxed{4} then \\boxed{\\frac{1}{2}}", "\\frac{1}{2}"),
        ("Steps...\n\nThe final answer is: $\\boxed{18}$", "18"),
        ("Steps...\nThe final answer is $42$. I hope it is correct.", "42"),
        ("So the answer is 7 apples.\nDone", "7 apples"),
        ("I think 3 + 4 = 7, then 1,200 remain", "1200"),
        ("no digits here", ""),
        ("", ""),
    ],
)
def test_extract_answer(output, expected):
    assert extract_answer(output) == expected


def test_issue_equivalences():
    assert is_equiv("\\frac{1}{2}", "0.5")
    assert is_equiv("0.5", "\\frac{1}{2}", task="math")
    assert is_equiv("1,000", "1000")
    assert not is_equiv("3", "4")
    assert not is_equiv("3", "4", task="math")
    assert is_equiv("$18", "18") and is_equiv("18.00", "18") and is_equiv("50\\%", "50")
    assert not is_equiv("", "0")


def test_symbolic_math_equivalence():
    assert is_equiv("\\frac{\\sqrt3}{2}", "\\frac{\\sqrt{3}}{2}", task="math")
    assert is_equiv("x^2+2x+1", "(x+1)^2", task="math")
    assert not is_equiv("x^2+1", "(x+1)^2", task="math")


def test_to_number():
    assert to_number("-\\frac{3}{4}") == to_number("-0.75")
    assert to_number("3/0") is None
    assert to_number("abc") is None


def test_garbage_is_wrong_and_fast():
    grade("\\boxed{1}", "1", task="math")  # warm up: first call imports sympy/math-verify
    rng = random.Random(0)
    garbage = "".join(rng.choice("ab{}\\$0123 boxed^_") for _ in range(10_000))
    for out, task in [
        (garbage, "gsm8k"),
        ("\\boxed{" + garbage, "math"),
        (garbage + "\\boxed{" + garbage + "}", "math"),
    ]:
        t0 = time.perf_counter()
        pred, ok = grade(out, "18", task)
        assert not ok
        assert time.perf_counter() - t0 < 1.0


@pytest.mark.skipif(not (SHARED_DATA / "math500").exists(), reason="../shared/data not present")
def test_every_math500_answer_equals_its_solution_box():
    rows = [json.loads(line) for line in (SHARED_DATA / "math500" / "test.jsonl").open()]
    assert len(rows) == 500
    bad = [r["answer"] for r in rows if not is_equiv(last_boxed(r["solution"]), r["answer"], task="math")]
    assert bad == []


@pytest.mark.skipif(not (SHARED_DATA / "gsm8k").exists(), reason="../shared/data not present")
def test_every_gsm8k_answer_equals_its_hash_line():
    rows = [json.loads(line) for line in (SHARED_DATA / "gsm8k" / "test_hf_format.jsonl").open()]
    assert len(rows) == 1319
    for r in rows:
        ref = r["answer"].rpartition("####")[2].strip()
        pred, ok = grade(r["answer"], ref)
        assert ok, (pred, ref)
        assert not is_equiv(ref, str(int(ref.replace(",", "")) + 1))
