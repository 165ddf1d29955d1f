"""RaM's reward and filter on hand-made likelihoods (pure, milliseconds)."""

import math

import pytest

from tokenskip.errors import UserError
from tokenskip.metareason.reward import (
    RewardConfig,
    cost,
    hint_question,
    reprice,
    reward,
    select,
    summarize,
    utility,
)


def test_useless_thought_has_negative_reward_growing_with_length():
    cfg = RewardConfig(cost=0.1)
    lp = math.log(0.2)  # the thought leaves p(y*) where the direct answer had it
    rewards = [reward(lp, lp, n, cfg)["reward"] for n in (1, 10, 100, 1000)]
    assert all(r < 0 for r in rewards)
    assert rewards == sorted(rewards, reverse=True)  # longer -> more negative
    assert rewards[1] == pytest.approx(-0.1 * math.log(11))


def test_utility_is_the_log_ratio_with_eps():
    assert utility(math.log(0.5), math.log(0.05)) == pytest.approx(math.log(0.500001 / 0.050001))
    assert utility(-math.inf, -math.inf) == 0.0  # both underflow: ε/ε
    assert utility(math.log(0.9), -math.inf) == pytest.approx(math.log(0.900001 / 1e-6))


def test_cost_kinds():
    assert cost(0, 0.1) == 0.0
    assert cost(9, 0.5, "log") == pytest.approx(0.5 * math.log(10))
    assert cost(9, 0.5, "linear") == pytest.approx(4.5)
    with pytest.raises(ValueError):
        cost(-1, 0.1)


@pytest.mark.parametrize("bad", [dict(cost=-0.1), dict(cost=float("nan")), dict(cost_kind="square")])
def test_bad_config_is_a_user_error(bad):
    with pytest.raises(UserError):
        RewardConfig(**bad)


LP0 = math.log(0.01)


def _row(qid, source, correct, lp, n, cfg, lp0=LP0):
    return {"qid": qid, "source": source, "correct": correct, "thought_tokens": n, **reward(lp, lp0, n, cfg)}


def _rollouts(cfg):
    """q1: two correct rollouts (short and long, same likelihood), two wrong ones; q2: all wrong, one
    rationalization; q3: nothing correct at all."""
    hi, lo = math.log(0.9), math.log(0.001)
    return [
        _row("q1", "sample", True, hi, 20, cfg),
        _row("q1", "sample", True, hi, 400, cfg),
        _row("q1", "sample", False, lo, 30, cfg),
        _row("q1", "sample", False, lo, 300, cfg),
        _row("q1", "direct", False, math.log(0.01), 0, cfg),
        _row("q2", "sample", False, lo, 50, cfg),
        _row("q2", "rationalized", True, hi, 60, cfg),
        _row("q3", "sample", False, lo, 50, cfg),
    ]


def test_c0_is_stars_filter():
    rows = _rollouts(RewardConfig(cost=0.0))
    kept, counts = select(rows)
    # every correct rollout, whatever its length; the question with none correct is dropped
    assert kept == [r for r in rows if r["correct"]]
    assert counts == {"questions": 3, "dropped_questions": 1, "kept": 3}


def test_cost_prefers_the_short_correct_thought():
    cfg = RewardConfig(cost=1.0)
    rows = [_row("q", "sample", True, math.log(0.9), n, cfg) for n in (20, 100, 400)]
    kept, _ = select(rows)
    assert [r["thought_tokens"] for r in kept] == [20]  # same likelihood: the longer ones fall under the mean
    kept0, _ = select(
        [_row("q", "sample", True, math.log(0.9), n, RewardConfig(cost=0)) for n in (20, 100, 400)]
    )
    assert len(kept0) == 3  # c = 0: length does not matter


def test_direct_answer_wins_when_thinking_does_not_help():
    cfg = RewardConfig(cost=0.1)
    lp = math.log(0.8)
    rows = [
        _row("q", "sample", True, lp, 100, cfg, lp0=lp),
        _row("q", "sample", True, lp, 200, cfg, lp0=lp),
        _row("q", "direct", True, lp, 0, cfg, lp0=lp),
    ]
    kept, _ = select(rows)
    assert [r["source"] for r in kept] == ["direct"]


def test_summary_and_hint():
    cfg = RewardConfig()
    rows = _rollouts(cfg)
    kept, _ = select(rows)
    s = summarize(rows, kept)
    assert s["rollouts"] == 6 and s["accuracy"] == pytest.approx(2 / 6, abs=1e-4)
    assert s["thought_tokens"] == pytest.approx((20 + 400 + 30 + 300 + 50 + 50) / 6, abs=1e-3)
    assert hint_question("How many? ", "26") == "How many? (The correct answer is 26.)"


def test_reprice_gives_what_scoring_at_the_other_price_gives():
    # rollouts scored once at c = 1, re-priced at c = 0: the same rewards (to the scorer's 6 decimals) and the
    # same filter as scoring them at c = 0, so an ablation over c scores its rollouts once
    hi, lo = math.log(0.9), math.log(0.001)
    rollouts = [("q1", True, hi, 20), ("q1", True, hi, 400), ("q1", False, lo, 2), ("q2", True, hi, 60)]

    def scored(c):
        return [
            {"id": f"{q}#{i}", "qid": q, "source": "sample", "correct": ok, "logp_thought": round(lp, 6),
             "logp_direct": round(LP0, 6), "thought_tokens": n,
             **{k: round(v, 6) for k, v in reward(lp, LP0, n, RewardConfig(cost=c)).items()}}
            for i, (q, ok, lp, n) in enumerate(rollouts)
        ]  # fmt: skip

    repriced = [reprice(r, RewardConfig(cost=0.0)) for r in scored(1.0)]
    for a, b in zip(repriced, scored(0.0), strict=True):
        assert a.keys() == b.keys() and a["cost"] == 0
        assert a["reward"] == pytest.approx(b["reward"], abs=2e-6)
    ids = lambda rows: [r["id"] for r in select(rows)[0]]  # noqa: E731
    assert ids(repriced) == ids(scored(0.0)) == ["q1#0", "q1#1", "q2#3"]
    assert ids(scored(1.0)) == ["q1#0", "q2#3"]  # the price changed what is kept
