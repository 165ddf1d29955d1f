"""``tokenskip train``: LoRA fine-tuning on a build-sft mixture, loss on the completion only.

A thin layer over ``transformers.Trainer`` + ``peft``:

1. every row becomes ``prompt = format_prompt(tokenizer, question, γ, preset)`` (the chat template, exactly
   what inference sends) and ``completion = output + EOS``; prompt and completion are tokenized separately
   (as at inference, where generation starts right after the prompt's tokens) and the prompt's labels are
   -100, so the loss covers the completion only;
2. LoRA (TokenSkip's defaults: rank 8, alpha 16, every linear layer, lr 5e-5, 3 epochs, cosine, warmup 0.1,
   cutoff 2048) in bf16 on GPU and fp32 on CPU;
3. checkpoints every ``--save_steps`` in ``OUT/checkpoints``; re-running the same command resumes from the
   last complete checkpoint; losses go to ``OUT/train_log.jsonl``;
4. the adapter (``adapter_model.safetensors``), a model card (``README.md``) and ``tokenskip_adapter.json``
   (base model, preset, delimiter, ratios, data) are written into ``OUT`` last, so a folder holding
   ``tokenskip_adapter.json`` is a finished run.

Several GPUs: ``accelerate launch -m tokenskip.cli train ...`` or ``torchrun --nproc-per-node N -m
tokenskip.cli train ...`` (data parallel; ``--batch_size`` is per device).
"""

from __future__ import annotations

import json
import os
import random
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from tokenskip.data.adapters import ADAPTER_INFO
from tokenskip.data.jsonl import read_jsonl, write_json_atomic
from tokenskip.data.prompts import PromptPreset, format_prompt, format_ratio, user_message
from tokenskip.errors import UserError
from tokenskip.models import DEFAULT_MODEL, sha256_file
from tokenskip.training.runs import (
    CHECKPOINTS,
    LOG_FILE,
    jsonl_log_callback,
    last_complete_checkpoint,
    last_logged,
    lora_config,
    prepare_out,
)
from tokenskip.training.sft import SFT_FILE, preset_from_info, read_sft_info, user_text

IGNORE_INDEX = -100

# settings that change the result: a resumed run must match the interrupted one on all of these
_RUN_KEYS = (
    "data_sha256", "model", "lora_rank", "lora_alpha", "lora_dropout", "target_modules", "learning_rate",
    "epochs", "max_steps", "batch_size", "grad_accum", "scheduler", "warmup", "weight_decay", "cutoff",
    "eval_size", "seed", "group_by_length",
)  # fmt: skip


@dataclass
class TrainResult:
    """What ``train`` returns: the output folder, the final step and losses, and the trained peft model."""

    out: str
    global_step: int
    train_loss: float | None
    eval_loss: float | None
    resumed_from: str | None
    model: Any = None


# ---------------------------------------------------------------------------------------------------------
# Pure pieces: tokenization, split, collation, checkpoint discovery


