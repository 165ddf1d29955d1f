"""The γ-following verdicts of `tokenskip report` (tokenskip.eval.verdicts): pure, on hand-made rows."""

from __future__ import annotations

import json

import pytest

from tokenskip.eval.verdicts import family, matched, position, verdict_markdown, verdicts


def row(method, acc, tokens, gamma=None, act=None, low=None, high=None, speedup=None, run="a"):
    return {
        "method": method, "accuracy": acc, "accuracy_low": low if low is not None else acc - 0.05,
        "accuracy_high": high if high is not None else acc + 0.05, "mean_cot_tokens": tokens,
        "requested_ratio": gamma, "act_ratio": act, "speedup_batch1": speedup, "run": run,
    }  # fmt: skip


ORIGINAL = row("original", 0.30, 300.0, act=1.0, low=0.24, high=0.37)


def test_family_and_position():
    assert family("tokenskip@0.5") == "tokenskip" and family("original") == "original"
    assert position(0.2, 0.24, 0.37) == "below"
    assert position(0.24, 0.24, 0.37) == "inside"
    assert position(0.4, 0.24, 0.37) == "above"
    assert position(0.3, None, None) == "unknown"


def test_a_family_that_follows_gamma():
    rows = [
        ORIGINAL,
        row("tokenskip@1.0", 0.31, 297.0, 1.0, 0.99),
        row("tokenskip@0.7", 0.28, 216.0, 0.7, 0.72),
        row("tokenskip@0.5", 0.20, 156.0, 0.5, 0.52, low=0.15, high=0.26, speedup=1.7),
        row("budget-forcing@150", 0.065, 150.0, low=0.038, high=0.108),
        row("beconcise", 0.27, 292.0),
    ]
    (v,) = verdicts(rows)
    assert v["family"] == "tokenskip" and v["ratios"] == [1.0, 0.7, 0.5]
    assert v["act_ratio_strictly_decreasing"] is True
    assert v["mean_abs_act_ratio_gap"] == pytest.approx((0.01 + 0.02 + 0.02) / 3)
    assert {m: a["position"] for m, a in v["accuracy_vs_original"].items()} == {
        "tokenskip@1.0": "inside", "tokenskip@0.7": "inside", "tokenskip@0.5": "below",
    }  # fmt: skip
    assert v["speedup_batch1_at_smallest"] == 1.7 and v["smallest_ratio"] == 0.5
    # budget forcing at 150 tokens is "about the same" as γ = 0.5 (156), beconcise at 292 as γ = 1.0 (297)
    (bf,) = v["matched_tokens"]["tokenskip@0.5"]
    assert bf["method"] == "budget-forcing@150" and bf["difference_points"] == pytest.approx(13.5)
    assert bf["intervals_apart"] is True  # 15-26% vs 3.8-10.8%
    assert [o["method"] for o in v["matched_tokens"]["tokenskip@1.0"]] == ["beconcise"]
    assert v["matched_tokens"]["tokenskip@0.7"] == []
    text = verdict_markdown(v, ORIGINAL)
    assert "decreases strictly" in text and "NOT" not in text
    assert "1.70×" in text and "+13.5 pts, intervals apart" in text
    json.dumps(v)  # it goes into results.json


def test_a_family_that_ignores_gamma():
    rows = [
        ORIGINAL,
        row("tokenskip@0.9", 0.3, 290.0, 0.9, 0.97),
        row("tokenskip@0.5", 0.3, 295.0, 0.5, 0.98),
    ]
    (v,) = verdicts(rows)
    assert v["act_ratio_strictly_decreasing"] is False
    assert v["mean_abs_act_ratio_gap"] == pytest.approx((0.07 + 0.48) / 2)
    assert "does NOT decrease strictly" in verdict_markdown(v, ORIGINAL)


def test_one_ratio_is_no_family_and_other_runs_are_named():
    assert verdicts([ORIGINAL, row("lc-prompt@0.5", 0.24, 320.0, 0.5, 1.08)]) == []
    r = row("tokenskip@0.5", 0.2, 150.0, 0.5, 0.5)
    found = matched(r, [r, row("truncation@0.5", 0.02, 148.6, 0.5, 0.5, run="b"), ORIGINAL])
    assert [(o["method"], o["run"]) for o in found] == [("truncation@0.5", "b")]
