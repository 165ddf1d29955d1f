"""Scorers, registered by name: ``tokenskip compress --scorer``, ``tokenskip fidelity --scorers`` and
:func:`make_scorer` all resolve through :data:`SCORERS`.

Adding a scorer is one module with a :class:`~tokenskip.compressors.base.Scorer` subclass plus one line
here; see ``length.py`` for the smallest example. A spec (``tokenskip fidelity``) is ``name``,
``name:checkpoint`` (the scorer's model, e.g. ``selfinfo:qwen2.5-coder-0.5b``) or either with a trailing
``?`` (skip the scorer, instead of failing, when its model cannot be loaded here).
"""

from __future__ import annotations

import importlib
from typing import Any, NamedTuple

from tokenskip.compressors.base import Scorer, ScorerOptions
from tokenskip.errors import UserError

# name -> "module:Class" (imported on first use)
SCORERS: dict[str, str] = {
    "llmlingua2": "tokenskip.compressors.llmlingua2:LLMLingua2Scorer",
    "selfinfo": "tokenskip.compressors.selfinfo:SelfInfoScorer",
    "random": "tokenskip.compressors.baselines:RandomScorer",
    "truncation": "tokenskip.compressors.baselines:TruncationScorer",
    "llmlingua": "tokenskip.compressors.lingua_compat:LLMLinguaReference",
    "length": "tokenskip.compressors.length:LengthScorer",
}


def scorer_class(name: str) -> type[Scorer]:
    """The registered class of scorer ``name`` (UserError naming the known ones for anything else)."""
    if name not in SCORERS:
        raise UserError(f"unknown --scorer '{name}' (one of: {', '.join(SCORERS)})")
    module, _, attr = SCORERS[name].partition(":")
    return getattr(importlib.import_module(module), attr)


def make_scorer(scorer: str = "selfinfo", **options: Any) -> Scorer:
    """Build a scorer by name; ``options`` are :class:`~tokenskip.compressors.base.ScorerOptions` fields
    (``checkpoint``, ``mode``, ``device`` ...), each scorer reads those it uses."""
    return scorer_class(scorer).build(ScorerOptions(**options))


class ScorerSpec(NamedTuple):
    """One item of a scorer list: ``name[:checkpoint][?]``."""

    name: str
    checkpoint: str | None
    optional: bool


def parse_spec(item: str) -> ScorerSpec:
    """``"selfinfo:qwen2.5-coder-0.5b"`` -> ``ScorerSpec("selfinfo", "qwen2.5-coder-0.5b", False)``;
    ``"llmlingua2?"`` -> optional. Only scorers that are compared (not slow reference copies) are known."""
    item = item.strip()
    optional = item.endswith("?")
    name, _, checkpoint = item.rstrip("?").partition(":")
    known = [n for n in SCORERS if scorer_class(n).compared]
    if name not in known:
        raise UserError(f"unknown scorer '{name}' (one of: {', '.join(known)}; name:checkpoint)")
    if checkpoint and "checkpoint" not in scorer_class(name).options:
        raise UserError(f"scorer '{name}' takes no checkpoint (got '{item}')")
    return ScorerSpec(name, checkpoint or None, optional)
