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
