"""`metareason iterate --algorithm grpo`: trl's GRPOTrainer on RaM's reward, two steps on the embedded model,
and the same run killed in its second step and resumed."""

import json
import math

import pytest

pytestmark = pytest.mark.slow

# 2 questions, 1 per step, 2 completions each: 2 steps
KW = dict(dataset="sample", limit=2, algorithm="grpo", samples=2, train_batch_size=1, grpo_steps=2,
          max_new_tokens=12, device="cpu", learning_rate=1e-3, plot=False)  # fmt: skip


def _rows(path):
    return [json.loads(x) for x in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def whole(tmp_path_factory):
    """A run that is never killed: (its folder, its result)."""
    from tokenskip.verbs.metareason import iterate

    out = tmp_path_factory.mktemp("grpo") / "whole"
    return out, iterate(out=str(out), **KW)


def test_grpo_two_steps(whole):
    out, res = whole
    rnd = out / "round-1"
    assert (rnd / "adapter" / "adapter_model.safetensors").exists()
    info = json.loads((rnd / "adapter" / "tokenskip_adapter.json").read_text())
    assert info["algorithm"] == "grpo" and info["preset"]["name"] == "default"
    rows = _rows(rnd / "grpo_rollouts.jsonl")
    assert [r["grpo_step"] for r in rows] == [1, 1, 2, 2]  # 2 steps x 1 question x 2 completions
    for r in rows:
        assert r["reward"] == pytest.approx(r["utility"] - 0.1 * math.log1p(r["thought_tokens"]), abs=1e-5)
    assert res["rounds"][0]["algorithm"] == "grpo" and res["rounds"][0]["rollouts"] == 4
    assert not (rnd / "checkpoints").exists()


def test_killed_grpo_run_resumes_from_its_last_step(whole, tmp_path, monkeypatch):
    """Killed in step 2 of 2 (its rollouts logged, a line half written): the re-run resumes from
    checkpoint-1, runs step 2 only, and ends with the rollouts and adapter of the run never killed."""
    from safetensors.torch import load_file

    from tokenskip.metareason import grpo
    from tokenskip.verbs.metareason import iterate

    real = grpo.make_reward_func
    calls: list[int] = []

    def counted(*a, kill_at=None, **k):
        fn = real(*a, **k)

        def reward(*ra, **rk):
            calls.append(1)
            out = fn(*ra, **rk)
            if len(calls) == kill_at:  # killed after the step's rollouts were logged, before it trained
                with open(a[1], "a") as f:
                    f.write('{"id": "half-writ')
                raise KeyboardInterrupt
            return out

        return reward

    monkeypatch.setattr(grpo, "make_reward_func", lambda *a, **k: counted(*a, kill_at=2, **k))
    out = tmp_path / "killed"
    with pytest.raises(KeyboardInterrupt):
        iterate(out=str(out), **KW)
    rnd = out / "round-1"
    assert [p.name for p in (rnd / "checkpoints").glob("checkpoint-*")] == ["checkpoint-1"]
    calls.clear()
    monkeypatch.setattr(grpo, "make_reward_func", lambda *a, **k: counted(*a, **k))
    iterate(out=str(out), **KW)
    assert len(calls) == 1  # only step 2 ran again
    rows, ref = _rows(rnd / "grpo_rollouts.jsonl"), _rows(whole[0] / "round-1" / "grpo_rollouts.jsonl")
    assert [r["grpo_step"] for r in rows] == [1, 1, 2, 2]  # step 2's first rollouts dropped, none twice
    assert [r["output"] for r in rows] == [r["output"] for r in ref]
    a = load_file(str(rnd / "adapter" / "adapter_model.safetensors"))
    b = load_file(str(whole[0] / "round-1" / "adapter" / "adapter_model.safetensors"))
    assert a.keys() == b.keys() and all(float((a[k] - b[k]).abs().max()) <= 1e-6 for k in a)
    assert any(float(v.abs().max()) > 0 for k, v in a.items() if "lora_B" in k)  # it trained
    # a finished adapter is not trained again (here: the round's summary lost, as if killed before it)
    (rnd / "summary.json").unlink()
    calls.clear()
    res = iterate(out=str(out), **KW)
    assert not calls and res["rounds"][0]["rollouts"] == 4


def test_grpo_needs_two_samples(tmp_path):
    from tokenskip.errors import UserError
    from tokenskip.verbs.metareason import iterate

    with pytest.raises(UserError, match="samples >= 2"):
        iterate(out=str(tmp_path / "g"), dataset="sample", limit=1, algorithm="grpo", samples=1, device="cpu")
