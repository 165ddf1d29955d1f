"""`tokenskip train --save_dtype`: the adapter written in another dtype than it trained in (the released
qwen adapter is bf16 on disk, half the fp32 file), loadable onto an fp32 base with the rounded weights."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
peft = pytest.importorskip("peft")

from safetensors import safe_open  # noqa: E402

from tokenskip.args import LoRAArgs, OptimArgs, RunArgs  # noqa: E402
from tokenskip.errors import UserError  # noqa: E402
from tokenskip.training.lora_run import save_adapter, settings_of  # noqa: E402
from tokenskip.training.runs import lora_config  # noqa: E402


def tiny_model():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)  # fmt: skip
    return LlamaForCausalLM(cfg)


def lora_weights(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items() if "lora_" in k}


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_saved_in_another_dtype_and_loaded_onto_an_fp32_base(tmp_path, dtype):
    base = tiny_model()
    model = peft.get_peft_model(base, lora_config(8, 16, 0.0, "all-linear"))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:  # peft starts B at zero: give the adapter weights to round
                p.normal_(std=0.02)
    trained = lora_weights(model)
    fp32_dir, cast_dir = tmp_path / "fp32", tmp_path / "cast"
    for d in (fp32_dir, cast_dir):
        d.mkdir()
    save_adapter(model, fp32_dir, "info.json", {"k": 1}, None)
    save_adapter(model, cast_dir, "info.json", {"k": 1}, None, dtype)
    with safe_open(str(cast_dir / "adapter_model.safetensors"), framework="pt") as f:
        assert {f.get_tensor(k).dtype for k in f.keys()} == {getattr(torch, dtype)}  # noqa: SIM118
    size32 = (fp32_dir / "adapter_model.safetensors").stat().st_size
    size16 = (cast_dir / "adapter_model.safetensors").stat().st_size
    assert size16 < 0.55 * size32
    assert (cast_dir / "info.json").exists() and (cast_dir / "adapter_config.json").exists()

    loaded = peft.PeftModel.from_pretrained(tiny_model(), str(cast_dir))
    got = lora_weights(loaded)
    assert got.keys() == trained.keys()
    for k, v in trained.items():
        assert got[k].dtype == torch.float32  # onto the fp32 base: the layer's dtype
        assert torch.equal(
            got[k], v.to(getattr(torch, dtype)).to(torch.float32)
        )  # rounded once, nothing else
    ids = torch.tensor([[1, 5, 9, 3]])
    with torch.no_grad():
        a, b = model(ids).logits, loaded(ids).logits
    assert torch.allclose(a, b, atol=1e-3) and not torch.equal(a, b)


def test_an_unknown_save_dtype_is_one_line():
    with pytest.raises(UserError, match="unknown --save_dtype 'int8'"):
        settings_of(LoRAArgs(), OptimArgs(), RunArgs(save_dtype="int8"))
    assert settings_of(LoRAArgs(), OptimArgs(), RunArgs(save_dtype="bf16"))["save_dtype"] == "bfloat16"
    assert "save_dtype" not in settings_of(LoRAArgs(), OptimArgs(), RunArgs())  # older runs keep resuming
