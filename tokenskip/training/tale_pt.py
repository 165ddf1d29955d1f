"""``tokenskip tale train-sft|train-dpo``: TALE-PT, token-budget awareness internalized by LoRA training.

TALE-PT (arXiv 2412.18547, section 4.2) trains on the traces of ``tokenskip tale search``:

* **SFT**: prompt = the plain TALE prompt (no budget), target = the model's own answer under its searched
  optimal budget (trl ``SFTTrainer``, loss on the completion only);
* **DPO**: same prompt, chosen = that answer, rejected = the vanilla CoT answer (trl ``DPOTrainer``; the
  reference model is the base model with the adapter switched off). Only questions whose optimal budget
  is below the vanilla length (``improved``) make a pair.

Both are thin layers over trl with a documented config dataclass each (:class:`TaleSFTConfig`,
:class:`TaleDPOConfig`), TALE's defaults (LoRA r 8 / alpha 32 on q_proj,v_proj), and the resume behaviour
of ``tokenskip train``: checkpoints in ``OUT/checkpoints``, re-running the same command resumes from the
last complete one (``resume_from_checkpoint``), other settings on an interrupted run are refused. The
adapter (peft safetensors) and ``tale_adapter.json`` are written into OUT last. Evaluate an adapter with
``tokenskip tale run --estimator none --adapter OUT`` (the plain prompt it was trained on).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from tokenskip.data.inputs import locate, read_rows
from tokenskip.data.jsonl import write_json_atomic
from tokenskip.errors import UserError
from tokenskip.inference.tale_budget import TaleTemplate, get_template
from tokenskip.models import DEFAULT_MODEL
from tokenskip.training.runs import (
    CHECKPOINTS,
    LOG_FILE,
    jsonl_log_callback,
    last_logged,
    lora_config,
    prepare_out,
)

ADAPTER_INFO = "tale_adapter.json"


# ----------------------------------------------------------------------------------- configuration


@dataclass
class TalePTConfig:
    """Settings shared by TALE-PT's SFT and DPO runs (TALE's reference values as defaults).

    Attributes:
        lora_rank: LoRA rank r.
        lora_alpha: LoRA alpha.
        lora_dropout: dropout on the LoRA input.
        target_modules: modules to adapt: comma-separated names (``q_proj,v_proj``) or ``all-linear``.
        learning_rate: peak learning rate.
        epochs: training epochs.
        max_steps: stop after this many optimizer steps (overrides ``epochs`` when > 0).
        batch_size: examples per device per forward pass.
        grad_accum: gradient accumulation steps.
        scheduler: learning-rate schedule (``linear``, ``cosine``, ``constant``, ...).
        warmup: warmup as a fraction of the steps (< 1) or a number of steps (>= 1).
        weight_decay: AdamW weight decay.
        cutoff: maximum tokens per sequence (prompt + answer); longer ones are truncated.
        save_steps: checkpoint every N optimizer steps.
        save_total_limit: keep at most N checkpoints.
        logging_steps: log every N steps.
        seed: seed for LoRA init and data order.
        gradient_checkpointing: recompute activations in backward (less memory, slower).
    """

    lora_rank: int = 8
    lora_alpha: int = 32
    lora_dropout: float = 0.0
    target_modules: str = "q_proj,v_proj"
    learning_rate: float = 1e-4
    epochs: float = 2.0
    max_steps: int = -1
    batch_size: int = 2
    grad_accum: int = 8
    scheduler: str = "linear"
    warmup: float = 0.0
    weight_decay: float = 0.01
    cutoff: int = 1024
    save_steps: int = 50
    save_total_limit: int = 2
    logging_steps: int = 1
    seed: int = 1024
    gradient_checkpointing: bool = False

    def check(self) -> None:
        checks = [
            (self.lora_rank >= 1, f"--lora_rank must be >= 1, got {self.lora_rank}"),
            (self.learning_rate > 0, f"--learning_rate must be > 0, got {self.learning_rate}"),
            (self.epochs > 0 or self.max_steps > 0, "need --epochs > 0 or --max_steps > 0"),
            (self.batch_size >= 1, f"--batch_size must be >= 1, got {self.batch_size}"),
            (self.grad_accum >= 1, f"--grad_accum must be >= 1, got {self.grad_accum}"),
            (self.cutoff >= 16, f"--cutoff must be >= 16, got {self.cutoff}"),
            (self.warmup >= 0 and (self.warmup < 1 or float(self.warmup).is_integer()),
             f"--warmup: a fraction < 1 or a number of steps, got {self.warmup}"),
            (self.save_steps >= 1, f"--save_steps must be >= 1, got {self.save_steps}"),
            (self.logging_steps >= 1, f"--logging_steps must be >= 1, got {self.logging_steps}"),
        ]  # fmt: skip
        for ok, msg in checks:
            if not ok:
                raise UserError(msg)
        self.lora_config()  # --target_modules

    def lora_config(self) -> Any:
        return lora_config(self.lora_rank, self.lora_alpha, self.lora_dropout, self.target_modules)

    def trainer_kwargs(
        self, output_dir: str, bf16: bool, fp16: bool, use_cpu: bool, progress: bool
    ) -> dict[str, Any]:
        """Keyword arguments shared by ``trl.SFTConfig`` and ``trl.DPOConfig``."""
        return {
            "output_dir": output_dir,
            "num_train_epochs": self.epochs,
            "max_steps": self.max_steps,
            "per_device_train_batch_size": self.batch_size,
            "gradient_accumulation_steps": self.grad_accum,
            "learning_rate": self.learning_rate,
            "lr_scheduler_type": self.scheduler,
            "warmup_steps": int(self.warmup) if self.warmup >= 1 else self.warmup,
            "weight_decay": self.weight_decay,
            "max_length": self.cutoff,
            "logging_steps": self.logging_steps,
            "logging_first_step": True,
            "save_strategy": "steps",
            "save_steps": self.save_steps,
            "save_total_limit": self.save_total_limit,
            "eval_strategy": "no",
            "gradient_checkpointing": self.gradient_checkpointing,
            "bf16": bf16,
            "fp16": fp16,
            "use_cpu": use_cpu,
            "seed": self.seed,
            "data_seed": self.seed,
            "report_to": "none",
            "disable_tqdm": not progress,
            "dataloader_num_workers": 0,
        }


@dataclass
class TaleSFTConfig(TalePTConfig):
    """TALE-PT-SFT: trl ``SFTConfig`` built from these fields (loss on the answer only)."""

    kind: str = field(default="sft", init=False)

    def to_trl(self, output_dir: str, bf16: bool, fp16: bool, use_cpu: bool, progress: bool = True) -> Any:
        from trl import SFTConfig

        return SFTConfig(
            **self.trainer_kwargs(output_dir, bf16, fp16, use_cpu, progress), completion_only_loss=True
        )


@dataclass
class TaleDPOConfig(TalePTConfig):
    """TALE-PT-DPO: trl ``DPOConfig`` built from these fields.

    Attributes:
        beta: DPO temperature β (TALE: 0.5); higher keeps the policy closer to the base model.
        max_grad_norm: gradient clipping (TALE: 5.0).
    """

    learning_rate: float = 3e-5
    beta: float = 0.5
    max_grad_norm: float = 5.0
    kind: str = field(default="dpo", init=False)

    def check(self) -> None:
        super().check()
        if self.beta <= 0:
            raise UserError(f"--beta must be > 0, got {self.beta}")

    def to_trl(self, output_dir: str, bf16: bool, fp16: bool, use_cpu: bool, progress: bool = True) -> Any:
        from trl import DPOConfig

        return DPOConfig(**self.trainer_kwargs(output_dir, bf16, fp16, use_cpu, progress), beta=self.beta,
                         max_grad_norm=self.max_grad_norm)  # fmt: skip


# ------------------------------------------------------------------------------------ data (pure)


def _messages(role: str, text: str) -> list[dict[str, str]]:
    return [{"role": role, "content": text}]


def sft_examples(traces: list[dict[str, Any]], template: TaleTemplate) -> list[dict[str, Any]]:
    """Conversational prompt/completion rows: plain TALE prompt -> answer under the searched optimal budget.

    Traces that were not searched (vanilla answer incorrect) or whose optimal answer is empty are left out.
    """
    rows = []
    for t in traces:
        answer = t.get("optimal_output")
        if not t.get("searched") or not isinstance(answer, str) or not answer.strip():
            continue
        rows.append({
            "id": str(t["id"]),
            "prompt": _messages("user", template.user_message(str(t["question"]))),
            "completion": _messages("assistant", answer),
        })  # fmt: skip
    return rows


def dpo_pairs(traces: list[dict[str, Any]], template: TaleTemplate) -> list[dict[str, Any]]:
    """Conversational preference rows: chosen = answer under the optimal budget, rejected = vanilla answer.

    Only searched traces whose optimal budget improved on the vanilla length (so the two answers differ).
    """
    rows = []
    for t in traces:
        chosen, rejected = t.get("optimal_output"), t.get("vanilla_output")
        if not t.get("searched") or not t.get("improved"):
            continue
        if (
            not isinstance(chosen, str)
            or not isinstance(rejected, str)
            or not chosen.strip()
            or chosen == rejected
        ):
            continue
        rows.append({
            "id": str(t["id"]),
            "prompt": _messages("user", template.user_message(str(t["question"]))),
            "chosen": _messages("assistant", chosen),
            "rejected": _messages("assistant", rejected),
        })  # fmt: skip
    return rows


def read_traces(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Traces of ``tokenskip tale search``: its output folder or the traces.jsonl inside it."""
    p = Path(path)
    if p.is_dir():
        p = p / "traces.jsonl"
    if not p.exists():
        raise UserError(f"--traces {path}: no traces.jsonl (run `tokenskip tale search` first)")
    rows = []
    for lineno, row in read_rows(p):
        if "id" not in row or "searched" not in row or "question" not in row:
            raise UserError(f"{locate(p, lineno)}: not a `tale search` trace (no id/question/searched)")
        rows.append(row)
    return rows


