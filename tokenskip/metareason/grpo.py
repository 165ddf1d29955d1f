"""``metareason iterate --algorithm grpo``: RaM's reward as an online RL objective (trl ``GRPOTrainer``).

Each round trains the LoRA adapter for ``--grpo_steps`` steps: every step samples ``--samples`` completions
for each of ``--train_batch_size`` questions and scores each completion with the same reward as expert
iteration (``log((p(y*|x,z)+ε)/(p(y*|x,∅)+ε)) − c·log(1+|z|)``), the likelihoods taken from the policy being
trained (in eval mode, without gradients). Round r continues the adapter of round r−1. Every scored
completion is appended to ``round-r/grpo_rollouts.jsonl`` with ``grpo_step``, the step it trains; the trainer
checkpoints into ``round-r/checkpoints`` after every step, and a re-run resumes from the last complete one
(the rollouts logged after it are dropped: those steps run again) or, when the adapter is finished, does
not train again. The adapter (with the prompt preset recorded, so ``ram`` serves it with the training
prompt) goes to ``round-r/adapter``.
"""

from __future__ import annotations

import json
import shutil
from typing import Any

from tokenskip.data.adapters import ADAPTER_INFO
from tokenskip.data.jsonl import read_jsonl, write_json_atomic, write_jsonl_atomic
from tokenskip.data.prompts import format_prompt, split_answer
from tokenskip.grading import grade
from tokenskip.metareason.reward import RewardConfig, summarize
from tokenskip.metareason.score import Scorer


def make_reward_func(scorer: Scorer, log_path: Any = None, step: Any = None) -> Any:
    """A trl reward function (``prompts, completions, answer, task, **kwargs -> list[float]``) on ``scorer``;
    each logged row records ``grpo_step``, the 1-based optimizer step it trains (``step()``)."""
    counter = [0]

    def ram_reward(
        prompts: list[str], completions: list[str], answer: list[str], **kwargs: Any
    ) -> list[float]:
        tasks = kwargs.get("task") or ["gsm8k"] * len(prompts)
        rows = []
        for p, c, a, t in zip(prompts, completions, answer, tasks, strict=True):
            counter[0] += 1
            rows.append({"id": f"grpo-{counter[0]}", "prompt": p, "answer": a, "output": c,
                         "cot": split_answer(c, scorer.preset)[0], "correct": grade(c, a, t)[1]})  # fmt: skip
        model = scorer.model
        was_training = model.training
        model.eval()
        try:
            scored = scorer.score(rows)
        finally:
            model.train(was_training)
        if log_path is not None:
            tag = {"source": "sample", **({"grpo_step": step()} if step is not None else {})}
            with open(log_path, "a", encoding="utf-8") as f:
                for s in scored:
                    f.write(json.dumps({**s, **tag}, ensure_ascii=False) + "\n")
        return [float(s["reward"]) for s in scored]

    return ram_reward


def grpo_round(
    rnd: Any, records: list, model: Any, sampling: Any, lora: Any, cfg: RewardConfig, preset: Any, samples: int,
    learning_rate: float, steps: int, cutoff: int, questions_per_step: int,
) -> dict[str, Any]:  # fmt: skip
    """One GRPO round into ``rnd`` (see the module doc); returns the round's summary."""
    if samples < 2:
        from tokenskip.errors import UserError

        raise UserError("--algorithm grpo needs --samples >= 2 (advantages are relative to the group)")
    log_path = rnd.path("grpo_rollouts.jsonl")
    if not (rnd.new_adapter / ADAPTER_INFO).exists():  # written last: a finished adapter is not trained again
        _train(rnd, records, model, sampling, lora, cfg, preset, samples, learning_rate, steps,
               questions_per_step)  # fmt: skip
    scored = [r for _, r in read_jsonl(log_path)] if log_path.exists() else []
    return {"round": rnd.r, "generated_with": rnd.adapter, "algorithm": "grpo", "steps": steps,
            **summarize(scored)}  # fmt: skip


