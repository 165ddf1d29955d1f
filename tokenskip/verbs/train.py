"""``tokenskip train``: LoRA fine-tuning on a build-sft folder with trl's ``SFTTrainer``, loss on the completion only
(the pieces: :mod:`tokenskip.training.train`; the run's life: :func:`tokenskip.training.lora_run.run_lora`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tokenskip.args import LoRAArgs, OptimArgs, RunArgs, flat_options
from tokenskip.data.adapters import ADAPTER_INFO
from tokenskip.errors import UserError
from tokenskip.models import DEFAULT_MODEL, sha256_file
from tokenskip.training.lora_run import Setup, run_lora, settings_of
from tokenskip.training.sft_folder import SFT_FILE, preset_from_info, read_sft_info
from tokenskip.training.train import (
    _RUN_KEYS,
    TrainResult,
    _data_rows,
    _sampling_args,
    completion_logits_trainer,
    model_card,
    prompt_of,
    split_eval,
)


@flat_options(
    lora=LoRAArgs(lora_dropout=0.0),
    optim=OptimArgs(),
    run=RunArgs(),
)
def train(
    data: str,
    out: str,
    lora: LoRAArgs,
    optim: OptimArgs,
    run: RunArgs,
    model: str = DEFAULT_MODEL,
    eval_size: float = 0.05,
    group_by_length: bool = False,
) -> TrainResult:
    """LoRA fine-tuning on a build-sft folder (trl SFTTrainer, loss on the completion only), resumable.

    Writes into OUT: ``adapter_model.safetensors`` + ``adapter_config.json`` (peft), ``README.md`` (model
    card), ``tokenskip_adapter.json`` (base model, preset, delimiter, ratios, data, losses),
    ``train_log.jsonl`` (one line per log step: step, epoch, loss, learning_rate, grad_norm, eval_loss) and,
    while running, ``checkpoints/checkpoint-N``. Re-running after an interruption resumes from the last
    complete checkpoint.

    Args:
        data: output folder of ``tokenskip build-sft``.
        out: output folder for the adapter.
        model: base model (alias, Hugging Face id or local folder).
        eval_size: held-out examples for the eval loss: a fraction (< 1) or a count (>= 1); 0 disables.
        group_by_length: batch examples of similar length together (less padding, faster; the order is
            still shuffled, in groups).
    """
    data_dir = Path(data)
    info = read_sft_info(data_dir)
    data_dir = data_dir.parent if data_dir.is_file() else data_dir
    preset = preset_from_info(info)
    settings = {"data": str(data_dir), "data_sha256": sha256_file(data_dir / SFT_FILE), "model": model,
                **settings_of(lora, optim, run), "eval_size": eval_size, "group_by_length": group_by_length}  # fmt: skip
    ordered = bool(info.get("tell"))

    def build_data(tok: Any) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
        if info.get("delimiter_source") == "eos" and tok.eos_token != preset.delimiter:
            raise UserError(
                f"--data was built with delimiter {preset.delimiter!r} (EOS of '{info.get('model')}') but "
                f"--model {model} has EOS {tok.eos_token!r}: rebuild with `build-sft --model {model}` "
                "or pass --delimiter explicitly"
            )
        if tok.eos_token_id is None:
            raise UserError(f"--model {model}: the tokenizer has no EOS token to end completions with")
        rows = _data_rows(data_dir, preset)
        train_idx, eval_idx = split_eval(len(rows), eval_size, optim.seed)
        examples: list[dict[str, str] | None] = []
        for row in rows:
            prompt = prompt_of(tok, row, preset)
            fits = len(tok(prompt, add_special_tokens=False)["input_ids"]) < optim.cutoff
            examples.append({"prompt": prompt, "completion": row["output"]} if fits else None)
        dropped = sum(e is None for e in examples)
        if dropped:
            print(f"tokenskip: skipped {dropped} examples whose prompt alone exceeds --cutoff {optim.cutoff}")
        train_set = [e for i in train_idx if (e := examples[i]) is not None]
        if not train_set:
            raise UserError(f"no training examples fit --cutoff {optim.cutoff}")
        return train_set, [e for i in eval_idx if (e := examples[i]) is not None]

    def build_trainer(sets: tuple[list, list], setup: Setup) -> Any:
        from datasets import Dataset
        from trl import SFTConfig, SFTTrainer

        train_set, eval_set = sets
        config = SFTConfig(
            **setup.config, completion_only_loss=True, prediction_loss_only=True,
            eval_strategy="steps" if eval_set else "no", eval_steps=optim.save_steps,
            **_sampling_args(SFTConfig, group_by_length, ordered),
        )  # fmt: skip
        return completion_logits_trainer(SFTTrainer)(
            args=config, train_dataset=Dataset.from_list(train_set),
            eval_dataset=Dataset.from_list(eval_set) if eval_set else None, **setup.common,
        )  # fmt: skip

    def describe(tr: Any, sets: tuple[list, list], output: Any) -> dict[str, Any]:
        eval_loss = None
        if sets[1]:
            last = [r for r in tr.state.log_history if "eval_loss" in r]
            if last and last[-1].get("step") == tr.state.global_step:
                eval_loss = round(float(last[-1]["eval_loss"]), 4)
            else:
                eval_loss = round(float(tr.evaluate()["eval_loss"]), 4)
        eos = tr.processing_class.eos_token_id
        cut = sum(1 for ids in tr.train_dataset["input_ids"] if ids[-1] != eos)
        if cut and tr.is_world_process_zero():
            print(f"tokenskip: {cut} completions were cut at --cutoff {optim.cutoff}")
        return {
            "ratios": info["ratios"],
            "preset": preset.to_dict(),
            "data": {
                "path": str(data_dir),
                "sha256": settings["data_sha256"],
                "train_examples": len(sets[0]),
                "eval_examples": len(sets[1]),
                "per_ratio": info.get("per_ratio"),
                "original": (info.get("original") or {}).get("path"),
                "compressed": info.get("compressed"),
                "tell": info.get("tell"),
                "cut_completions": cut,
            },  # fmt: skip
            "hyperparameters": {
                k: v for k, v in settings.items() if k not in ("data", "data_sha256", "model")
            },
            "eval_loss": eval_loss,
        }

    done = run_lora("TokenSkip", out, settings, model=model, lora=lora, optim=optim, run=run,
                    info_name=ADAPTER_INFO, data=build_data, trainer=build_trainer, meta=describe,
                    card=model_card, compare=_RUN_KEYS)  # fmt: skip
    return TrainResult(done.out, done.global_step, done.train_loss, done.meta["eval_loss"], done.resumed_from,
                       model=done.model)  # fmt: skip
