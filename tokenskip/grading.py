"""Answer extraction and grading. Pure functions: no model, no I/O, never ``eval`` on model text.

GSM8K extraction follows TokenSkip: the last ``\\boxed{}``, else "The final answer is ...", else "the answer
is ...", else the last number. MATH extraction takes the last ``\\boxed{}`` (with the boxes written right
before it, "\\boxed{1} and \\boxed{2}"), or a later "final answer is" sentence, else "the answer is ...",
else math-verify's extraction: the LaTeX of the last math environment, then the last expression or number
(:mod:`tokenskip.mathcheck`). GSM8K answers are compared numerically; MATH answers by normalised string, then
numerically, then by LaTeX/symbolic equivalence through ``math-verify``. The math-verify steps of one
``grade`` share a deadline of ``VERIFY_TIMEOUT_S`` seconds: past it an extraction falls back to the last
number and a comparison reads as "not equal".
"""

from __future__ import annotations

import re
import time
from fractions import Fraction

from tokenskip import mathcheck

MAX_ANSWER_CHARS = 300  # longer "answers" are garbage; graded by string comparison only
VERIFY_TIMEOUT_S = 2

_NUMBER = re.compile(r"-?\d[\d,]*\.?\d*|-?\.\d+")
# a number no reader can take two ways ("1,000" but not "1,22" or "1000,99", decimal commas to math-verify)
_PLAIN_NUMBER = re.compile(r"\s*-?(?:\d+(?:\.\d+)?|\.\d+|[1-9]\d{0,2}(?:,\d{3})+(?:\.\d+)?)\.?\s*")
_TEXT_WRAP = re.compile(r"\\(?:text|textbf|mathrm|mathbf|mbox)\{([^{}]*)\}")


def _deadline(deadline: float | None) -> float:
    """``deadline``, or one ``VERIFY_TIMEOUT_S`` from now once math-verify is loaded (loading is not timed)."""
    if deadline is not None:
        return deadline
    mathcheck.prepare()
    return time.monotonic() + VERIFY_TIMEOUT_S


def last_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` (or ``\\fbox{...}``) in ``text``, braces balanced."""
    idx = max(text.rfind("\\boxed"), text.rfind("\\fbox"))
    if idx < 0:
        return None
    i = text.find("{", idx)
    if i < 0:
        return None
    j = _balanced(text, i)
    return None if j is None else text[i + 1 : j]


def _balanced(text: str, i: int) -> int | None:
    """Index of the ``}`` closing the ``{`` at ``text[i]``, or None."""
    depth = 0
    for j in range(i, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return j
    return None


def extract_answer(output: str, task: str = "gsm8k", deadline: float | None = None) -> str:
    """The final answer in a model output ("" when there is none); ``task`` is ``gsm8k`` or ``math``.

    ``deadline`` (a ``time.monotonic()`` time, default now + ``VERIFY_TIMEOUT_S``) bounds the math-verify
    extraction of a ``math`` output.
    """
    if not output:
        return ""
    if task == "math":
        return _math_answer(output, _deadline(deadline))
    boxed = last_boxed(output)
    if boxed is not None:
        return boxed.strip()
    for marker in ("final answer is", "he answer is"):
        tail = _sentence(output, marker)
        if tail:
            return tail
    return _last_number(output)


def _last_number(output: str) -> str:
    numbers = _NUMBER.findall(output)
    return numbers[-1].replace(",", "").rstrip(".") if numbers else ""


def _sentence(output: str, marker: str) -> str:
    """TokenSkip's answer sentence: the line after the last ``marker``, a leading ``$...$`` unwrapped."""
    pos = output.rfind(marker)
    if pos < 0:
        return ""
    tail = output[pos + len(marker) :].strip().lstrip(":").strip()
    tail = tail.split("\n")[0].strip()
    if tail.startswith("$") and tail.count("$") >= 2:
        tail = tail[1 : tail.index("$", 1)]
    return tail.rstrip(".").strip()


_BOX = re.compile(r"\\(?:boxed|fbox)\s*\{")
# what may stand between boxes that together give one answer: "\boxed{-2} \quad \text{and} \quad \boxed{1}"
_BOX_GAP = re.compile(r"(?:\s|\$|\\[\[\]()]|[,;.]|\\q?quad|\\,|\\text\{\s*(?:and|or)\s*\}|and|or)*")
_MATH_DELIMS = ("$", "\\(", "\\[")


def _last_boxes(output: str) -> tuple[str, int] | None:
    """The last ``\\boxed{}``'s content (joined with the boxes right before it) and where it ends."""
    starts = [m for m in _BOX.finditer(output)][-8:]
    if not starts:
        return None
    boxes: list[tuple[int, int, str]] = []
    for m in starts:
        end = _balanced(output, m.end() - 1)
        if end is not None:
            boxes.append((m.start(), end, output[m.end() : end].strip()))
    if not boxes or boxes[-1][0] != starts[-1].start():
        return None  # the last box is unclosed
    group = [boxes[-1]]
    for box in reversed(boxes[:-1]):
        if box[1] >= group[0][0] or not _BOX_GAP.fullmatch(output, box[1] + 1, group[0][0]):
            break
        group.insert(0, box)
    return ", ".join(b[2] for b in group), group[-1][1]


def _math_answer(output: str, deadline: float) -> str:
    if _PLAIN_NUMBER.fullmatch(output):
        return output.strip().replace(",", "").rstrip(".")
    boxed = _last_boxes(output)
    if boxed is not None:
        later = output.rfind("final answer is") > boxed[1]  # "\boxed{200} ... The final answer is $10,455$."
        return (later and _math_sentence(output, "final answer is", deadline)) or boxed[0]
    for marker in ("final answer is", "he answer is"):
        tail = _math_sentence(output, marker, deadline)
        if tail:
            return tail
    found = mathcheck.run("extract", output, deadline=deadline)
    return _last_number(output) if found is None else found


def _math_sentence(output: str, marker: str, deadline: float) -> str:
    """The answer sentence: math-verify's answer in it when its line holds LaTeX, else TokenSkip's tail
    without a closing "I hope it is correct"."""
    pos = output.rfind(marker)
    if pos < 0:
        return ""
    line = output[pos + len(marker) :].strip().lstrip(":").strip().split("\n")[0]
    if any(d in line for d in _MATH_DELIMS):
        # with its marker, so that math-verify's "final answer is $...$" pattern takes the first LaTeX after it
        found = mathcheck.run("extract", marker + " " + line, deadline=deadline)
        if found:
            return found
    return _sentence(output, marker).split("I hope")[0].strip().rstrip(".").strip()


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


def is_equiv(pred: str, ref: str, task: str = "gsm8k", deadline: float | None = None) -> bool:
    """Whether a predicted answer equals the reference. ``task`` is ``gsm8k`` or ``math``; ``deadline`` (a
    ``time.monotonic()`` time, default now + ``VERIFY_TIMEOUT_S``) bounds the math-verify comparison."""
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
    return bool(mathcheck.run("equal", pred, ref, deadline=_deadline(deadline)))


def grade(output: str, reference: str, task: str = "gsm8k") -> tuple[str, bool]:
    """Extract the answer from ``output`` and judge it: ``(prediction, correct)``. Its math-verify steps
    share one deadline of ``VERIFY_TIMEOUT_S`` seconds."""
    deadline = _deadline(None) if task == "math" else None
    pred = extract_answer(output, task, deadline)
    return pred, is_equiv(pred, reference, task, deadline)