def _train(
    rnd: Any, records: list, model: Any, sampling: Any, lora: Any, cfg: RewardConfig, preset: Any, samples: int,
    learning_rate: float, steps: int, questions_per_step: int,
) -> None:  # fmt: skip
    """GRPO on the round's questions, checkpointed every step; resumes from the last complete checkpoint."""
    import datasets
    import torch
    from peft import PeftModel, get_peft_model
    from transformers import AutoModelForCausalLM, set_seed
    from trl import GRPOConfig, GRPOTrainer

    from tokenskip.models import load_tokenizer, resolve_device, resolve_dtype, resolve_model
    from tokenskip.training.runs import last_complete_checkpoint, lora_config

    dev = resolve_device(model.device)
    dtype = resolve_dtype(model.dtype, dev)
    tok = load_tokenizer(model.model)
    base = AutoModelForCausalLM.from_pretrained(resolve_model(model.model), dtype=dtype)
    set_seed(sampling.seed + rnd.r)  # the new adapter's initial weights: the same in every run
    if rnd.adapter:
        policy = PeftModel.from_pretrained(base, rnd.adapter, is_trainable=True)
    else:
        policy = get_peft_model(base, lora_config(lora.lora_rank, lora.lora_alpha, lora.lora_dropout,
                                                  lora.target_modules))  # fmt: skip
    rows = [{"prompt": format_prompt(tok, r.question, None, preset), "answer": r.answer, "task": r.task}
            for r in records]  # fmt: skip
    log_path, ckpt_dir = rnd.path("grpo_rollouts.jsonl"), rnd.path("checkpoints")
    resume = last_complete_checkpoint(ckpt_dir)
    _keep_logged_steps(log_path, int(resume.name.split("-")[-1]) if resume else 0)
    args = GRPOConfig(
        output_dir=str(ckpt_dir), num_generations=samples, per_device_train_batch_size=samples * questions_per_step,
        max_completion_length=sampling.max_new_tokens, temperature=sampling.temperature or 1.0,
        top_p=sampling.top_p, learning_rate=learning_rate, max_steps=steps, logging_steps=1, save_steps=1,
        save_total_limit=1, report_to="none", beta=0.0, seed=sampling.seed + rnd.r, use_cpu=dev == "cpu",
        bf16=dtype == torch.bfloat16, disable_tqdm=True, log_completions=False,
    )  # fmt: skip
    scorer = Scorer(policy, tok, preset, cfg, cache_direct=False)  # the policy changes every step
    trainers: list = []  # the reward function tags each logged rollout with the step it trains
    reward = make_reward_func(scorer, log_path, step=lambda: trainers[0].state.global_step + 1)
    trainer = GRPOTrainer(
        model=policy, reward_funcs=[reward], args=args, train_dataset=datasets.Dataset.from_list(rows),
        processing_class=tok,
    )  # fmt: skip
    trainers.append(trainer)
    scorer.model = trainer.model
    trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    out = rnd.new_adapter
    tmp = out.with_name("adapter.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    trainer.model.save_pretrained(str(tmp), safe_serialization=True)
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    write_json_atomic(out / ADAPTER_INFO, {"base_model": model.model, "method": "ram", "algorithm": "grpo",
                                          "preset": preset.to_dict(), "ratios": [1.0], "steps": steps,
                                          "cost": cfg.cost, "cost_kind": cfg.cost_kind})  # fmt: skip
    shutil.rmtree(ckpt_dir, ignore_errors=True)


def _keep_logged_steps(log_path: Any, done: int) -> None:
    """Resuming after step ``done`` (0: from the start): drop the logged rollouts of later steps (they are
    generated again) and a half-written last line."""
    if not log_path.exists():
        return
    rows = [r for _, r in read_jsonl(log_path, on_error="skip") if done and r.get("grpo_step", 0) <= done]
    write_jsonl_atomic(log_path, rows)
