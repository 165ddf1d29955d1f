"""benchmarks/metareasoning.py's arms: ``--costs`` parsing and the shared, re-priced files of a later arm."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest

from tokenskip.metareason.reward import RewardConfig, reward, select

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("ram_ablation", REPO / "benchmarks" / "metareasoning.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_costs_name_arms_with_their_cost_kind(bench):
    assert bench.arms("0.1,0, 0.1:linear,3:log") == [
        ("c=0.1", 0.1, "log"), ("c=0", 0.0, "log"), ("c=0.1-linear", 0.1, "linear"), ("c=3", 3.0, "log"),
    ]  # fmt: skip
    with pytest.raises(SystemExit, match="log or linear"):
        bench.arms("0.1:square")


def _scored(c: float, kind: str) -> list[dict]:
    lp0, hi, lo = math.log(0.01), math.log(0.9), math.log(0.001)
    rows = []
    for i, (ok, lp, n) in enumerate([(True, hi, 20), (True, hi, 400), (False, lo, 300), (False, lo, 100)]):
        priced = reward(lp, lp0, n, RewardConfig(cost=c, cost_kind=kind))
        rows.append({"id": f"q#s{i}", "qid": "q", "source": "sample", "correct": ok, "logp_thought": round(lp, 6),
                     "logp_direct": round(lp0, 6), "thought_tokens": n, **{k: round(v, 6) for k, v in priced.items()},
                     "cost_c": c, "cost_kind": kind})  # fmt: skip
    return rows


def _write(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def test_a_later_arm_gets_the_first_arms_rollouts_repriced_with_its_own_cost_kind(bench, tmp_path):
    src, dst = tmp_path / "c=0.1", tmp_path / "c=0.03-linear"
    _write(src / "round-1" / "scored.jsonl", _scored(0.1, "log"))
    _write(src / "round-1" / "samples.jsonl", [{"id": "q#s0"}])
    bench.share(src, dst, 0.03, "linear")
    assert not dst.exists()  # the first arm is not finished: nothing shared yet
    (src / "round-1" / "summary.json").write_text("{}", encoding="utf-8")
    bench.share(src, dst, 0.03, "linear")
    assert (dst / "round-1" / "samples.jsonl").read_text() == (src / "round-1" / "samples.jsonl").read_text()
    got = [json.loads(x) for x in (dst / "round-1" / "scored.jsonl").read_text().splitlines()]
    want = _scored(0.03, "linear")
    for a, b in zip(got, want, strict=True):
        assert a["reward"] == pytest.approx(b["reward"], abs=2e-6)
        assert (a["cost_c"], a["cost_kind"]) == (0.03, "linear")
    # the linear price bites where the log one does not: the 400-token correct rollout is dropped
    assert [r["id"] for r in select(_scored(0.1, "log"))[0]] == ["q#s0", "q#s1"]
    assert [r["id"] for r in select(got)[0]] == ["q#s0"]
