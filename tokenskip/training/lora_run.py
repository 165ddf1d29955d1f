"""One LoRA training run on trl, shared by ``tokenskip train`` and TALE-PT (``tale train-sft|train-dpo``).

:func:`run_lora` is the whole life of a run; the verbs only say what differs (their data, their trl trainer,
their metadata):

1. ``OUT`` is checked against a previous run and the settings recorded (:func:`~tokenskip.training.runs.prepare_out`;
   other data-parallel ranks only read what rank 0 prepared);
2. the tokenizer loads and the verb builds its dataset (every row checked before the model loads);
3. the base model loads (``--dtype``/``--device``), seeded; the verb builds its trl trainer from the shared
   ``TrainingArguments`` fields, the LoRA config and the JSONL log callback;
4. ``trainer.train`` resumes from the last complete checkpoint;
5. the adapter, the model card and the metadata file are moved into ``OUT`` from one temporary folder,
   metadata last (its presence marks a finished run); checkpoints are deleted unless kept.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tokenskip.args import LoRAArgs, OptimArgs, RunArgs
from tokenskip.data.jsonl import write_json_atomic
from tokenskip.errors import UserError
from tokenskip.training.runs import (
    CHECKPOINTS,
    LOG_FILE,
    jsonl_log_callback,
    last_complete_checkpoint,
    last_logged,
    lora_config,
    prepare_out,
)

CARD = "README.md"


@dataclass
class Setup:
    """What a verb's trainer factory gets.

    Attributes:
        tokenizer: the model's tokenizer.
        config: ``TrainingArguments`` fields for trl's SFTConfig / DPOConfig (output dir, optimizer, precision).
        common: trainer arguments: model (the base model), processing_class, peft_config, callbacks.
        device: the resolved device (``cpu``, ``cuda``).
        dtype: the torch dtype the model was loaded in.
    """

    tokenizer: Any
    config: dict[str, Any]
    common: dict[str, Any]
    device: str
    dtype: Any


@dataclass
class LoraRun:
    """What :func:`run_lora` returns: the run's folder, steps, last loss, metadata and the trained model."""

    out: str
    global_step: int
    train_loss: float | None
    resumed_from: str | None
    meta: dict[str, Any]
    model: Any = None


def settings_of(lora: LoRAArgs, optim: OptimArgs, run: RunArgs) -> dict[str, Any]:
    """The groups' fields that belong in ``train_config.json`` (all but what only changes the display); the
    dtype as it runs on this machine (``auto`` resolved)."""
    from tokenskip.models import dtype_name

    try:
        saved = {"save_dtype": dtype_name(run.save_dtype, "cpu")} if run.save_dtype else {}
    except UserError:
        raise UserError(f"unknown --save_dtype '{run.save_dtype}' (float32, bfloat16, float16)") from None
    return {**asdict(lora), **asdict(optim), "dtype": dtype_name(run.dtype, run.device), **saved}


