"""LoRA training on the embedded model (CPU): loss goes down, the adapter reloads with identical logits,
merge matches base + adapter, and a killed ``tokenskip train`` resumes from its last checkpoint."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_training import PROBLEMS, write_fixture

from tokenskip.data.prompts import format_prompt
from tokenskip.verbs.build_sft import build_sft

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def sft_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("sft")
    original, comp = write_fixture(root / "in")
    build_sft(str(original), str(comp), str(root / "sft"), model="smollm2-135m", seed=0)
    return root / "sft"


@pytest.fixture(scope="module")
def tiny_sft_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("sft2")
    original, comp = write_fixture(root / "in", ratios=(0.5,), problems=PROBLEMS[:2])
    build_sft(str(original), str(comp), str(root / "sft"), model="smollm2-135m", seed=1)
    return root / "sft"


def _logits(model, tok, text: str):
    import torch

    enc = tok(text, return_tensors="pt", add_special_tokens=False)
    with torch.inference_mode():
        return model(**enc).logits


def test_lora_run_lowers_loss_and_adapter_reloads_identically(tiny_sft_dir, tmp_path):
    import torch

    from tokenskip.inference.hf import load_adapter
    from tokenskip.models import load_model
    from tokenskip.verbs.merge import merge
    from tokenskip.verbs.train import train

    out = tmp_path / "adapter"
    result = train(
        str(tiny_sft_dir), str(out), max_steps=4, batch_size=2, grad_accum=1, learning_rate=3e-3, scheduler="constant",
        warmup=0, eval_size=0, logging_steps=1, save_steps=100, progress="none",
    )  # fmt: skip
    log = [json.loads(x) for x in (out / "train_log.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in log if "loss" in r]
    assert len(losses) == 4
    assert losses[-1] < 0.7 * losses[0], losses  # the same 2 examples every step: memorised
    assert result.global_step == 4

    # the saved adapter: safetensors + card + metadata
    assert (out / "adapter_model.safetensors").exists() and not (out / "checkpoints").exists()
    meta = json.loads((out / "tokenskip_adapter.json").read_text())
    assert meta["base_model"] == "smollm2-135m" and meta["preset"]["delimiter"] == "<|im_end|>"
    assert meta["ratios"] == [1.0, 0.5]
    card = (out / "README.md").read_text()
    assert "smollm2-135m" in card and "<|im_end|>" in card and "1.0, 0.5" in card

    base, tok = load_model("smollm2-135m")
    prompt = format_prompt(tok, "Tom has 3 apples and buys 2 more. How many apples?", 0.5) + "3 + 2"
    base_logits = _logits(base, tok, prompt)
    trained_logits = _logits(result.model, tok, prompt)
    reloaded = load_adapter(base, str(out))
    reloaded_logits = _logits(reloaded, tok, prompt)
    assert torch.equal(trained_logits, reloaded_logits)
    assert not torch.allclose(base_logits, reloaded_logits, atol=1e-3)

    merged_dir = tmp_path / "merged"
    merge(str(out), str(merged_dir))
    merged, _ = load_model(str(merged_dir))
    merged_logits = _logits(merged, tok, prompt)  # same function, other fp32 summation order
    assert (merged_logits - reloaded_logits).abs().max() < 1e-3 * reloaded_logits.abs().max()
    assert torch.equal(merged_logits.argmax(-1), reloaded_logits.argmax(-1))
    assert (merged_dir / "tokenskip_adapter.json").exists()


def test_completion_logits_trainer_gives_the_same_loss_and_gradients(tmp_path):
    """trl's SFTTrainer loss and ours (LM head from the first completion position on): same loss and grads,
    and the LM head really runs on fewer positions."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from trl import SFTConfig, SFTTrainer

    from tokenskip.models import load_model
    from tokenskip.training.train import completion_logits_trainer, completion_start

    base, tok = load_model("smollm2-135m")
    rows = [
        ("Tom has 3 apples and buys 2 more. How many apples?", 0.5, "3 + 2 = 5\n\nThe final answer is: 5"),
        ("A pen costs 4 dollars. What do 6 pens cost in dollars, all together?", None, "6 x 4 = 24 dollars."),
    ]
    ds = Dataset.from_list([{"prompt": format_prompt(tok, q, r), "completion": c} for q, r, c in rows])
    args = SFTConfig(output_dir=str(tmp_path), use_cpu=True, report_to="none", completion_only_loss=True,
                     max_length=256, gradient_checkpointing=False)  # fmt: skip
    trainer = completion_logits_trainer(SFTTrainer)(
        model=base, args=args, train_dataset=ds, processing_class=tok,
        peft_config=LoraConfig(r=4, target_modules="all-linear", task_type="CAUSAL_LM"),
    )  # fmt: skip
    model = trainer.model
    for name, p in model.named_parameters():  # non-zero LoRA B so the adapter changes the logits
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.02)
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(2)])
    n = int((batch["labels"][:, 1:] != -100).sum())
    first = completion_start(batch["labels"])
    assert first > 10  # both prompts are long: most positions need no LM head
    widths = []
    hook = model.get_output_embeddings().register_forward_hook(lambda m, i, o: widths.append(i[0].shape[1]))
    results = []
    for compute in (SFTTrainer.compute_loss, type(trainer).compute_loss):
        model.zero_grad()
        loss = compute(trainer, model, dict(batch), num_items_in_batch=n)
        loss.backward()
        grads = [p.grad.clone() for p in model.parameters() if p.requires_grad]
        results.append((loss.detach(), grads))
    hook.remove()
    (full, g_full), (sliced, g_sliced) = results
    assert torch.allclose(full, sliced, rtol=1e-5), (full, sliced)
    # trl's fused head sums in chunks: the same gradients up to fp32 rounding
    assert all((a - b).abs().max() <= 2e-3 * a.abs().max() for a, b in zip(g_full, g_sliced, strict=True))
    assert full.item() > 0
    assert widths[-1] == batch["input_ids"].shape[1] - first  # ours: completion positions only