def _digest(rows: list[dict[str, Any]]) -> str:
    return hashlib.sha256(json.dumps(rows, sort_keys=True, ensure_ascii=False).encode("utf-8")).hexdigest()


# -------------------------------------------------------------------------------------- training


@dataclass
class TalePTResult:
    """What the TALE-PT verbs return: output folder, steps, last loss, the checkpoint resumed from."""

    out: str
    global_step: int
    train_loss: float | None
    resumed_from: str | None
    examples: int
    model: Any = None


def _train(
    kind: Literal["sft", "dpo"],
    config: TalePTConfig,
    traces: str,
    out: str,
    model: str,
    template: str,
    dtype: str,
    device: str,
    resume: bool,
    overwrite: bool,
    keep_checkpoints: bool,
    trust_remote_code: bool,
    progress: bool,
) -> TalePTResult:
    config.check()
    try:
        tmpl = get_template(template)
    except ValueError as e:
        raise UserError(str(e)) from None
    rows = read_traces(traces)
    data = sft_examples(rows, tmpl) if kind == "sft" else dpo_pairs(rows, tmpl)
    if not data:
        what = (
            "searched traces with an answer"
            if kind == "sft"
            else "improved traces (optimal budget < vanilla)"
        )
        raise UserError(f"--traces {traces}: no {what} among {len(rows)} traces; nothing to train on")
    out_dir = Path(out)
    settings = {"kind": kind, "traces": str(traces), "data_sha256": _digest(data), "model": model,
                "template": tmpl.name, "dtype": dtype, **asdict(config)}  # fmt: skip
    resume_from = prepare_out(
        out_dir, settings, resume=resume, overwrite=overwrite, adapter_info=ADAPTER_INFO
    )

    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, set_seed

    from tokenskip.models import load_tokenizer, resolve_device, resolve_dtype, resolve_model

    dev = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, dev)
    tok = load_tokenizer(model, trust_remote_code=trust_remote_code)
    if not getattr(tok, "chat_template", None):
        raise UserError(f"--model {model} has no chat template; TALE-PT trains conversational examples")
    set_seed(config.seed)
    try:
        base = AutoModelForCausalLM.from_pretrained(resolve_model(model), dtype=torch_dtype,
                                                    trust_remote_code=trust_remote_code)  # fmt: skip
    except OSError as e:
        raise UserError(f"could not load model '{model}': {str(e).splitlines()[0][:300]}") from None
    train_set = Dataset.from_list([{k: v for k, v in r.items() if k != "id"} for r in data])
    args = config.to_trl(str(out_dir / CHECKPOINTS), bf16=torch_dtype == torch.bfloat16,
                         fp16=torch_dtype == torch.float16, use_cpu=dev == "cpu", progress=progress)  # fmt: skip
    common = {"model": base, "args": args, "train_dataset": train_set, "processing_class": tok,
              "peft_config": config.lora_config(), "callbacks": [jsonl_log_callback(out_dir / LOG_FILE)]}  # fmt: skip
    try:
        if kind == "sft":
            from trl import SFTTrainer

            trainer = SFTTrainer(**common)
        else:
            from trl import DPOTrainer

            trainer = DPOTrainer(ref_model=None, **common)
    except ValueError as e:  # e.g. target modules missing from the model
        raise UserError(f"cannot set up TALE-PT {kind.upper()}: {str(e).splitlines()[0][:300]}") from None
    main = trainer.is_world_process_zero()
    if main:
        trainable, total = trainer.model.get_nb_trainable_parameters()
        state = f"resuming from {resume_from}" if resume_from else "starting"
        print(f"tokenskip: TALE-PT {kind.upper()} {state}: {len(data)} examples, {trainable:,} trainable "
              f"parameters ({100 * trainable / total:.3f}%), {dev}, {torch_dtype}", flush=True)  # fmt: skip
    trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    history = trainer.state.log_history
    loss = last_logged(history, "loss")
    if main:
        meta = {
            "method": f"TALE-PT-{kind.upper()}",
            "base_model": model,
            "base_model_path": resolve_model(model),
            "template": asdict(tmpl),
            "prompt": "plain TALE prompt without a budget: " + json.dumps(tmpl.user_message("{question}")),
            "evaluate_with": f"tokenskip tale run --estimator none --template {tmpl.name} --model {model} "
            f"--adapter {out_dir}",
            "traces": str(traces),
            "examples": len(data),
            "config": asdict(config),
            "global_step": trainer.state.global_step,
            "train_loss": loss,
            "last_log": history[-1] if history else None,
        }
        tmp = out_dir / ".adapter.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        trainer.model.save_pretrained(str(tmp), safe_serialization=True)
        for f in sorted(tmp.iterdir()):
            os.replace(f, out_dir / f.name)
        shutil.rmtree(tmp, ignore_errors=True)
        write_json_atomic(out_dir / ADAPTER_INFO, meta)  # last: marks a finished run
        if not keep_checkpoints:
            shutil.rmtree(out_dir / CHECKPOINTS, ignore_errors=True)
        print(f"tokenskip: TALE-PT {kind.upper()} adapter saved to {out_dir} "
              f"({trainer.state.global_step} steps, last loss {loss})")  # fmt: skip
    return TalePTResult(str(out_dir), trainer.state.global_step, loss, str(resume_from) if resume_from else None,
                        len(data), model=trainer.model)  # fmt: skip