def tokenize_example(
    tokenizer: Any, prompt: str, completion: str, cutoff: int
) -> dict[str, list[int]] | None:
    """Token ids and labels for one example; the prompt is masked with -100 and EOS ends the completion.

    The completion is cut so the whole sequence fits ``cutoff`` tokens; returns ``None`` when the prompt
    alone does not fit.
    """
    p = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    c = tokenizer(completion, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    if len(p) >= cutoff:
        return None
    c = c[: cutoff - len(p)]
    return {"input_ids": p + c, "labels": [IGNORE_INDEX] * len(p) + c}


def split_eval(n: int, eval_size: float, seed: int) -> tuple[list[int], list[int]]:
    """Seeded split of ``range(n)`` into (train, eval); ``eval_size`` < 1 is a fraction, >= 1 a count."""
    if eval_size < 0:
        raise UserError(f"--eval_size must be >= 0, got {eval_size}")
    k = int(eval_size) if eval_size >= 1 else int(round(n * eval_size))
    if k >= n:
        raise UserError(f"--eval_size {eval_size} leaves no training examples (of {n})")
    order = list(range(n))
    random.Random(seed).shuffle(order)
    return sorted(order[k:]), sorted(order[:k])


def collate(features: list[dict[str, list[int]]], pad_token_id: int) -> dict[str, Any]:
    """Right-pad a batch: input_ids with the pad token, labels with -100, attention_mask 0 on padding."""
    import torch

    width = max(len(f["input_ids"]) for f in features)
    ids, labels, mask = [], [], []
    for f in features:
        pad = width - len(f["input_ids"])
        ids.append(f["input_ids"] + [pad_token_id] * pad)
        labels.append(f["labels"] + [IGNORE_INDEX] * pad)
        mask.append([1] * len(f["input_ids"]) + [0] * pad)
    return {
        "input_ids": torch.tensor(ids),
        "labels": torch.tensor(labels),
        "attention_mask": torch.tensor(mask),
    }


def completion_start(labels: Any) -> int:
    """First position whose logits the loss needs: one before the earliest target token in the batch.

    Prompt positions predict prompt tokens (label -100) and add nothing to the loss, so the LM head (a
    vocab-sized matmul per position) only has to run from here on. 0 when a row has no target at all.
    """
    import torch

    targets = labels != IGNORE_INDEX
    has = targets.any(dim=1)
    if not bool(has.all()):
        return 0
    first = torch.argmax(targets.int(), dim=1)  # index of the first target per row
    return max(int(first.min()) - 1, 0)


def _accepts_logits_to_keep(model: Any) -> bool:
    import inspect

    return "logits_to_keep" in inspect.signature(model.forward).parameters


def _completion_logits_trainer(trainer_cls: type) -> type:
    """``Trainer`` that runs the LM head only from :func:`completion_start` on: the same loss, less work.

    The model's own loss shifts the labels by one, so slicing ``labels`` and the kept positions at the same
    index keeps every (logit, next token) pair; ``num_items_in_batch`` counts the same target tokens.
    """
    import torch

    class CompletionLogitsTrainer(trainer_cls):  # type: ignore[misc, valid-type]
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            labels = inputs.get("labels")
            if labels is not None and (first := completion_start(labels)) > 0:
                keep = torch.arange(first, labels.shape[1], device=labels.device)
                inputs = {**inputs, "labels": labels[:, first:], "logits_to_keep": keep}
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)

    return CompletionLogitsTrainer


def _sampling_args(args_cls: type, group_by_length: bool) -> dict[str, Any]:
    """``group_by_length`` across transformers versions (a strategy string in 5.x, a flag before)."""
    if not group_by_length:
        return {}
    fields = getattr(args_cls, "__dataclass_fields__", {})
    if "train_sampling_strategy" in fields:
        return {"train_sampling_strategy": "group_by_length"}
    return {"group_by_length": True}


def _data_rows(data_dir: Path, info: dict[str, Any], preset: PromptPreset) -> list[dict[str, Any]]:
    rows = []
    for lineno, row in read_jsonl(data_dir / SFT_FILE):
        try:
            ratio = float(row["ratio"])
            expected = user_message(row["question"], ratio, preset, preset.delimiter)
            if user_text(row) != expected:
                raise ValueError("instruction/input do not match the folder's preset and delimiter")
            if not isinstance(row["output"], str) or not row["output"].strip():
                raise ValueError("empty output")
        except (KeyError, TypeError, ValueError) as e:
            raise UserError(f"{data_dir / SFT_FILE}:{lineno}: bad training row ({e})") from None
        rows.append(row)
    if not rows:
        raise UserError(f"{data_dir / SFT_FILE}: no training rows")
    return rows


class _Rows:
    """A list of tokenized examples as a torch-style Dataset."""

    def __init__(self, items: list[dict[str, list[int]]]) -> None:
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict[str, list[int]]:
        return self.items[i]