def run_lora(
    what: str,
    out: str | Path,
    settings: dict[str, Any],
    *,
    model: str,
    lora: LoRAArgs,
    optim: OptimArgs,
    run: RunArgs,
    info_name: str,
    data: Callable[[Any], Any],
    trainer: Callable[[Any, Setup], Any],
    meta: Callable[[Any, Any, Any], dict[str, Any]],
    card: Callable[[dict[str, Any]], str] | None = None,
    compare: Iterable[str] | None = None,
) -> LoraRun:
    """Train a LoRA adapter into ``out`` (resumable) and write it with its metadata.

    Args:
        what: the run's name in messages (``TokenSkip``, ``TALE-PT SFT``).
        out: the run folder.
        settings: this run's settings (``train_config.json``; checked when resuming).
        model: base model (alias, Hugging Face id or local folder).
        lora: the adapter's shape.
        optim: optimizer, schedule, batches and checkpoints.
        run: precision, device and what to do with a previous run.
        info_name: the metadata file written last (``tokenskip_adapter.json``, ``tale_adapter.json``).
        data: ``tokenizer -> data``: the verb's dataset, built (and checked) before the model loads.
        trainer: ``(data, setup) -> trl trainer``.
        meta: ``(trainer, data, train output) -> metadata`` (called on every rank, after training).
        card: ``metadata -> README.md`` of the adapter, or None for none.
        compare: settings that must match an interrupted run's (None: all but ``progress``).
    """
    optim.check()
    lora_config(lora.lora_rank, lora.lora_alpha, lora.lora_dropout, lora.target_modules)  # --target_modules
    out_dir = Path(out)
    if int(os.environ.get("RANK", "0")) == 0:
        resume_from = prepare_out(out_dir, settings, resume=run.resume, overwrite=run.overwrite,
                                  adapter_info=info_name, compare=compare)  # fmt: skip
    else:  # other data-parallel ranks only read what rank 0 prepares
        resume_from = (
            last_complete_checkpoint(out_dir / CHECKPOINTS) if run.resume and not run.overwrite else None
        )

    import torch
    from transformers import AutoModelForCausalLM, set_seed

    from tokenskip.models import load_tokenizer, resolve_device, resolve_dtype, resolve_model

    dev = resolve_device(run.device)
    torch_dtype = resolve_dtype(run.dtype, dev)
    tok = load_tokenizer(model, trust_remote_code=run.trust_remote_code)
    prepared = data(tok)
    set_seed(optim.seed)
    try:
        base = AutoModelForCausalLM.from_pretrained(resolve_model(model), dtype=torch_dtype,
                                                    trust_remote_code=run.trust_remote_code)  # fmt: skip
    except OSError as e:
        raise UserError(f"could not load model '{model}': {str(e).splitlines()[0][:300]}") from None
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    config = {
        "output_dir": str(out_dir / CHECKPOINTS), **optim.trainer_kwargs(),
        "bf16": torch_dtype == torch.bfloat16, "fp16": torch_dtype == torch.float16, "use_cpu": dev == "cpu",
        "report_to": "none", "disable_tqdm": run.progress == "none", "dataloader_num_workers": 0,
        "ddp_find_unused_parameters": False if world_size > 1 else None,
    }  # fmt: skip
    common = {"model": base, "processing_class": tok,
              "peft_config": lora_config(lora.lora_rank, lora.lora_alpha, lora.lora_dropout, lora.target_modules),
              "callbacks": [jsonl_log_callback(out_dir / LOG_FILE)]}  # fmt: skip
    try:
        tr = trainer(prepared, Setup(tok, config, common, dev, torch_dtype))
    except ValueError as e:  # e.g. target modules missing from the model
        raise UserError(f"cannot set up {what} training: {str(e).splitlines()[0][:300]}") from None
    main = tr.is_world_process_zero()
    if main:
        trainable, total = tr.model.get_nb_trainable_parameters()
        state = f"resuming from {resume_from}" if resume_from else "starting"
        print(f"tokenskip: {what} {state}: {len(tr.train_dataset)} train examples, {trainable:,} trainable "
              f"parameters ({100 * trainable / total:.3f}%), {dev}, {torch_dtype}", flush=True)  # fmt: skip
    output = tr.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    loss = last_logged(tr.state.log_history, "loss")
    trainable, total = tr.model.get_nb_trainable_parameters()
    info = {
        "base_model": model,
        "base_model_path": resolve_model(model),
        **meta(tr, prepared, output),
        "trainable_parameters": trainable,
        "trainable_percent": 100 * trainable / total,
        "world_size": world_size,
        "dtype": str(torch_dtype).replace("torch.", ""),
        "global_step": tr.state.global_step,
        "train_loss": loss,
        "mean_train_loss": round(float(output.training_loss), 4),
    }
    if main:
        if run.save_dtype:
            info["saved_dtype"] = settings_of(lora, optim, run)["save_dtype"]
        save_adapter(tr.model, out_dir, info_name, info, card(info) if card else None, run.save_dtype)
        if not run.keep_checkpoints:
            shutil.rmtree(out_dir / CHECKPOINTS, ignore_errors=True)
        print(
            f"tokenskip: {what} adapter saved to {out_dir} ({tr.state.global_step} steps, last loss {loss})"
        )
    resumed = str(resume_from) if resume_from else None
    return LoraRun(str(out_dir), tr.state.global_step, loss, resumed, info, model=tr.model.eval())


def save_adapter(
    model: Any,
    out_dir: Path,
    info_name: str,
    info: dict[str, Any],
    card: str | None,
    save_dtype: str | None = None,
) -> None:
    """Write adapter, card and metadata into one temporary folder, then move them into ``out_dir``, the
    metadata file last (a folder holding it is a finished run). ``save_dtype``: the weights' dtype on disk."""
    tmp = out_dir / ".adapter.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(str(tmp), safe_serialization=True)
    if save_dtype:
        cast_safetensors(tmp / "adapter_model.safetensors", save_dtype)
    if card is not None:
        (tmp / CARD).write_text(card, encoding="utf-8")
    write_json_atomic(tmp / info_name, info)
    for f in sorted(tmp.iterdir(), key=lambda f: f.name == info_name):
        os.replace(f, out_dir / f.name)
    shutil.rmtree(tmp, ignore_errors=True)


def cast_safetensors(path: Path, dtype: str) -> None:
    """Rewrite a safetensors file with its floating-point tensors in ``dtype`` (metadata kept)."""
    import torch
    from safetensors import safe_open
    from safetensors.torch import save_file

    from tokenskip.models import resolve_dtype

    target = resolve_dtype(dtype, "cpu")
    with safe_open(str(path), framework="pt") as f:
        metadata = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open is not a dict)
    cast = {k: v.to(target) if torch.is_floating_point(v) else v for k, v in tensors.items()}
    save_file(cast, str(path), metadata=metadata)
