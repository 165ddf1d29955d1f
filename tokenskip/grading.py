"""Answer extraction and grading. Pure functions: no model, no I/O, never ``eval`` on model text.

Extraction follows TokenSkip: the last ``\\boxed{}``, else "The final answer is ...", else "the answer
is ...", else the last number. GSM8K answers are compared numerically; MATH answers by normalised string,
then numerically, then by LaTeX/symbolic equivalence through ``math-verify`` with a time limit.
"""

from __future__ import annotations

import re
import threading
from fractions import Fraction

MAX_ANSWER_CHARS = 300  # longer "answers" are garbage; graded by string comparison only
VERIFY_TIMEOUT_S = 2

_NUMBER = re.compile(r"-?\d[\d,]*\.?\d*|-?\.\d+")
_TEXT_WRAP = re.compile(r"\\(?:text|textbf|mathrm|mathbf|mbox)\{([^{}]*)\}")


def last_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` (or ``\\fbox{...}``) in ``text``, braces balanced."""
    idx = max(text.rfind("\\boxed"), text.rfind("\\fbox"))
    if idx < 0:
        return None
    i = text.find("{", idx)
    if i < 0:
        return None
    depth = 0
    for j in range(i, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return text[i + 1 : j]
    return None


def extract_answer(output: str) -> str:
    """The final answer in a model output ("" when there is none)."""
    if not output:
        return ""
    boxed = last_boxed(output)
    if boxed is not None:
        return boxed.strip()
    for marker in ("final answer is", "he answer is"):
        pos = output.rfind(marker)
        if pos >= 0:
            tail = output[pos + len(marker) :].strip().lstrip(":").strip()
            tail = tail.split("\n")[0].strip()
            if tail.startswith("$") and tail.count("$") >= 2:
                tail = tail[1 : tail.index("$", 1)]
            tail = tail.rstrip(".").strip()
            if tail:
                return tail
    numbers = _NUMBER.findall(output)
    return numbers[-1].replace(",", "").rstrip(".") if numbers else ""


def normalize(answer: str) -> str:
    """Canonical string form for exact comparison (spacing, $, units in \\text{}, dfrac, trailing dot)."""
    s = str(answer).strip()
    s = s.replace("\\!", "").replace("\\,", "").replace("\\;", "").replace("\\ ", "")
    s = s.replace("\\left", "").replace("\\right", "")
    s = s.replace("dfrac", "frac").replace("tfrac", "frac")
    s = s.replace("^{\\circ}", "").replace("^\\circ", "").replace("\\%", "").replace("%", "")
    s = s.replace("\\$", "").replace("$", "")
    s = _TEXT_WRAP.sub(r"\1", s)
    s = s.replace(" ", "").rstrip(".").strip()
    if s.startswith("{") and s.endswith("}") and s.count("{") == 1:
        s = s[1:-1]
    return s


_FRAC = re.compile(r"^(-?)\\frac\{(-?\d+)\}\{(-?\d+)\}$")
_SLASH = re.compile(r"^(-?\d+)/(-?\d+)$")
_UNIT_TAIL = re.compile(r"[a-zA-Z]+$")


def to_number(answer: str) -> Fraction | None:
    """Parse plain numbers, ``1,000``, ``$5``, ``50%``, ``\\frac{1}{2}``, ``1/2`` exactly; else None."""
    s = normalize(answer)
    if not s or len(s) > 40:
        return None
    s = s.replace(",", "")
    m = _FRAC.match(s) or _SLASH.match(s)
    try:
        if m:
            if m.re is _FRAC:
                sign, a, b = m.groups()
                value = Fraction(int(a), int(b))
                return -value if sign else value
            return Fraction(int(m.group(1)), int(m.group(2)))
        s = _UNIT_TAIL.sub("", s) if re.match(r"^-?[\d.]+[a-zA-Z]+$", s) else s
        return Fraction(s)
    except (ValueError, ZeroDivisionError):
        return None


def numbers_equal(a: Fraction, b: Fraction, rel_tol: float = 1e-6) -> bool:
    if a == b:
        return True
    if a.denominator == 1 and b.denominator == 1:  # integers compare exactly
        return False
    return abs(float(a) - float(b)) <= rel_tol * max(1.0, abs(float(b)))


def _math_verify_equal(pred: str, ref: str) -> bool:
    from math_verify import parse, verify

    in_main = threading.current_thread() is threading.main_thread()
    timeout = VERIFY_TIMEOUT_S if in_main else None  # math-verify's timeout is SIGALRM: main thread only
    if not in_main and (len(pred) > 80 or len(ref) > 80):
        return False
    try:
        gold = parse(f"${ref}$", parsing_timeout=timeout)
        target = parse(f"${pred}$", parsing_timeout=timeout)
        if not gold or not target:
            return False
        return bool(verify(gold, target, timeout_seconds=timeout))
    except Exception:  # math-verify raises on timeouts and odd LaTeX: not equal
        return False


def is_equiv(pred: str, ref: str, task: str = "gsm8k") -> bool:
    """Whether a predicted answer equals the reference. ``task`` is ``gsm8k`` or ``math``."""
    if pred is None or ref is None:
        return False
    pred, ref = str(pred).strip(), str(ref).strip()
    if not pred or len(pred) > MAX_ANSWER_CHARS:
        return False
    if normalize(pred) == normalize(ref):
        return True
    a, b = to_number(pred), to_number(ref)
    if a is not None and b is not None:
        return numbers_equal(a, b)
    if task == "gsm8k" and b is not None:
        return False
    return _math_verify_equal(pred, ref)


def grade(output: str, reference: str, task: str = "gsm8k") -> tuple[str, bool]:
    """Extract the answer from ``output`` and judge it: ``(prediction, correct)``."""
    pred = extract_answer(output)
    return pred, is_equiv(pred, reference, task)