def model_card(meta: dict[str, Any]) -> str:
    """README.md of the adapter: base model, ratios, delimiter, data and the numbers of the run."""
    ratios = ", ".join(format_ratio(r) for r in meta["ratios"])
    h = meta["hyperparameters"]
    lines = [
        "---",
        f"base_model: {json.dumps(meta['base_model'])}",
        "library_name: peft",
        "tags: [tokenskip, lora, chain-of-thought, compression]",
        "---",
        "",
        "# TokenSkip LoRA adapter",
        "",
        "Emits chain-of-thought compressed to a requested ratio γ (TokenSkip, arXiv 2502.12067).",
        "",
        f"- **Base model**: `{meta['base_model']}`",
        f"- **Ratios trained**: {ratios} (γ = 1.0 is the uncompressed CoT)",
        f"- **Prompt preset**: `{meta['preset']['name']}`; ratio delimiter `{meta['preset']['delimiter']}` "
        "(the prompt ends with `<delim>γ<delim>` for γ < 1)",
        f"- **System prompt**: {json.dumps(meta['preset']['system'])}",
        f"- **Instruction**: {json.dumps(meta['preset']['instruction'])}",
        f"- **Data**: `{meta['data']['path']}` ({meta['data']['train_examples']} train / "
        f"{meta['data']['eval_examples']} eval examples; original `{meta['data'].get('original')}`; "
        f"compressed `{meta['data'].get('compressed')}`; sha256 of sft.jsonl `{meta['data']['sha256'][:16]}…`)",
        f"- **LoRA**: rank {h['lora_rank']}, alpha {h['lora_alpha']}, dropout {h['lora_dropout']}, "
        f"targets `{h['target_modules']}`; {meta['trainable_parameters']:,} trainable parameters "
        f"({meta['trainable_percent']:.3f}%)",
        f"- **Training**: lr {h['learning_rate']}, "
        + (f"{h['max_steps']} steps" if h["max_steps"] > 0 else f"{h['epochs']} epochs")
        + f", {h['scheduler']} schedule, warmup "
        f"{h['warmup']}, batch {h['batch_size']} x accumulation {h['grad_accum']} x {meta['world_size']} "
        f"device(s), cutoff {h['cutoff']}, seed {h['seed']}, {meta['dtype']}",
        f"- **Result**: {meta['global_step']} steps, final train loss {meta['train_loss']}, "
        f"eval loss {meta['eval_loss']}",
        "",
        "## Use",
        "",
        "```bash",
        f"tokenskip generate --model {meta['base_model']} --adapter PATH_TO_THIS_FOLDER "
        f"--preset {meta['preset']['name']} --ratio 0.5 ...",
        "```",
        "",
        "In Python: `format_prompt(tokenizer, question, ratio, preset)` from `tokenskip.data.prompts` writes the "
        "exact training prompt (`tokenskip_adapter.json` holds the preset fields).",
        "",
    ]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------------
# The workflow


