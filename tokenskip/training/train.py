"""LoRA fine-tuning on a build-sft mixture with trl's ``SFTTrainer``, loss on the completion only (the verb:
:mod:`tokenskip.verbs.train`).

1. every row becomes a prompt-completion example: ``prompt`` = the chat template applied to the row's user
   message (for TokenSkip rows exactly ``format_prompt(tokenizer, question, γ, preset)``, what inference
   sends, TELL's anchor included), ``completion`` = ``output`` (trl appends EOS); trl's
   ``completion_only_loss`` masks the prompt;
2. LoRA (TokenSkip's defaults: rank 8, alpha 16, every linear layer, lr 5e-5, 3 epochs, cosine, warmup 0.1,
   cutoff 2048) in ``--dtype auto`` (bf16 on a GPU or a CPU with AMX, else fp32: :func:`tokenskip.models.auto_dtype`);
   the LM head runs only from the first completion position of each batch on (:class:`CompletionLogitsSFTTrainer`): the same loss, less work;
3. checkpoints every ``--save_steps`` in ``OUT/checkpoints``; re-running the same command resumes from the
   last complete checkpoint; losses go to ``OUT/train_log.jsonl``;
4. the adapter (``adapter_model.safetensors``), a model card (``README.md``) and ``tokenskip_adapter.json``
   (base model, the whole preset -- delimiter, anchor, think tags --, ratios, data) are written into ``OUT``
   last, so a folder holding ``tokenskip_adapter.json`` is a finished run.

Model loading, LoRA, resuming and saving are :func:`tokenskip.training.lora_run.run_lora`, shared with TALE-PT.
A TELL mixture (``build-sft --general``) is trained in its file order, which build-sft shuffled (seeded) or
kept blocked. Several GPUs: ``accelerate launch -m tokenskip.cli train ...`` or ``torchrun --nproc-per-node N
-m tokenskip.cli train ...`` (data parallel; ``--batch_size`` is per device).
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tokenskip.data.jsonl import read_jsonl
from tokenskip.data.prompts import PromptPreset, format_ratio, render_chat, user_message
from tokenskip.errors import UserError
from tokenskip.training.sft_folder import SFT_FILE, user_text

IGNORE_INDEX = -100

# settings that change the result: a resumed run must match the interrupted one on all of these
_RUN_KEYS = (
    "data_sha256", "model", "lora_rank", "lora_alpha", "lora_dropout", "target_modules", "learning_rate",
    "epochs", "max_steps", "batch_size", "grad_accum", "scheduler", "warmup", "weight_decay", "cutoff",
    "eval_size", "seed", "group_by_length", "dtype",
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
# Pure pieces: split, completion start, sampling, rows


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


def completion_logits_trainer(trainer_cls: type) -> type:
    """A trainer whose loss runs the LM head only from :func:`completion_start` on: the same loss, less work.

    The model's own loss shifts the labels by one, so slicing ``labels`` and the kept positions at the same
    index keeps every (logit, next token) pair; ``num_items_in_batch`` counts the same target tokens. (trl's
    fused LM head scores every position on CPU; models without ``logits_to_keep`` keep trl's loss.)
    """
    import inspect

    import torch
    from transformers import Trainer

    class CompletionLogitsSFTTrainer(trainer_cls):  # type: ignore[misc, valid-type]
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            labels = inputs.get("labels")
            inner = self.accelerator.unwrap_model(model)
            inner = inner.get_base_model() if hasattr(inner, "get_base_model") else inner  # peft
            if labels is None or "logits_to_keep" not in inspect.signature(inner.forward).parameters:
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            first = completion_start(labels)
            keep = torch.arange(first, labels.shape[1], device=labels.device)
            inputs = {**inputs, "labels": labels[:, first:], "logits_to_keep": keep, "use_cache": False}
            return Trainer.compute_loss(self, model, inputs, return_outputs, num_items_in_batch)

    return CompletionLogitsSFTTrainer


def _sampling_args(args_cls: type, group_by_length: bool, ordered: bool = False) -> dict[str, Any]:
    """``group_by_length`` across transformers versions (a strategy string in 5.x, a flag before); ``ordered``:
    keep the file's order (a TELL mixture) unless batches are grouped by length."""
    fields = getattr(args_cls, "__dataclass_fields__", {})
    if not group_by_length:
        return (
            {"train_sampling_strategy": "sequential"}
            if ordered and "train_sampling_strategy" in fields
            else {}
        )
    if "train_sampling_strategy" in fields:
        return {"train_sampling_strategy": "group_by_length"}
    return {"group_by_length": True}


def check_row(row: dict[str, Any], preset: PromptPreset) -> None:
    """Raise ValueError when a build-sft row does not match its folder's preset (or has no output)."""
    if row.get("kind", "task") == "general":  # TELL's general data: any user message, no ratio
        if not isinstance(row.get("instruction"), str) or not isinstance(row.get("input"), str):
            raise ValueError("general row needs string instruction/input")
    else:
        expected = user_message(row["question"], float(row["ratio"]), preset, preset.delimiter)
        if user_text(row) != expected:
            raise ValueError("instruction/input do not match the folder's preset and delimiter")
    if not isinstance(row["output"], str) or not row["output"].strip():
        raise ValueError("empty output")


def prompt_of(tokenizer: Any, row: dict[str, Any], preset: PromptPreset) -> str:
    """The chat prompt of a row: its user message (with the preset's system prompt) and the generation prompt;
    for a task row exactly ``format_prompt(tokenizer, question, γ, preset)``."""
    system = [{"role": "system", "content": preset.system}] if preset.system is not None else []
    return render_chat(tokenizer, [*system, {"role": "user", "content": user_text(row)}], preset)


def _data_rows(data_dir: Path, preset: PromptPreset) -> list[dict[str, Any]]:
    rows = []
    for lineno, row in read_jsonl(data_dir / SFT_FILE):
        try:
            check_row(row, preset)
        except (KeyError, TypeError, ValueError) as e:
            raise UserError(f"{data_dir / SFT_FILE}:{lineno}: bad training row ({e})") from None
        rows.append(row)
    if not rows:
        raise UserError(f"{data_dir / SFT_FILE}: no training rows")
    return rows


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
        *(
            [f"- **TELL anchor** (before every task prompt): {json.dumps(meta['preset']['anchor'])}"]
            if meta["preset"].get("anchor")
            else []
        ),
        *([f"- **TELL mixture**: {json.dumps(meta['data']['tell'])}"] if meta["data"].get("tell") else []),
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