def train_sft(
    traces: str,
    out: str,
    model: str = DEFAULT_MODEL,
    template: str = "tale",
    lora_rank: int = 8,
    lora_alpha: int = 32,
    lora_dropout: float = 0.0,
    target_modules: str = "q_proj,v_proj",
    learning_rate: float = 1e-4,
    epochs: float = 2.0,
    max_steps: int = -1,
    batch_size: int = 2,
    grad_accum: int = 8,
    scheduler: str = "linear",
    warmup: float = 0.0,
    weight_decay: float = 0.01,
    cutoff: int = 1024,
    save_steps: int = 50,
    save_total_limit: int = 2,
    logging_steps: int = 1,
    seed: int = 1024,
    dtype: str = "auto",
    device: str = "auto",
    gradient_checkpointing: bool = False,
    resume: bool = True,
    overwrite: bool = False,
    keep_checkpoints: bool = False,
    trust_remote_code: bool = False,
    progress: Literal["bar", "none"] = "bar",
) -> TalePTResult:
    """TALE-PT-SFT: LoRA SFT on the answers under each question's searched optimal budget (trl SFTTrainer).

    Writes into OUT: adapter_model.safetensors + adapter_config.json (peft), tale_adapter.json (base
    model, prompt, config, losses; written last), train_log.jsonl and, while running, checkpoints/.
    Re-running after an interruption resumes from the last complete checkpoint.

    Args:
        traces: output folder (or traces.jsonl) of `tokenskip tale search`.
        out: output folder for the adapter.
        model: base model (alias, Hugging Face id or local folder); the one the search ran with.
        template: TALE prompt template (tale or tale-boxed); the plain prompt, without a budget, is trained.
        lora_rank: LoRA rank r.
        lora_alpha: LoRA alpha.
        lora_dropout: dropout on the LoRA input.
        target_modules: modules to adapt: comma-separated (q_proj,v_proj) or all-linear.
        learning_rate: peak learning rate.
        epochs: training epochs.
        max_steps: stop after this many optimizer steps (overrides --epochs when > 0).
        batch_size: examples per device per forward pass.
        grad_accum: gradient accumulation steps.
        scheduler: learning-rate schedule (linear, cosine, constant, ...).
        warmup: warmup as a fraction of the steps (< 1) or a number of steps (>= 1).
        weight_decay: AdamW weight decay.
        cutoff: maximum tokens per example (prompt + answer).
        save_steps: write a checkpoint every N optimizer steps.
        save_total_limit: keep at most N checkpoints.
        logging_steps: log every N steps.
        seed: seed for LoRA init and data order.
        dtype: auto (bf16 on GPU, fp32 on CPU), float32, bfloat16 or float16.
        device: auto, cpu or cuda.
        gradient_checkpointing: recompute activations in backward (less memory, slower).
        resume: resume from the last complete checkpoint in OUT/checkpoints if there is one.
        overwrite: delete a previous run in OUT and start over.
        keep_checkpoints: keep OUT/checkpoints after a successful run (deleted by default).
        trust_remote_code: allow model code from the hub (off by default).
        progress: bar shows a progress bar; none prints log lines only.
    """
    config = TaleSFTConfig(
        lora_rank=lora_rank, lora_alpha=lora_alpha, lora_dropout=lora_dropout, target_modules=target_modules,
        learning_rate=learning_rate, epochs=epochs, max_steps=max_steps, batch_size=batch_size,
        grad_accum=grad_accum, scheduler=scheduler, warmup=warmup, weight_decay=weight_decay, cutoff=cutoff,
        save_steps=save_steps, save_total_limit=save_total_limit, logging_steps=logging_steps, seed=seed,
        gradient_checkpointing=gradient_checkpointing,
    )  # fmt: skip
    return _train("sft", config, traces, out, model, template, dtype, device, resume, overwrite, keep_checkpoints,
                  trust_remote_code, progress == "bar")  # fmt: skip