def train(
    data: str,
    out: str,
    model: str = DEFAULT_MODEL,
    lora_rank: int = 8,
    lora_alpha: int = 16,
    lora_dropout: float = 0.0,
    target_modules: str = "all-linear",
    learning_rate: float = 5e-5,
    epochs: float = 3.0,
    max_steps: int = -1,
    batch_size: int = 4,
    grad_accum: int = 4,
    scheduler: str = "cosine",
    warmup: float = 0.1,
    weight_decay: float = 0.0,
    cutoff: int = 2048,
    eval_size: float = 0.05,
    save_steps: int = 100,
    save_total_limit: int = 2,
    logging_steps: int = 10,
    seed: int = 42,
    dtype: str = "auto",
    device: str = "auto",
    gradient_checkpointing: bool = False,
    group_by_length: bool = False,
    resume: bool = True,
    overwrite: bool = False,
    keep_checkpoints: bool = False,
    trust_remote_code: bool = False,
    progress: Literal["bar", "none"] = "bar",
) -> TrainResult:
    """LoRA fine-tuning on a build-sft folder (loss on the completion only), resumable.

    Writes into OUT: ``adapter_model.safetensors`` + ``adapter_config.json`` (peft), ``README.md`` (model
    card), ``tokenskip_adapter.json`` (base model, preset, delimiter, ratios, data, losses),
    ``train_log.jsonl`` (one line per log step: step, epoch, loss, learning_rate, grad_norm, eval_loss) and,
    while running, ``checkpoints/checkpoint-N``. Re-running after an interruption resumes from the last
    complete checkpoint.

    Args:
        data: output folder of ``tokenskip build-sft``.
        out: output folder for the adapter.
        model: base model (alias, Hugging Face id or local folder).
        lora_rank: LoRA rank r.
        lora_alpha: LoRA alpha.
        lora_dropout: dropout on the LoRA input.
        target_modules: modules to adapt: ``all-linear`` or a comma-separated list (``q_proj,v_proj``).
        learning_rate: peak learning rate.
        epochs: training epochs.
        max_steps: stop after this many optimizer steps (overrides --epochs when > 0).
        batch_size: examples per device per forward pass.
        grad_accum: gradient accumulation steps (effective batch = batch_size x grad_accum x devices).
        scheduler: learning-rate schedule (``cosine``, ``linear``, ``constant``, ``constant_with_warmup``).
        warmup: warmup as a fraction of the steps (< 1) or a number of steps (>= 1).
        weight_decay: AdamW weight decay.
        cutoff: maximum tokens per example (prompt + completion); longer completions are cut.
        eval_size: held-out examples for the eval loss: a fraction (< 1) or a count (>= 1); 0 disables.
        save_steps: write a checkpoint every N optimizer steps.
        save_total_limit: keep at most N checkpoints.
        logging_steps: log the loss every N steps.
        seed: seed for LoRA init, data order and the eval split.
        dtype: ``auto`` (bf16 on GPU, fp32 on CPU), ``float32``, ``bfloat16`` or ``float16``.
        device: ``auto``, ``cpu`` or ``cuda``.
        gradient_checkpointing: recompute activations in backward (less memory, slower).
        group_by_length: batch examples of similar length together (less padding, faster; the order is
            still shuffled, in groups).
        resume: resume from the last complete checkpoint in OUT/checkpoints if there is one.
        overwrite: delete a previous run (adapter, checkpoints, log) in OUT and start over.
        keep_checkpoints: keep OUT/checkpoints after a successful run (deleted by default).
        trust_remote_code: allow model code from the hub (off by default).
        progress: ``bar`` shows a progress bar; ``none`` prints log lines only.
    """
    data_dir = Path(data)
    info = read_sft_info(data_dir)
    data_dir = data_dir.parent if data_dir.is_file() else data_dir
    preset = preset_from_info(info)
    _check_args(
        lora_rank, learning_rate, epochs, max_steps, batch_size, grad_accum, cutoff, warmup, save_steps
    )
    out_dir = Path(out)
    settings = {
        "data": str(data_dir), "data_sha256": sha256_file(data_dir / SFT_FILE), "model": model,
        "lora_rank": lora_rank, "lora_alpha": lora_alpha, "lora_dropout": lora_dropout,
        "target_modules": target_modules, "learning_rate": learning_rate, "epochs": epochs,
        "max_steps": max_steps, "batch_size": batch_size, "grad_accum": grad_accum, "scheduler": scheduler,
        "warmup": warmup, "weight_decay": weight_decay, "cutoff": cutoff, "eval_size": eval_size, "seed": seed,
        "dtype": dtype, "save_steps": save_steps, "group_by_length": group_by_length,
    }  # fmt: skip
    if int(os.environ.get("RANK", "0")) == 0:
        resume_from = prepare_out(
            out_dir,
            settings,
            resume=resume,
            overwrite=overwrite,
            adapter_info=ADAPTER_INFO,
            compare=_RUN_KEYS,
        )
    else:  # other data-parallel ranks only read what rank 0 prepares
        resume_from = last_complete_checkpoint(out_dir / CHECKPOINTS) if resume and not overwrite else None

    import torch
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM, SchedulerType, Trainer, TrainingArguments, set_seed

    from tokenskip.models import load_tokenizer, resolve_device, resolve_dtype, resolve_model

    try:
        SchedulerType(scheduler)
    except ValueError:
        known = ", ".join(t.value for t in SchedulerType)
        raise UserError(f"unknown --scheduler '{scheduler}' (one of: {known})") from None
    dev = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, dev)
    lora = lora_config(lora_rank, lora_alpha, lora_dropout, target_modules)
    tok = load_tokenizer(model, trust_remote_code=trust_remote_code)
    if info.get("delimiter_source") == "eos" and tok.eos_token != preset.delimiter:
        raise UserError(
            f"--data was built with delimiter {preset.delimiter!r} (EOS of '{info.get('model')}') but "
            f"--model {model} has EOS {tok.eos_token!r}: rebuild with `build-sft --model {model}` "
            "or pass --delimiter explicitly"
        )

    if tok.eos_token_id is None:
        raise UserError(f"--model {model}: the tokenizer has no EOS token to end completions with")

    # 1. data: the exact inference prompt, completion = output + EOS, prompt masked
    rows = _data_rows(data_dir, info, preset)
    train_idx, eval_idx = split_eval(len(rows), eval_size, seed)
    examples, dropped = [], 0
    for row in rows:
        ratio = float(row["ratio"])
        prompt = format_prompt(tok, row["question"], ratio if ratio < 1.0 else None, preset)
        ex = tokenize_example(tok, prompt, row["output"], cutoff)
        dropped += ex is None
        examples.append(ex)
    train_set = _Rows([examples[i] for i in train_idx if examples[i] is not None])
    eval_set = _Rows([examples[i] for i in eval_idx if examples[i] is not None])
    if dropped:
        print(f"tokenskip: skipped {dropped} examples whose prompt alone exceeds --cutoff {cutoff}")
    if not len(train_set):
        raise UserError(f"no training examples fit --cutoff {cutoff}")
    cut = sum(1 for e in examples if e is not None and e["input_ids"][-1] != tok.eos_token_id)
    if cut:
        print(f"tokenskip: {cut} completions were cut at --cutoff {cutoff}")

    # 2. model + LoRA
    set_seed(seed)
    try:
        base = AutoModelForCausalLM.from_pretrained(
            resolve_model(model), dtype=torch_dtype, trust_remote_code=trust_remote_code
        )
    except OSError as e:
        raise UserError(f"could not load model '{model}': {str(e).splitlines()[0][:300]}") from None
    if gradient_checkpointing:
        base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        base.enable_input_require_grads()
    try:
        peft_model = get_peft_model(base, lora)
    except ValueError as e:
        raise UserError(f"--target_modules {target_modules}: {str(e).splitlines()[0][:200]}") from None
    trainable, total = peft_model.get_nb_trainable_parameters()

    # 3. Trainer
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    args = TrainingArguments(
        output_dir=str(out_dir / CHECKPOINTS),
        num_train_epochs=epochs,
        max_steps=max_steps,
        per_device_train_batch_size=batch_size,
        per_device_eval_batch_size=batch_size,
        gradient_accumulation_steps=grad_accum,
        learning_rate=learning_rate,
        lr_scheduler_type=scheduler,
        warmup_steps=int(warmup) if warmup >= 1 else warmup,
        weight_decay=weight_decay,
        logging_steps=logging_steps,
        logging_first_step=True,
        save_strategy="steps",
        save_steps=save_steps,
        save_total_limit=save_total_limit,
        eval_strategy="steps" if len(eval_set) else "no",
        eval_steps=save_steps,
        bf16=torch_dtype == torch.bfloat16,
        fp16=torch_dtype == torch.float16,
        use_cpu=dev == "cpu",
        seed=seed,
        report_to="none",
        remove_unused_columns=False,
        disable_tqdm=progress == "none",
        ddp_find_unused_parameters=False if world_size > 1 else None,
        dataloader_num_workers=0,
        prediction_loss_only=True,
        **_sampling_args(TrainingArguments, group_by_length),
    )
    log_path = out_dir / LOG_FILE
    trainer_cls = _completion_logits_trainer(Trainer) if _accepts_logits_to_keep(base) else Trainer
    trainer = trainer_cls(
        model=peft_model,
        args=args,
        train_dataset=train_set,
        eval_dataset=eval_set if len(eval_set) else None,
        data_collator=lambda feats: collate(feats, tok.pad_token_id),
        callbacks=[jsonl_log_callback(log_path)],
    )
    main_process = trainer.is_world_process_zero()
    if main_process:
        state = f"resuming from {resume_from}" if resume_from else "starting"
        print(
            f"tokenskip: {state}: {len(train_set)} train / {len(eval_set)} eval examples, "
            f"{trainable:,} trainable parameters ({100 * trainable / total:.3f}%), {dev}, {torch_dtype}",
            flush=True,
        )
    output = trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    eval_loss = None
    if len(eval_set):
        last = [r for r in trainer.state.log_history if "eval_loss" in r]
        if last and last[-1].get("step") == trainer.state.global_step:
            eval_loss = round(float(last[-1]["eval_loss"]), 4)
        else:
            eval_loss = round(float(trainer.evaluate()["eval_loss"]), 4)
    train_loss = last_logged(trainer.state.log_history, "loss")

    # 4. adapter + card, written last (tokenskip_adapter.json marks a finished run)
    result = TrainResult(str(out_dir), trainer.state.global_step, train_loss, eval_loss,
                         str(resume_from) if resume_from else None, model=peft_model.eval())  # fmt: skip
    if main_process:
        meta = {
            "base_model": model,
            "base_model_path": resolve_model(model),
            "ratios": info["ratios"],
            "preset": {
                "name": preset.name,
                "delimiter": preset.delimiter,
                "system": preset.system,
                "instruction": preset.instruction,
                "answer_template": preset.answer_template,
            },  # fmt: skip
            "data": {
                "path": str(data_dir),
                "sha256": settings["data_sha256"],
                "train_examples": len(train_set),
                "eval_examples": len(eval_set),
                "per_ratio": info.get("per_ratio"),
                "original": (info.get("original") or {}).get("path"),
                "compressed": info.get("compressed"),
            },  # fmt: skip
            "hyperparameters": {
                k: v for k, v in settings.items() if k not in ("data", "data_sha256", "model")
            },
            "trainable_parameters": trainable,
            "trainable_percent": 100 * trainable / total,
            "world_size": world_size,
            "dtype": str(torch_dtype).replace("torch.", ""),
            "global_step": trainer.state.global_step,
            "train_loss": train_loss,
            "mean_train_loss": round(float(output.training_loss), 4),
            "eval_loss": eval_loss,
        }
        _save_adapter(trainer.model, out_dir, meta)
        if not keep_checkpoints:
            shutil.rmtree(out_dir / CHECKPOINTS, ignore_errors=True)
        print(f"tokenskip: adapter saved to {out_dir} (train loss {train_loss}, eval loss {eval_loss})")
    return result


