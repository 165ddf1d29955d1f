"""`metareason iterate --algorithm grpo`: trl's GRPOTrainer on RaM's reward, two steps on the embedded model."""

import json
import math

import pytest

pytestmark = pytest.mark.slow


def test_grpo_two_steps(tmp_path):
    from tokenskip.metareason.iterate import iterate

    out = tmp_path / "grpo"
    res = iterate(
        out=str(out), dataset="sample", limit=2, algorithm="grpo", samples=2, train_batch_size=1, grpo_steps=2,
        max_new_tokens=12, device="cpu", learning_rate=1e-4,
    )  # fmt: skip
    rnd = out / "round-1"
    assert (rnd / "adapter" / "adapter_model.safetensors").exists()
    info = json.loads((rnd / "adapter" / "tokenskip_adapter.json").read_text())
    assert info["algorithm"] == "grpo" and info["preset"]["name"] == "default"
    rows = [json.loads(x) for x in (rnd / "grpo_rollouts.jsonl").read_text().splitlines()]
    assert len(rows) == 2 * 2  # 2 steps x 1 question x 2 completions
    for r in rows:
        assert r["reward"] == pytest.approx(r["utility"] - 0.1 * math.log1p(r["thought_tokens"]), abs=1e-5)
    assert res["rounds"][0]["algorithm"] == "grpo" and res["rounds"][0]["rollouts"] == 4
    assert not (rnd / "checkpoints").exists()


def test_grpo_needs_two_samples(tmp_path):
    from tokenskip.errors import UserError
    from tokenskip.metareason.iterate import iterate

    with pytest.raises(UserError, match="samples >= 2"):
        iterate(out=str(tmp_path / "g"), dataset="sample", limit=1, algorithm="grpo", samples=1, device="cpu")


def test_killed_grpo_run_resumes_from_its_last_step(tmp_path, monkeypatch):
    """Killed in step 3 of 3: the re-run resumes from checkpoint-2 (one more step, no step done twice) and
    ends with the adapter and rollouts of a run that was never killed."""
    from safetensors.torch import load_file

    from tokenskip.metareason import grpo
    from tokenskip.metareason.iterate import iterate

    kw = dict(dataset="sample", limit=2, algorithm="grpo", samples=2, train_batch_size=1, grpo_steps=3,
              max_new_tokens=12, device="cpu", learning_rate=1e-3, plot=False)  # fmt: skip
    real = grpo.make_reward_func
    calls: list[int] = []

    def counted(*a, kill_at=None, **k):
        fn = real(*a, **k)

        def reward(*ra, **rk):
            calls.append(1)
            out = fn(*ra, **rk)
            if len(calls) == kill_at:  # killed after step 3's rollouts were logged, before it trained
                with open(a[1], "a") as f:
                    f.write('{"id": "half-writ')
                raise KeyboardInterrupt
            return out

        return reward

    iterate(out=str(tmp_path / "whole"), **kw)
    monkeypatch.setattr(grpo, "make_reward_func", lambda *a, **k: counted(*a, kill_at=3, **k))
    out = tmp_path / "killed"
    with pytest.raises(KeyboardInterrupt):
        iterate(out=str(out), **kw)
    rnd = out / "round-1"
    assert [p.name for p in (rnd / "checkpoints").glob("checkpoint-*")] == ["checkpoint-2"]
    calls.clear()
    monkeypatch.setattr(grpo, "make_reward_func", lambda *a, **k: counted(*a, **k))
    iterate(out=str(out), **kw)
    assert len(calls) == 1  # only step 3 ran again
    rows = [json.loads(x) for x in (rnd / "grpo_rollouts.jsonl").read_text().splitlines()]
    whole = [
        json.loads(x)
        for x in (tmp_path / "whole" / "round-1" / "grpo_rollouts.jsonl").read_text().splitlines()
    ]
    assert [r["grpo_step"] for r in rows] == [1, 1, 2, 2, 3, 3] == [r["grpo_step"] for r in whole]
    assert [r["output"] for r in rows] == [r["output"] for r in whole]
    a = load_file(str(rnd / "adapter" / "adapter_model.safetensors"))
    b = load_file(str(tmp_path / "whole" / "round-1" / "adapter" / "adapter_model.safetensors"))
    assert a.keys() == b.keys() and all(torch_allclose(a[k], b[k]) for k in a)
    assert any(float(v.abs().max()) > 0 for k, v in a.items() if "lora_B" in k)  # it trained
    # a finished adapter is not trained again (the round's summary lost: killed before it was written)
    (rnd / "summary.json").unlink()
    calls.clear()
    res = iterate(out=str(out), **kw)
    assert not calls and res["rounds"][0]["rollouts"] == 6


def torch_allclose(x, y) -> bool:
    import torch

    return bool(torch.allclose(x, y, atol=1e-6))