def train_dpo(
    traces: str,
    out: str,
    model: str = DEFAULT_MODEL,
    template: str = "tale",
    beta: float = 0.5,
    max_grad_norm: float = 5.0,
    lora_rank: int = 8,
    lora_alpha: int = 32,
    lora_dropout: float = 0.0,
    target_modules: str = "q_proj,v_proj",
    learning_rate: float = 3e-5,
    epochs: float = 2.0,
    max_steps: int = -1,
    batch_size: int = 2,
    grad_accum: int = 8,
    scheduler: str = "linear",
    warmup: float = 0.0,
    weight_decay: float = 0.001,
    cutoff: int = 1024,
    save_steps: int = 50,
    save_total_limit: int = 2,
    logging_steps: int = 1,
    seed: int = 1024,
    dtype: str = "auto",
    device: str = "auto",
    gradient_checkpointing: bool = False,
    resume: bool = True,
    overwrite: bool = False,
    keep_checkpoints: bool = False,
    trust_remote_code: bool = False,
    progress: Literal["bar", "none"] = "bar",
) -> TalePTResult:
    """TALE-PT-DPO: LoRA DPO, chosen = answer under the searched optimal budget, rejected = vanilla CoT.

    Only questions whose optimal budget is below the vanilla length make a pair. The reference model is
    the base model (adapter disabled). Outputs and resume behaviour as `tokenskip tale train-sft`.

    Args:
        traces: output folder (or traces.jsonl) of `tokenskip tale search`.
        out: output folder for the adapter.
        model: base model (alias, Hugging Face id or local folder); the one the search ran with.
        template: TALE prompt template (tale or tale-boxed); the plain prompt, without a budget, is trained.
        beta: DPO β (TALE: 0.5); higher keeps the policy closer to the base model.
        max_grad_norm: gradient clipping (TALE: 5.0).
        lora_rank: LoRA rank r.
        lora_alpha: LoRA alpha.
        lora_dropout: dropout on the LoRA input.
        target_modules: modules to adapt: comma-separated (q_proj,v_proj) or all-linear.
        learning_rate: peak learning rate.
        epochs: training epochs.
        max_steps: stop after this many optimizer steps (overrides --epochs when > 0).
        batch_size: preference pairs per device per forward pass.
        grad_accum: gradient accumulation steps.
        scheduler: learning-rate schedule (linear, cosine, constant, ...).
        warmup: warmup as a fraction of the steps (< 1) or a number of steps (>= 1).
        weight_decay: AdamW weight decay.
        cutoff: maximum tokens per sequence (prompt + answer).
        save_steps: write a checkpoint every N optimizer steps.
        save_total_limit: keep at most N checkpoints.
        logging_steps: log every N steps.
        seed: seed for LoRA init and data order.
        dtype: auto (bf16 on GPU, fp32 on CPU), float32, bfloat16 or float16.
        device: auto, cpu or cuda.
        gradient_checkpointing: recompute activations in backward (less memory, slower).
        resume: resume from the last complete checkpoint in OUT/checkpoints if there is one.
        overwrite: delete a previous run in OUT and start over.
        keep_checkpoints: keep OUT/checkpoints after a successful run (deleted by default).
        trust_remote_code: allow model code from the hub (off by default).
        progress: bar shows a progress bar; none prints log lines only.
    """
    config = TaleDPOConfig(
        lora_rank=lora_rank, lora_alpha=lora_alpha, lora_dropout=lora_dropout, target_modules=target_modules,
        learning_rate=learning_rate, epochs=epochs, max_steps=max_steps, batch_size=batch_size,
        grad_accum=grad_accum, scheduler=scheduler, warmup=warmup, weight_decay=weight_decay, cutoff=cutoff,
        save_steps=save_steps, save_total_limit=save_total_limit, logging_steps=logging_steps, seed=seed,
        gradient_checkpointing=gradient_checkpointing, beta=beta, max_grad_norm=max_grad_norm,
    )  # fmt: skip
    return _train("dpo", config, traces, out, model, template, dtype, device, resume, overwrite, keep_checkpoints,
                  trust_remote_code, progress == "bar")  # fmt: skip
