"""TALE's pure logic: prompts, the strict budget parser and the regression estimator.

The halving budget search is :mod:`tokenskip.inference.budget_search`.

TALE (Token-Budget-Aware LLM rEasoning, arXiv 2412.18547) tells the model a token budget instead of
training it on pruned CoTs. Everything here is free of models, files and devices, so it is unit-tested in
milliseconds; :mod:`tokenskip.methods.tale_ep` wires it to a :class:`~tokenskip.inference.base.Generator`.

Differences from the reference code, on purpose:

* an unparsable estimate falls back to ``fallback_budget`` (the reference returns ``-1`` and puts
  "use less than -1 tokens" into the prompt); negative, zero and ambiguous estimates are rejected too, and
  huge ones are clamped to ``max_budget``;
* token counts come from the target model's tokenizer (the caller's job), never from tiktoken;
* the halving search never proposes a budget below ``min_budget`` (the reference can reach 0).
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass
from typing import Any, Literal

# --------------------------------------------------------------------------------------------- prompts

#: Zero-shot estimation prompt, byte-for-byte the reference's ``create_zero_shot_context`` (typos included:
#: changing the wording changes the estimates the paper reports).
ESTIMATION_INSTRUCTION = (
    "Task: Analyze the given question and estimate the minimum number of tokens required to generate a "
    "complete and accurate response. Please Give the response by strictly following this format: "
    "[[budget]],for example: Budget: [[12]]."
)
#: How the reference wraps the question after the instruction (its TALE-EP ``budget_pred_prompt``).
ESTIMATION_TEMPLATE = '{instruction}\n\nBelow is the question:\n\nQuestion: "{question}"\n'

VANILLA_COT = "Let's think step by step:"
BUDGET_COT = "Let's think step by step and use less than {budget} tokens:"
BOXED_INSTRUCTION = "Please put your final answer within \\boxed{}."

DEFAULT_FALLBACK_BUDGET = 256
DEFAULT_MIN_BUDGET = 1
DEFAULT_MAX_BUDGET = 4096
_MAX_DIGITS = 9  # more digits than this is "huge": clamped without converting (int() caps at 4300 digits)


@dataclass(frozen=True)
class TaleTemplate:
    """How a question becomes TALE's user message (the chat template is applied afterwards).

    Attributes:
        name: template name used on the command line (``--template``).
        question: how the question is written; ``{question}`` is replaced.
        answer_instruction: optional line between the question and the reasoning trigger (e.g. ask for
            ``\\boxed{}`` so MATH answers can be graded); empty for none.
    """

    name: str
    question: str = "Q: {question}"
    answer_instruction: str = ""

    def user_message(self, question: str, budget: int | None = None) -> str:
        """Vanilla CoT message (``budget=None``) or the budget-aware one ("... use less than β tokens:")."""
        lines = [self.question.format(question=question.strip())]
        if self.answer_instruction:
            lines.append(self.answer_instruction)
        lines.append(VANILLA_COT if budget is None else BUDGET_COT.format(budget=check_budget(budget)))
        return "\n".join(lines) + "\n"


TEMPLATES: dict[str, TaleTemplate] = {
    # The reference's GSM8K / cloze prompt: "Q: {question}\nLet's think step by step:\n".
    "tale": TaleTemplate(name="tale"),
    # Same, plus TokenSkip's answer format so the answer is boxed (use it for MATH-500).
    "tale-boxed": TaleTemplate(name="tale-boxed", answer_instruction=BOXED_INSTRUCTION),
}


def get_template(name: str) -> TaleTemplate:
    if name not in TEMPLATES:
        raise ValueError(f"unknown TALE template '{name}' (known: {', '.join(TEMPLATES)})")
    return TEMPLATES[name]


def estimation_message(question: str) -> str:
    """User message of the zero-shot budget estimation call."""
    return ESTIMATION_TEMPLATE.format(instruction=ESTIMATION_INSTRUCTION, question=question.strip())


def check_budget(budget: Any) -> int:
    """A budget is a positive int (bools and floats with a fraction are rejected)."""
    if isinstance(budget, bool) or not isinstance(budget, int):
        if isinstance(budget, float) and budget.is_integer():
            budget = int(budget)
        else:
            raise ValueError(f"a token budget must be a positive integer, got {budget!r}")
    if budget < 1:
        raise ValueError(f"a token budget must be >= 1, got {budget}")
    return budget


def within_budget(tokens: int, budget: int) -> bool:
    """Whether an answer of ``tokens`` tokens kept to a budget of ``budget`` tokens: at most ``budget`` (the
    one definition, for TALE's ``budget_respected`` and the ``within budget`` share of every budgeted method;
    truncation's answers cut at their budget count as within it)."""
    return tokens <= budget


# -------------------------------------------------------------------------------------- budget parsing

BudgetSource = Literal["parsed", "clamped", "fallback", "regression", "fixed", "none"]

_BRACKETS = re.compile(r"\[\[(.*?)\]\]", re.DOTALL)
_PLAIN_INT = re.compile(r"\+?(\d+|\d{1,3}(?:,\d{3})+)")


@dataclass(frozen=True)
class BudgetEstimate:
    """The outcome of parsing (or otherwise producing) one budget.

    Attributes:
        budget: the budget used in the prompt; always in ``[min_budget, max_budget]``.
        source: ``parsed`` (a valid ``[[N]]``), ``clamped`` (``[[N]]`` outside the bounds, moved inside),
            ``fallback`` (no usable ``[[N]]``: the fallback budget), ``regression`` or ``fixed``.
        raw: the bracket contents found in the estimate text, in order (for auditing).
        reason: why the value was clamped or the fallback used ("" when parsed cleanly).
    """

    budget: int
    source: str
    raw: tuple[str, ...] = ()
    reason: str = ""


def parse_budget(
    text: str | None,
    fallback_budget: int = DEFAULT_FALLBACK_BUDGET,
    min_budget: int = DEFAULT_MIN_BUDGET,
    max_budget: int = DEFAULT_MAX_BUDGET,
) -> BudgetEstimate:
    """Strictly parse the estimate ``[[N]]`` from a model reply.

    Rules: every ``[[...]]`` is inspected; its content (whitespace trimmed) must be a plain non-negative
    integer (``120``, ``+120`` or ``1,200``); anything else (``[[budget]]``, ``[[12.5]]``, ``[[-5]]``,
    ``[[about 50]]``) is not a budget. Exactly one distinct integer must remain, otherwise the reply is
    ambiguous. ``0`` is rejected. A value above ``max_budget`` (including numbers too long to be real) or
    below ``min_budget`` is clamped into the bounds. On any failure the result is ``fallback_budget`` with
    ``source="fallback"``: the budget is never negative or zero.
    """
    fallback_budget = check_budget(fallback_budget)
    min_budget, max_budget = check_budget(min_budget), check_budget(max_budget)
    if min_budget > max_budget:
        raise ValueError(f"min_budget {min_budget} > max_budget {max_budget}")
    fallback_budget = min(max(fallback_budget, min_budget), max_budget)

    def fallback(reason: str, raw: tuple[str, ...] = ()) -> BudgetEstimate:
        return BudgetEstimate(fallback_budget, "fallback", raw, reason)

    if not text or not text.strip():
        return fallback("empty estimate")
    raw = tuple(m.strip() for m in _BRACKETS.findall(text))
    if not raw:
        return fallback("no [[N]] in the estimate", raw)
    digits: list[str] = []
    for content in raw:
        if _PLAIN_INT.fullmatch(content):
            digits.append(content.lstrip("+").replace(",", "").lstrip("0") or "0")
    if not digits:
        if any(re.fullmatch(r"-\s*\d[\d,]*", c) for c in raw):
            return fallback("negative estimate", raw)
        return fallback("no [[N]] with an integer N", raw)
    distinct = sorted(set(digits))
    if len(distinct) > 1:
        return fallback(f"ambiguous estimate: {', '.join(distinct[:4])}", raw)
    value = distinct[0]
    if value == "0":
        return fallback("estimate is 0", raw)
    if len(value) > _MAX_DIGITS or int(value) > max_budget:
        return BudgetEstimate(
            max_budget, "clamped", raw, f"estimate {value[:12]} above max_budget {max_budget}"
        )
    number = int(value)
    if number < min_budget:
        return BudgetEstimate(min_budget, "clamped", raw, f"estimate {number} below min_budget {min_budget}")
    return BudgetEstimate(number, "parsed", raw, "")


def clamp_budget(
    value: float, min_budget: int = DEFAULT_MIN_BUDGET, max_budget: int = DEFAULT_MAX_BUDGET
) -> int:
    """Round a real-valued prediction to a budget inside ``[min_budget, max_budget]`` (NaN -> max)."""
    if math.isnan(value):
        return max_budget
    if math.isinf(value):
        return max_budget if value > 0 else min_budget
    return int(min(max(round(value), min_budget), max_budget))


# -------------------------------------------------------------------------------- regression estimator

_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")
FEATURES = ("bias", "log_question_tokens", "numbers", "sentences", "log_numbers")


def question_features(question: str, question_tokens: int) -> list[float]:
    """Features of a question for the regression estimator (``question_tokens`` in the target tokenizer)."""
    numbers = len(_NUMBER.findall(question))
    sentences = max(1, len(re.findall(r"[.?!](?:\s|$)", question)))
    return [1.0, math.log1p(max(0, question_tokens)), float(numbers), float(sentences), math.log1p(numbers)]


@dataclass
class RegressionEstimator:
    """Ridge regression of ``log(searched optimal budget)`` on :func:`question_features`.

    TALE's regression estimator predicts a question's budget from the question alone; the paper fine-tunes
    an LLM for it, this is the light version (fits in milliseconds on the search traces).
    """

    weights: list[float]
    l2: float = 1.0
    n_train: int = 0
    min_budget: int = DEFAULT_MIN_BUDGET
    max_budget: int = DEFAULT_MAX_BUDGET
    features: tuple[str, ...] = FEATURES

    @classmethod
    def fit(
        cls,
        questions: list[str],
        question_tokens: list[int],
        budgets: list[int],
        l2: float = 1.0,
        min_budget: int = DEFAULT_MIN_BUDGET,
        max_budget: int = DEFAULT_MAX_BUDGET,
    ) -> RegressionEstimator:
        import numpy as np

        if not (len(questions) == len(question_tokens) == len(budgets)):
            raise ValueError("questions, question_tokens and budgets differ in length")
        if len(budgets) < 2:
            raise ValueError(f"need at least 2 searched budgets to fit the regression, got {len(budgets)}")
        if l2 < 0:
            raise ValueError(f"l2 must be >= 0, got {l2}")
        x = np.array([question_features(q, n) for q, n in zip(questions, question_tokens, strict=True)])
        y = np.log(np.array([check_budget(int(b)) for b in budgets], dtype=float))
        reg = l2 * np.eye(x.shape[1])
        reg[0, 0] = 0.0  # no penalty on the bias
        w = np.linalg.solve(x.T @ x + reg + 1e-9 * np.eye(x.shape[1]), x.T @ y)
        return cls(
            weights=[float(v) for v in w],
            l2=l2,
            n_train=len(budgets),
            min_budget=min_budget,
            max_budget=max_budget,
        )

    def predict(self, question: str, question_tokens: int) -> int:
        feats = question_features(question, question_tokens)
        z = sum(w * f for w, f in zip(self.weights, feats, strict=True))
        return clamp_budget(math.exp(min(z, 50.0)), self.min_budget, self.max_budget)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["features"] = list(self.features)
        d["kind"] = "tale-regression"
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RegressionEstimator:
        if d.get("kind") != "tale-regression" or list(d.get("features", [])) != list(FEATURES):
            raise ValueError("not a TALE regression estimator file (or one written by another version)")
        weights = d.get("weights")
        if not isinstance(weights, list) or len(weights) != len(FEATURES):
            raise ValueError("regression estimator has malformed weights")
        return cls(
            weights=[float(w) for w in weights],
            l2=float(d.get("l2", 1.0)),
            n_train=int(d.get("n_train", 0)),
            min_budget=int(d.get("min_budget", DEFAULT_MIN_BUDGET)),
            max_budget=int(d.get("max_budget", DEFAULT_MAX_BUDGET)),
        )
