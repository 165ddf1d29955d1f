"""``tokenskip infer`` end to end on the embedded model (hf backend), with and without a LoRA adapter."""

from __future__ import annotations

import json

import pytest

from tokenskip.cli import main

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def adapter(tmp_path_factory):
    import torch
    from peft import LoraConfig, get_peft_model

    from tokenskip.models import load_model

    torch.manual_seed(0)
    model, _ = load_model("smollm2-135m")
    cfg = LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    folder = tmp_path_factory.mktemp("lora")
    get_peft_model(model, cfg).save_pretrained(str(folder))
    return str(folder)


def _rows(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_infer_file_ratios_adapter_and_resume(tmp_path, adapter, capsys):
    src = tmp_path / "qs.jsonl"
    src.write_text(
        '{"id": "a", "question": "What is 2 + 3?", "answer": "5"}\n{"id": "b", "question": "What is 4 + 4?"}\n'
    )
    common = ["infer", "--input", str(src), "--max_new_tokens", "6", "--backend", "hf"]
    out_full = tmp_path / "full.jsonl"
    assert main([*common, "--ratio", "1.0", "--out", str(out_full)]) == 0
    out_half = tmp_path / "half.jsonl"
    assert main([*common, "--ratio", "0.5", "--adapter", adapter, "--out", str(out_half)]) == 0
    full, half = _rows(out_full), _rows(out_half)
    assert [r["id"] for r in full] == ["a", "b"] == [r["id"] for r in half]
    assert "0.5" not in full[0]["prompt"] and "<|im_end|>0.5<|im_end|>" in half[0]["prompt"]
    assert half[0]["adapter"] == adapter and half[0]["ratio"] == 0.5 and full[0]["adapter"] is None
    assert isinstance(full[0]["correct"], bool) and full[1]["correct"] is None
    assert all(1 <= r["output_tokens"] <= 6 for r in full + half)
    # re-running resumes: nothing new is generated or duplicated
    assert main([*common, "--ratio", "0.5", "--adapter", adapter, "--out", str(out_half)]) == 0
    assert len(_rows(out_half)) == 2
    assert "0 generated, 2 already done" in capsys.readouterr().out
    # a different ratio into the same file is refused
    capsys.readouterr()
    assert main([*common, "--ratio", "0.7", "--adapter", adapter, "--out", str(out_half)]) == 2
    assert "ratio: 0.5 -> 0.7" in capsys.readouterr().err


def test_infer_reads_the_preset_recorded_with_the_adapter(tmp_path, adapter, capsys):
    """An adapter trained with a custom delimiter is prompted with it, without --preset flags."""
    import shutil

    custom = tmp_path / "custom"
    shutil.copytree(adapter, custom)
    preset = {"name": "default", "delimiter": "<|sep|>", "system": None, "answer_template": "\n\nA: {answer}",
              "instruction": "Think."}  # fmt: skip
    (custom / "tokenskip_adapter.json").write_text(
        json.dumps({"base_model": "smollm2-135m", "preset": preset})
    )
    src = tmp_path / "q.txt"
    src.write_text("What is 2 + 3?\n")
    out = tmp_path / "out.jsonl"
    common = [
        "infer",
        "--input",
        str(src),
        "--adapter",
        str(custom),
        "--ratio",
        "0.5",
        "--max_new_tokens",
        "2",
    ]
    assert main([*common, "--out", str(out)]) == 0
    prompt = _rows(out)[0]["prompt"]
    assert "Think.\nWhat is 2 + 3?<|sep|>0.5<|sep|>" in prompt and "<|im_end|>0.5" not in prompt
    # asking for another preset is allowed, with a warning that it differs from training
    capsys.readouterr()
    assert main([*common, "--preset", "tokenskip", "--out", str(tmp_path / "other.jsonl")]) == 0
    assert "differs from the preset the model was trained with" in capsys.readouterr().out
    assert "<|eot_id|>0.5<|eot_id|>" in _rows(tmp_path / "other.jsonl")[0]["prompt"]
    (custom / "tokenskip_adapter.json").write_text("{not json")
    assert main([*common, "--out", str(tmp_path / "bad.jsonl")]) == 2
    assert "unreadable preset" in capsys.readouterr().err


def test_infer_single_question_prints_answer(capsys):
    assert main(["infer", "--question", "What is 2 + 3?", "--ratio", "0.5", "--max_new_tokens", "5"]) == 0
    assert capsys.readouterr().out.strip()


def test_infer_bad_adapter_is_user_error(tmp_path, capsys):
    assert main(["infer", "--question", "x", "--adapter", str(tmp_path), "--max_new_tokens", "2"]) == 2
    assert "adapter_config.json" in capsys.readouterr().err