def test_killed_train_resumes_from_last_checkpoint(sft_dir, tmp_path):
    out = tmp_path / "run"
    cmd = [
        sys.executable, "-m", "tokenskip.cli", "train", "--data", str(sft_dir), "--out", str(out),
        "--max_steps", "4", "--save_steps", "2", "--batch_size", "1", "--grad_accum", "1", "--eval_size", "0",
        "--logging_steps", "1", "--learning_rate", "1e-3", "--progress", "none", "--keep_checkpoints", "true",
        "--save_total_limit", "5", "--group_by_length", "true",
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    ckpt_state = out / "checkpoints" / "checkpoint-2" / "trainer_state.json"
    deadline = time.time() + 240
    while not ckpt_state.exists():
        assert proc.poll() is None, proc.stdout.read()
        assert time.time() < deadline, "no checkpoint within 240 s"
        time.sleep(0.05)
    time.sleep(0.2)  # let the Trainer finish writing the checkpoint's last file
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (out / "tokenskip_adapter.json").exists(), "run finished before it could be killed"
    done = json.loads(ckpt_state.read_text())["global_step"]
    before = [json.loads(x) for x in (out / "train_log.jsonl").read_text().splitlines() if x.endswith("}")]
    before = [r for r in before if r["step"] <= done]

    rerun = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert "resuming from" in rerun.stdout and "checkpoint-" in rerun.stdout
    log = [json.loads(x) for x in (out / "train_log.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in log if "loss" in r]
    assert steps == [1, 2, 3, 4]  # nothing lost, nothing repeated
    assert log[: len(before)] == before  # the steps before the kill were not trained again
    state = json.loads((out / "checkpoints" / "checkpoint-4" / "trainer_state.json").read_text())
    assert state["global_step"] == 4
    assert (out / "tokenskip_adapter.json").exists()


def test_a_finished_trainings_memory_goes_back_to_the_system(tiny_sft_dir, tmp_path):
    # a trainer and its model hold each other: dropping the result frees nothing until the cycles are collected,
    # and freed heap stays resident until malloc_trim; a vLLM engine started next (its own process) was
    # OOM-killed beside a 0.5B training's ~18 GB that way. release_memory() gives it back.
    import sys

    if not sys.platform.startswith("linux"):
        pytest.skip("resident memory read from /proc; malloc_trim is glibc's")
    from tokenskip.models import release_memory
    from tokenskip.verbs.train import train

    def rss_mb() -> float:
        return int(Path("/proc/self/status").read_text().split("VmRSS:")[1].split()[0]) / 1024

    release_memory()
    before = rss_mb()
    result = train(str(tiny_sft_dir), str(tmp_path / "adapter"), max_steps=2, batch_size=2, grad_accum=1,
                   eval_size=0, save_steps=100, progress="none")  # fmt: skip
    held = rss_mb()
    assert held - before > 300, (before, held)  # the model and the trainer's state are resident
    del result
    release_memory()
    after = rss_mb()
    assert after - before < 0.35 * (held - before), (before, held, after)
