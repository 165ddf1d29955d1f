"""RaM's reward and expert-iteration filter: pure arithmetic on likelihoods and token counts, no model.

For question ``x`` with gold answer ``y*`` and thought ``z`` (``|z|`` tokens):

* ``utility = log((p(y*|x,z) + ε) / (p(y*|x,∅) + ε))`` with ε = 1e-6: how much the thought raises the gold
  answer's likelihood over answering at once (∅ = the empty thought);
* ``cost = c·log(1 + |z|)`` (``log`` cost, the paper's) or ``c·|z|`` (``linear``);
* ``reward = utility − cost``.

:func:`select` is one round's filter: a question without a correct rollout is dropped; of the others, the
correct rollouts whose reward is at least the mean reward of all the question's rollouts are kept. With
``c = 0`` the reward is the utility alone, and a correct rollout (which raises the gold answer's likelihood
more than the wrong ones do) passes: STaR's correctness filter.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from tokenskip.errors import UserError

EPS = 1e-6
CostKind = Literal["log", "linear"]
COST_KINDS = ("log", "linear")


@dataclass(frozen=True)
class RewardConfig:
    """How a thought is priced.

    Attributes:
        cost: c, the price of thinking (0 = no length penalty: STaR).
        cost_kind: ``log`` (c·log(1+|z|), the paper's) or ``linear`` (c·|z|).
        eps: ε added to both likelihoods (keeps the log finite when a likelihood underflows to 0).
    """

    cost: float = 0.1
    cost_kind: CostKind = "log"
    eps: float = EPS

    def __post_init__(self) -> None:
        if not math.isfinite(self.cost) or self.cost < 0:
            raise UserError(f"--cost must be a number >= 0, got {self.cost}")
        if self.cost_kind not in COST_KINDS:
            raise UserError(f"--cost_kind must be one of {', '.join(COST_KINDS)}, got {self.cost_kind!r}")
        if not self.eps > 0:
            raise UserError(f"eps must be > 0, got {self.eps}")


def utility(logp_thought: float, logp_direct: float, eps: float = EPS) -> float:
    """``log((p(y*|x,z)+ε)/(p(y*|x,∅)+ε))`` from the two log-likelihoods (``-inf`` means p = 0)."""
    return math.log(math.exp(logp_thought) + eps) - math.log(math.exp(logp_direct) + eps)


def cost(thought_tokens: int, c: float, kind: CostKind = "log") -> float:
    """The price of a thought of ``thought_tokens`` tokens: ``c·log(1+|z|)`` or ``c·|z|``."""
    if thought_tokens < 0:
        raise ValueError(f"thought_tokens must be >= 0, got {thought_tokens}")
    return c * (math.log1p(thought_tokens) if kind == "log" else float(thought_tokens))


def reward(
    logp_thought: float, logp_direct: float, thought_tokens: int, cfg: RewardConfig
) -> dict[str, float]:
    """``{"utility", "cost", "reward"}`` of one rollout."""
    u = utility(logp_thought, logp_direct, cfg.eps)
    k = cost(thought_tokens, cfg.cost, cfg.cost_kind)
    return {"utility": u, "cost": k, "reward": u - k}


def reprice(row: dict[str, Any], cfg: RewardConfig) -> dict[str, Any]:
    """A scored row under another price: its likelihoods and thought tokens kept, ``utility``/``cost``/
    ``reward`` recomputed with ``cfg`` (rounded as the scorer rounds them). The likelihoods do not depend on
    c, so rollouts scored once serve every arm of an ablation over c."""
    priced = reward(row["logp_thought"], row["logp_direct"], row["thought_tokens"], cfg)
    return {**row, **{k: round(v, 6) for k, v in priced.items()}}


def hint_question(question: str, answer: str) -> str:
    """STaR's rationalization prompt: the question with the correct answer given as a hint."""
    return f"{question.rstrip()} (The correct answer is {answer}.)"


def _mean(values: Iterable[float]) -> float | None:
    vals = list(values)
    return sum(vals) / len(vals) if vals else None


def select(rows: Sequence[dict[str, Any]]) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """One round's filter over scored rollouts of many questions.

    Every row has ``qid``, ``source`` (``sample``: one of the K sampled rollouts; ``rationalized``: a wrong
    sample redone with the hint; ``direct``: the answer without a thought), ``correct`` and ``reward``.
    Per question: no correct row -> dropped; threshold = the mean reward of all its rows (wrong ones
    included); kept = its correct rows with ``reward >= threshold``. Returns the kept rows
    (input order) and counts (questions, dropped_questions, kept).
    """
    by_q: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        by_q.setdefault(str(r["qid"]), []).append(r)
    kept_ids: set[int] = set()
    dropped = 0
    for group in by_q.values():
        correct = [r for r in group if r["correct"]]
        if not correct:
            dropped += 1
            continue
        threshold = _mean(r["reward"] for r in group)
        assert threshold is not None
        kept_ids.update(id(r) for r in correct if r["reward"] >= threshold - 1e-12)
    kept = [r for r in rows if id(r) in kept_ids]
    return kept, {"questions": len(by_q), "dropped_questions": dropped, "kept": len(kept)}


def summarize(rows: Sequence[dict[str, Any]], kept: Sequence[dict[str, Any]] = ()) -> dict[str, Any]:
    """A round's figures over its sampled rollouts: accuracy, mean thought tokens, utility, cost, reward;
    and the kept set's mean thought tokens and reward."""
    sampled = [r for r in rows if r.get("source", "sample") == "sample"]

    def avg(key: str, rs: Sequence[dict[str, Any]]) -> float | None:
        m = _mean(float(r[key]) for r in rs if r.get(key) is not None)
        return None if m is None else round(m, 4)

    return {
        "rollouts": len(sampled),
        "accuracy": avg("correct", sampled),
        "thought_tokens": avg("thought_tokens", sampled),
        "utility": avg("utility", sampled),
        "cost": avg("cost", sampled),
        "reward": avg("reward", sampled),
        "kept": len(kept),
        "kept_thought_tokens": avg("thought_tokens", kept),
        "kept_reward": avg("reward", kept),
    }
