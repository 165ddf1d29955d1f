"""`metareason iterate` on the embedded model: one round from a fresh checkout, and a killed run resuming.

The 135M model rarely gets a grade-school question right in a few tokens, so the resume test marks every
rollout correct (a patched grader) to make the round train deterministically.
"""

import json

import pytest

from tests.conftest import run_cli

pytestmark = pytest.mark.slow

SMALL = [
    "--samples",
    "2",
    "--max_new_tokens",
    "24",
    "--max_steps",
    "1",
    "--device",
    "cpu",
    "--batch_size",
    "8",
]


def _lines(path):
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def test_one_round_on_eight_sample_questions(tmp_path):
    out = tmp_path / "run"
    r = run_cli("metareason", "iterate", "--out", str(out), "--dataset", "sample", "--limit", "8", *SMALL)
    assert r.returncode == 0, r.stderr[-3000:]
    rnd = out / "round-1"
    for name in ("samples.jsonl", "rationalized.jsonl", "direct.jsonl", "scored.jsonl", "kept.jsonl",
                 "summary.json"):  # fmt: skip
        assert (rnd / name).exists(), name
    assert (out / "metareason.png").stat().st_size > 1000 and (out / "summary.md").exists()
    samples, scored = _lines(rnd / "samples.jsonl"), _lines(rnd / "scored.jsonl")
    assert len(samples) == 16 and len({s["id"] for s in samples}) == 16
    n_wrong = sum(not s["correct"] for s in samples)
    assert len(_lines(rnd / "rationalized.jsonl")) == n_wrong
    assert len(scored) == 16 + n_wrong + 8 and len({s["id"] for s in scored}) == len(scored)
    for s in scored:
        assert s["reward"] == pytest.approx(s["utility"] - s["cost"], abs=1e-5)
        if s["source"] == "direct":
            assert s["thought_tokens"] == 0 and s["utility"] == 0
        if s["source"] == "rationalized":
            assert "correct answer is" not in s["prompt"] and "correct answer is" in s["hint_prompt"]
    kept = _lines(rnd / "kept.jsonl")
    assert all(k["correct"] for k in kept)
    summary = json.loads((rnd / "summary.json").read_text())
    assert summary["rollouts"] == 16 and summary["kept"] == len(kept)
    assert summary["trained"] == bool(kept) == (rnd / "adapter" / "tokenskip_adapter.json").exists()
    # a finished round is not redone; other settings are refused
    r = run_cli("metareason", "iterate", "--out", str(out), "--dataset", "sample", "--limit", "8", *SMALL)
    assert r.returncode == 0 and "round 1/1" not in r.stdout, r.stderr[-2000:]
    r = run_cli(
        "metareason", "iterate", "--out", str(out), "--dataset", "sample", "--limit", "8", "--cost", "0"
    )
    assert r.returncode == 2 and "cost: 0.1 -> 0" in r.stderr


def test_killed_run_resumes_at_the_step_where_it_stopped(tmp_path, monkeypatch):
    import tokenskip.methods.base as base
    import tokenskip.verbs.train as train_mod
    from tokenskip.metareason.rollouts import RolloutMethod
    from tokenskip.verbs import metareason as it

    out = tmp_path / "run"
    kw = dict(out=str(out), dataset="sample", limit=3, samples=2, max_new_tokens=12, direct_tokens=8,
              max_steps=1, device="cpu", batch_size=8)  # fmt: skip

    def killed(**_):
        raise KeyboardInterrupt

    monkeypatch.setattr(base, "grade", lambda text, ref, task="gsm8k": (ref, True))  # every rollout correct
    monkeypatch.setattr(train_mod, "train", killed)
    with pytest.raises(KeyboardInterrupt):
        it.iterate(**kw)
    rnd = out / "round-1"
    scored_path = rnd / "scored.jsonl"
    before = {p: p.read_text() for p in rnd.glob("*.jsonl") if p.name not in ("scored.jsonl", "kept.jsonl")}
    assert {p.name for p in before} == {"samples.jsonl", "rationalized.jsonl", "direct.jsonl"}
    full = _lines(scored_path)
    assert len(full) == 3 * 2 + 3  # all correct: no rationalization
    # the kill also hit scoring mid-write: two records lost, the last line half written
    lines = scored_path.read_text().splitlines(keepends=True)
    scored_path.write_text("".join(lines[:-2]) + lines[-2][:20])
    monkeypatch.undo()

    def no_generation(*a, **k):
        raise AssertionError("finished rollouts were generated again")

    monkeypatch.setattr(RolloutMethod, "run_batch", no_generation)
    result = it.iterate(**kw)
    assert {p: p.read_text() for p in before} == before  # rollouts untouched
    again = _lines(scored_path)
    assert sorted(r["id"] for r in again) == sorted(r["id"] for r in full)  # none lost, none twice
    for a in again:
        b = next(x for x in full if x["id"] == a["id"])
        assert a["reward"] == pytest.approx(b["reward"], abs=1e-3)
    assert (rnd / "adapter" / "tokenskip_adapter.json").exists() and (rnd / "summary.json").exists()
    assert result["adapter"] == str(rnd / "adapter")
    monkeypatch.undo()
    # the trained adapter is the `ram` method
    from tokenskip.verbs.generate import infer

    res = infer(method="ram", adapter=str(rnd / "adapter"), input="sample", limit=2, out=str(tmp_path / "ram.jsonl"),
                max_new_tokens=8, device="cpu")  # fmt: skip
    assert res["generated"] == 2
    rows = _lines(tmp_path / "ram.jsonl")
    assert {r["method"] for r in rows} == {"ram"} and {r["adapter"] for r in rows} == {str(rnd / "adapter")}
