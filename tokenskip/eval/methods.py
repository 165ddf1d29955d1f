"""Benchmark methods as the TokenSkip paper defines them. Pure: parsing and prompt/limit rules only.

``original``          the model as it is (no adapter, no ratio)
``tokenskip@γ``       the TokenSkip-trained model (``--adapter``) prompted with ratio γ (γ = 1.0: no marker)
``truncation@γ``      the original model with its output cut to γ × that question's original output tokens
``lc-prompt@γ``       the original model told "Please reduce (1-γ)·100% of the words in your Chain-of-Thought
                      process." (γ = 0.5 gives the paper's "Please reduce 50% of the words ...")
``beconcise``         the original model told "Be concise."
``tale-ep``           TALE-EP: the model estimates a token budget, then answers "using less than β tokens"
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from tokenskip.data.prompts import PromptPreset, check_ratio, format_ratio
from tokenskip.errors import UserError

KINDS_WITH_RATIO = ("tokenskip", "truncation", "lc-prompt")
KINDS_WITHOUT_RATIO = ("original", "beconcise", "tale-ep")
DEFAULT_METHODS = "original,tokenskip@1.0,tokenskip@0.9,tokenskip@0.7,tokenskip@0.5,truncation@0.5,lc-prompt@0.5,beconcise,tale-ep"


@dataclass(frozen=True)
class Method:
    kind: str
    ratio: float | None = None

    @property
    def name(self) -> str:
        return f"{self.kind}@{format_ratio(self.ratio)}" if self.ratio is not None else self.kind

    @property
    def uses_adapter(self) -> bool:
        return self.kind == "tokenskip"

    @property
    def needs_original(self) -> bool:
        return self.kind == "truncation"


def parse_methods(spec: str | list[str]) -> list[Method]:
    """``"original,tokenskip@0.5,beconcise"`` -> Methods (duplicates removed, order kept)."""
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    methods: list[Method] = []
    for raw in items:
        item = raw.strip()
        if not item:
            continue
        kind, at, ratio = item.partition("@")
        if kind in KINDS_WITH_RATIO:
            if not at:
                raise UserError(f"method '{item}' needs a ratio, e.g. {kind}@0.5")
            m = Method(kind, check_ratio(ratio))
        elif kind in KINDS_WITHOUT_RATIO:
            if at:
                raise UserError(f"method '{kind}' takes no ratio (got '{item}')")
            m = Method(kind)
        else:
            known = ", ".join([f"{k}@γ" for k in KINDS_WITH_RATIO] + list(KINDS_WITHOUT_RATIO))
            raise UserError(f"unknown method '{item}' (known: {known})")
        if m not in methods:
            methods.append(m)
    if not methods:
        raise UserError("--methods is empty")
    return methods


def execution_order(methods: list[Method]) -> list[Method]:
    """Original first (truncation needs its lengths; ActRatio needs its mean), adapter methods last."""
    ordered = list(methods)
    if not any(m.kind == "original" for m in ordered):
        ordered.insert(0, Method("original"))
    return sorted(ordered, key=lambda m: (m.kind != "original", m.uses_adapter))


def method_preset(method: Method, base: PromptPreset) -> PromptPreset:
    """The prompt preset a method uses (instruction extended for the prompting baselines)."""
    if method.kind == "lc-prompt":
        pct = round((1 - float(method.ratio)) * 100)
        extra = f" Please reduce {pct}% of the words in your Chain-of-Thought process."
        return replace(base, instruction=base.instruction + extra)
    if method.kind == "beconcise":
        return replace(base, instruction=base.instruction + " Be concise.")
    return base


def prompt_ratio(method: Method) -> float | None:
    """The γ written into the prompt (only TokenSkip-trained models read it)."""
    return method.ratio if method.kind == "tokenskip" else None


def truncation_budget(ratio: float, original_output_tokens: int) -> int:
    """Truncation baseline: γ × the original output length of that question, at least 1 token."""
    return max(1, round(ratio * original_output_tokens))
