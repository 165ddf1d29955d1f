"""``tale-ep``: TALE's estimate-then-prompt method (arXiv 2412.18547) on any local model.

Each question first gets a token budget β, then the budget-aware prompt "Let's think step by step and use
less than β tokens:" (:mod:`tokenskip.inference.tale_budget` holds the pure templates and parsing). Where β
comes from:

* ``tale-ep`` (``estimator="zero-shot"``): the model itself is asked for ``[[N]]`` (one short generation);
* ``tale-ep@regression``: the regression estimator fitted by ``tale search`` (``regressor`` option);
* ``tale-ep@N``: one fixed budget N for every question;
* ``estimator="none"``: no budget, the vanilla "Let's think step by step:" prompt (TALE's baseline);
* ``budgets`` option: the budgets of a ``tale estimate`` file.

Records carry the estimate (``budget``, ``budget_source``, ``estimate_*``), ``total_output_tokens``
(estimation + answer) and ``latency_s`` including the estimation call.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

from tokenskip.data.datasets import Record
from tokenskip.data.inputs import locate, open_bytes, read_rows, unwrapped
from tokenskip.data.prompts import PromptPreset
from tokenskip.errors import UserError
from tokenskip.inference.base import Generation, Generator, SamplingConfig
from tokenskip.inference.tale_budget import (
    DEFAULT_FALLBACK_BUDGET,
    DEFAULT_MAX_BUDGET,
    DEFAULT_MIN_BUDGET,
    BudgetEstimate,
    RegressionEstimator,
    check_budget,
    estimation_message,
    get_template,
    parse_budget,
    within_budget,
)
from tokenskip.methods.base import Context, FieldError, Method, Request, RequestField

ESTIMATORS = ("zero-shot", "regression", "fixed", "none")
ESTIMATE_FIELDS = (
    "budget", "budget_source", "budget_reason", "estimator", "estimate_output", "estimate_prompt_tokens",
    "estimate_tokens", "estimate_latency_s", "question_tokens",
)  # fmt: skip


def check_bounds(min_budget: int, max_budget: int, fallback_budget: int | None = None) -> None:
    """Every budget bound is a positive integer and min <= max."""
    for name, value in (
        ("min_budget", min_budget),
        ("max_budget", max_budget),
        ("fallback_budget", fallback_budget),
    ):
        if value is not None:
            try:
                check_budget(value)
            except ValueError as e:
                raise UserError(f"--{name}: {e}") from None
    if min_budget > max_budget:
        raise UserError(f"--min_budget {min_budget} is larger than --max_budget {max_budget}")


@dataclass
class EstimateArgs:
    """How TALE's budget estimate is made and bounded.

    Attributes:
        regressor: for --estimator regression: regressor.json, or a search's traces.jsonl / output folder.
        fallback_budget: budget used when the zero-shot reply has no usable [[N]] (never 0 or negative).
        min_budget: estimates below this are raised to it.
        max_budget: estimates above this (including absurdly long numbers) are lowered to it.
        estimate_max_new_tokens: cap on the tokens of the estimation reply.
    """

    regressor: str | None = None
    fallback_budget: int = DEFAULT_FALLBACK_BUDGET
    min_budget: int = DEFAULT_MIN_BUDGET
    max_budget: int = DEFAULT_MAX_BUDGET
    estimate_max_new_tokens: int = 64

    def check(self) -> None:
        check_bounds(self.min_budget, self.max_budget, self.fallback_budget)
        if self.estimate_max_new_tokens < 1:
            raise UserError(f"--estimate_max_new_tokens must be >= 1, got {self.estimate_max_new_tokens}")
        if self.regressor and not Path(self.regressor).exists():
            raise UserError(f"--regressor {self.regressor}: file not found")


def raw_preset(base: PromptPreset) -> PromptPreset:
    """TALE's messages go into the chat template as they are: no instruction, the template's own system
    prompt (the base preset's template arguments, e.g. a thinking switch, still apply)."""
    return replace(base, name="tale-raw", instruction="", system=None, anchor=None)


def chat_prompt(tokenizer: Any, message: str, base: PromptPreset | None = None) -> str:
    """``message`` as the single user turn of the model's chat template (generation prompt added)."""
    from tokenskip.data.prompts import PRESETS, render_chat

    return render_chat(
        tokenizer, [{"role": "user", "content": message}], raw_preset(base or PRESETS["default"])
    )


def _read_traces(path: str | Path) -> list[dict[str, Any]]:
    rows = []
    for lineno, row in read_rows(path):
        if "id" not in row or "searched" not in row:
            raise UserError(f"{locate(path, lineno)}: not a TALE search trace (no 'id'/'searched')")
        rows.append(row)
    return rows


def fit_regressor(
    traces: list[dict[str, Any]], count_tokens: Callable[[str], int] | None = None, l2: float = 1.0
) -> RegressionEstimator:
    """Fit the regression estimator on the optimal budgets of searched traces."""
    rows = [t for t in traces if t.get("searched")]
    tokens = []
    for t in rows:
        n = t.get("question_tokens")
        if n is None:
            if count_tokens is None:
                raise UserError("trace has no question_tokens and no tokenizer was given to count them")
            n = count_tokens(str(t["question"]))
        tokens.append(int(n))
    try:
        questions = [str(t["question"]) for t in rows]
        return RegressionEstimator.fit(questions, tokens, [int(t["optimal_budget"]) for t in rows], l2=l2)
    except ValueError as e:
        raise UserError(f"cannot fit the regression estimator: {e}") from None


def regressor_source(path: str) -> RegressionEstimator | list[dict[str, Any]]:
    """``--regressor``, read before any model loads: a fitted ``regressor.json`` (written by ``tale
    search``), or the searched traces (``traces.jsonl``, a JSON array, gzipped or not, or the search's output
    folder) to fit one on."""
    p = Path(path)
    if p.is_dir():
        p = p / "regressor.json" if (p / "regressor.json").exists() else p / "traces.jsonl"
    if not p.exists():
        raise UserError(f"--regressor {path}: file not found")
    if unwrapped(p).suffix.lower() == ".jsonl":
        return _read_traces(p)
    try:
        with open_bytes(p) as f:
            fitted = json.loads(f.read().decode("utf-8-sig"))
        if isinstance(fitted, list):  # traces as a JSON array
            return _read_traces(p)
        return RegressionEstimator.from_dict(fitted)
    except (ValueError, TypeError, AttributeError) as e:
        raise UserError(f"--regressor {p}: {str(e).splitlines()[0][:200]}") from None


def make_regressor(
    source: RegressionEstimator | list[dict[str, Any]] | None,
    count_tokens: Callable[[str], int] | None = None,
) -> RegressionEstimator | None:
    """The estimator of a :func:`regressor_source` (traces are fitted here, with ``count_tokens``)."""
    if source is None or isinstance(source, RegressionEstimator):
        return source
    return fit_regressor(source, count_tokens)


def load_budget_file(path: str, records: Sequence[Record]) -> dict[str, dict[str, Any]]:
    """``id -> estimate fields`` from a ``tale estimate`` output; every record must have a budget."""
    found: dict[str, dict[str, Any]] = {}
    for lineno, row in read_rows(path):
        if "id" not in row or "budget" not in row:
            raise UserError(f"{locate(path, lineno)}: not a `tale estimate` record (no 'id'/'budget')")
        try:
            row["budget"] = check_budget(row["budget"])
        except ValueError as e:
            raise UserError(f"{locate(path, lineno)}: field 'budget': {e}") from None
        found[str(row["id"])] = {k: row.get(k) for k in ESTIMATE_FIELDS}
    missing = [r.id for r in records if r.id not in found]
    if missing:
        raise UserError(f"--budgets {path} has no budget for {len(missing)} question(s), e.g. '{missing[0]}'")
    return found


class BudgetEstimator:
    """One estimate (+ token accounting) per question, in batches.

    ``zero-shot``: one generation per question with TALE's estimation prompt, parsed by
    :func:`~tokenskip.inference.tale_budget.parse_budget`. ``regression``: no model call.
    """

    def __init__(
        self,
        kind: str,
        tokenizer: Any,
        count_tokens: Callable[[str], int],
        generator: Generator | None = None,
        regressor: RegressionEstimator | None = None,
        fallback_budget: int = DEFAULT_FALLBACK_BUDGET,
        min_budget: int = DEFAULT_MIN_BUDGET,
        max_budget: int = DEFAULT_MAX_BUDGET,
        max_new_tokens: int = 64,
        base: PromptPreset | None = None,
    ) -> None:
        if kind not in ("zero-shot", "regression"):
            raise UserError(f"unknown --estimator '{kind}' (zero-shot, regression)")
        if kind == "zero-shot" and generator is None:
            raise ValueError("the zero-shot estimator needs a generator")
        if kind == "regression" and regressor is None:
            raise UserError(
                "--estimator regression needs --regressor (regressor.json or traces.jsonl of tale search)"
            )
        self.kind, self.tokenizer, self.count_tokens = kind, tokenizer, count_tokens
        self.generator, self.regressor, self.base = generator, regressor, base
        self.fallback_budget, self.min_budget, self.max_budget = fallback_budget, min_budget, max_budget
        self.sampling = SamplingConfig(max_new_tokens=max_new_tokens, temperature=0.0)

    def estimate(self, records: Sequence[Record]) -> list[dict[str, Any]]:
        if self.kind == "regression":
            assert self.regressor is not None
            out = []
            for r in records:
                n = self.count_tokens(r.question)
                budget = min(max(self.regressor.predict(r.question, n), self.min_budget), self.max_budget)
                out.append(self._row(BudgetEstimate(budget, "regression"), None, 0, 0, 0.0, n))
            return out
        assert self.generator is not None
        prompts = [chat_prompt(self.tokenizer, estimation_message(r.question), self.base) for r in records]
        gens = self.generator.generate(prompts, self.sampling)
        out = []
        for r, prompt, gen in zip(records, prompts, gens, strict=True):
            est = parse_budget(gen.text, self.fallback_budget, self.min_budget, self.max_budget)
            n_prompt, n_question = self.count_tokens(prompt), self.count_tokens(r.question)
            out.append(self._row(est, gen.text, n_prompt, gen.num_tokens, gen.latency_s, n_question))
        return out

    def _row(
        self,
        est: BudgetEstimate,
        text: str | None,
        prompt_tokens: int,
        tokens: int,
        latency: float,
        q_tokens: int,
    ) -> dict[str, Any]:
        return {
            "budget": est.budget,
            "budget_source": est.source,
            "budget_reason": est.reason,
            "estimator": self.kind,
            "estimate_output": text,
            "estimate_prompt_tokens": prompt_tokens,
            "estimate_tokens": tokens,
            "estimate_latency_s": round(latency, 4),
            "question_tokens": q_tokens,
        }


def _fixed_row(budget: int | None, estimator: str, question_tokens: int) -> dict[str, Any]:
    source = "none" if budget is None else "fixed"
    return dict.fromkeys(ESTIMATE_FIELDS) | {
        "budget": budget, "budget_source": source, "budget_reason": "", "estimator": estimator,
        "estimate_prompt_tokens": 0, "estimate_tokens": 0, "estimate_latency_s": 0.0,
        "question_tokens": question_tokens,
    }  # fmt: skip


class TaleEP(Method):
    """Options: ``estimator`` (zero-shot, regression, fixed, none), ``template`` (tale, tale-boxed),
    ``regressor``, ``budgets`` (a ``tale estimate`` file), ``fallback_budget``, ``min_budget``,
    ``max_budget``, ``estimate_max_new_tokens``."""

    kind = "tale-ep"
    arg = "text"
    arg_required = False
    request_fields = (
        RequestField(
            "token_budget",
            int | Literal["auto"],
            minimum=1,
            description='TALE: method tale-ep@β with a token budget β, or "auto" for the zero-shot estimate.',
        ),
    )

    @classmethod
    def from_request(cls, values: dict[str, Any], max_tokens: int, max_budget: int) -> str:
        """``token_budget``: β (``tale-ep@β``) or ``"auto"`` (``tale-ep``: the model's zero-shot estimate)."""
        budget = values["token_budget"]
        if budget == "auto":
            return "tale-ep"
        if not 1 <= budget <= max_budget:
            raise FieldError("token_budget", f"token_budget must be in [1, {max_budget}], got {budget}")
        return f"tale-ep@{budget}"

    def response_info(
        self, fields: dict[str, Any], extra: dict[str, Any], gen: Generation, chosen_by: str | None
    ) -> dict[str, Any]:
        """The budget, where it came from (``request`` when ``token_budget`` set it) and the estimate."""
        budget = fields.get("budget")
        info: dict[str, Any] = {"token_budget": budget}
        if budget is None:
            return info
        fixed = chosen_by == "token_budget" and fields.get("budget_source") == "fixed"
        info["budget_source"] = "request" if fixed else fields.get("budget_source")
        if fields.get("estimate_output") is not None:
            info["estimate_output"] = fields["estimate_output"]
            info["estimate_tokens"] = fields.get("estimate_tokens") or 0
        if info.get("estimate_tokens"):
            info["total_tokens_with_estimate"] = info["estimate_tokens"] + gen.num_tokens
        return info

    @classmethod
    def parse(cls, text: str | None, **options: Any) -> Method:
        if text is None or text in ("zero-shot", "regression", "none"):
            est = options.pop("estimator", None) or (text or "zero-shot")
            return cls(None if text is None else text, estimator=est, **options)
        try:
            budget = check_budget(int(text))
        except ValueError:
            raise UserError(
                f"method 'tale-ep@{text}': use tale-ep, tale-ep@regression or tale-ep@N"
            ) from None
        return cls(budget, estimator="fixed", **options)

    def __init__(self, value: Any = None, **options: Any) -> None:
        super().__init__(value, **options)
        self.estimator = options.get("estimator", "zero-shot")
        if self.estimator not in ESTIMATORS:
            raise UserError(f"unknown --estimator '{self.estimator}' ({', '.join(ESTIMATORS)})")
        try:
            self.template = get_template(options.get("template") or "tale")
        except ValueError as e:
            raise UserError(str(e)) from None
        self._estimator: BudgetEstimator | None = None
        self._from_file: dict[str, dict[str, Any]] | None = None
        self._regressor: RegressionEstimator | list[dict[str, Any]] | None = None

    def preset(self, base: PromptPreset) -> PromptPreset:
        return raw_preset(base)

    def record_settings(self) -> dict[str, Any]:
        o = self.options
        keys = (
            "budgets",
            "regressor",
            "fallback_budget",
            "min_budget",
            "max_budget",
            "estimate_max_new_tokens",
        )
        return {"estimator": self.estimator, "template": self.template.name,
                **{k: o[k] for k in keys if o.get(k) is not None}}  # fmt: skip

    def messages(
        self, question: str, base: PromptPreset, eos: str | None, fields: dict[str, Any] | None = None
    ) -> list[dict[str, str]]:
        budget = (fields or {}).get("budget")
        return [{"role": "user", "content": self.template.user_message(question, budget)}]

    def _budget_estimator(self, ctx: Context) -> BudgetEstimator:
        if self._estimator is None:
            o, g = self.options, ctx.generator
            if self._regressor is None and self.estimator == "regression" and o.get("regressor"):
                self._regressor = regressor_source(o["regressor"])
            reg = make_regressor(self._regressor, g.count_tokens)
            self._estimator = BudgetEstimator(
                self.estimator, g.tokenizer, g.count_tokens, g, reg,
                o.get("fallback_budget") or DEFAULT_FALLBACK_BUDGET, o.get("min_budget") or DEFAULT_MIN_BUDGET,
                o.get("max_budget") or DEFAULT_MAX_BUDGET, o.get("estimate_max_new_tokens") or 64, ctx.preset,
            )  # fmt: skip
        return self._estimator

    def setup(self, records: Sequence[Record]) -> None:
        if self.options.get("budgets"):
            self._from_file = load_budget_file(self.options["budgets"], records)
        elif self.estimator == "regression" and self.options.get("regressor"):
            self._regressor = regressor_source(self.options["regressor"])  # read before any model loads

    def prepare(self, ctx: Context, records: list[Record]) -> list[dict[str, Any]]:
        if self.options.get("budgets"):
            if self._from_file is None:
                self.setup(records)
            assert self._from_file is not None
            return [{**self._from_file[r.id], "budgets_file": str(self.options["budgets"])} for r in records]
        if self.estimator in ("fixed", "none"):
            budget = self.value if self.estimator == "fixed" else None
            return [
                _fixed_row(budget, self.estimator, ctx.generator.count_tokens(r.question)) for r in records
            ]
        return self._budget_estimator(ctx).estimate(records)

    def finish(
        self, ctx: Context, record: Record, request: Request, gen: Generation
    ) -> tuple[Generation, dict]:
        f = request.fields
        budget = f.get("budget")
        return gen, {
            "template": self.template.name,
            "prompt_tokens": ctx.generator.count_tokens(request.prompt),
            "total_output_tokens": gen.num_tokens + int(f.get("estimate_tokens") or 0),
            "budget_respected": None if budget is None else within_budget(gen.num_tokens, budget),
            "answer_latency_s": round(gen.latency_s, 4),
            "latency_s": round(gen.latency_s + float(f.get("estimate_latency_s") or 0.0), 4),
        }