def _check_args(
    lora_rank: int, lr: float, epochs: float, max_steps: int, batch_size: int, grad_accum: int, cutoff: int,
    warmup: float, save_steps: int,
) -> None:  # fmt: skip
    checks = [
        (lora_rank >= 1, f"--lora_rank must be >= 1, got {lora_rank}"),
        (lr > 0, f"--learning_rate must be > 0, got {lr}"),
        (epochs > 0 or max_steps > 0, "need --epochs > 0 or --max_steps > 0"),
        (batch_size >= 1, f"--batch_size must be >= 1, got {batch_size}"),
        (grad_accum >= 1, f"--grad_accum must be >= 1, got {grad_accum}"),
        (cutoff >= 8, f"--cutoff must be >= 8, got {cutoff}"),
        (
            warmup >= 0 and (warmup < 1 or float(warmup).is_integer()),
            f"--warmup: a fraction < 1 or steps, got {warmup}",
        ),
        (save_steps >= 1, f"--save_steps must be >= 1, got {save_steps}"),
    ]
    for ok, msg in checks:
        if not ok:
            raise UserError(msg)


def _save_adapter(model: Any, out_dir: Path, meta: dict[str, Any]) -> None:
    """Save adapter, card and metadata into a temp folder, then move them in (metadata last)."""
    tmp = out_dir / ".adapter.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(str(tmp), safe_serialization=True)
    (tmp / "README.md").write_text(model_card(meta), encoding="utf-8")
    for f in sorted(tmp.iterdir()):
        os.replace(f, out_dir / f.name)
    write_json_atomic(out_dir / ADAPTER_INFO, meta)
    shutil.rmtree(tmp, ignore_errors=True)
