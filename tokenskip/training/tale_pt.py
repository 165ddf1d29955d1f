"""TALE-PT, token-budget awareness internalized by LoRA training (the verbs ``tokenskip tale train-sft|train-dpo``:
:mod:`tokenskip.verbs.tale_pt`).

TALE-PT (arXiv 2412.18547, section 4.2) trains on the traces of ``tokenskip tale search``:

* **SFT**: prompt = the plain TALE prompt (no budget), target = the model's own answer under its searched
  optimal budget (trl ``SFTTrainer``, loss on the completion only);
* **DPO**: same prompt, chosen = that answer, rejected = the vanilla CoT answer (trl ``DPOTrainer``; the
  reference model is the base model with the adapter switched off). Only questions whose optimal budget
  is below the vanilla length (``improved``) make a pair.

Both take the argument groups of ``tokenskip train`` (:class:`~tokenskip.args.LoRAArgs`,
:class:`~tokenskip.args.OptimArgs`, :class:`~tokenskip.args.RunArgs`) with TALE's defaults (LoRA r 8 /
alpha 32 on q_proj,v_proj, lr 1e-4, 2 epochs, batch 2 x 8) and run through the same path
(:func:`tokenskip.training.lora_run.run_lora`): model loading, LoRA, checkpoints in ``OUT/checkpoints``,
resuming from the last complete one (other settings on an interrupted run are refused), the adapter (peft
safetensors) and ``tale_adapter.json`` written into OUT last. Evaluate an adapter with
``tokenskip tale run --estimator none --adapter OUT`` (the plain prompt it was trained on).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from tokenskip.args import LoRAArgs, OptimArgs, RunArgs
from tokenskip.data.inputs import locate, read_rows
from tokenskip.errors import UserError
from tokenskip.inference.tale_budget import TaleTemplate, get_template
from tokenskip.training.lora_run import Setup, run_lora, settings_of

ADAPTER_INFO = "tale_adapter.json"

# TALE's reference settings (the groups' defaults for the TALE-PT verbs)
TALE_LORA = LoRAArgs(lora_alpha=32, lora_dropout=0.0, target_modules="q_proj,v_proj")
TALE_OPTIM = OptimArgs(learning_rate=1e-4, epochs=2.0, batch_size=2, grad_accum=8, scheduler="linear", warmup=0.0,
                       weight_decay=0.01, cutoff=1024, save_steps=50, logging_steps=1, seed=1024)  # fmt: skip


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
    kind: Literal["sft", "dpo"], traces: str, out: str, lora: LoRAArgs, optim: OptimArgs, run: RunArgs, model: str,
    template: str, **dpo: float,
) -> TalePTResult:  # fmt: skip
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
    settings = {"kind": kind, "traces": str(traces), "data_sha256": _digest(data), "model": model,
                "template": tmpl.name, **settings_of(lora, optim, run), **dpo}  # fmt: skip

    def build_data(tok: Any) -> Any:
        from datasets import Dataset

        if not getattr(tok, "chat_template", None):
            raise UserError(f"--model {model} has no chat template; TALE-PT trains conversational examples")
        return Dataset.from_list([{k: v for k, v in r.items() if k != "id"} for r in data])

    def build_trainer(dataset: Any, setup: Setup) -> Any:
        if kind == "sft":
            from trl import SFTConfig, SFTTrainer

            return SFTTrainer(args=SFTConfig(**setup.config, completion_only_loss=True), train_dataset=dataset,
                              **setup.common)  # fmt: skip
        from trl import DPOConfig, DPOTrainer

        return DPOTrainer(ref_model=None, args=DPOConfig(**setup.config, **dpo), train_dataset=dataset,
                          **setup.common)  # fmt: skip

    def describe(tr: Any, dataset: Any, output: Any) -> dict[str, Any]:
        history = tr.state.log_history
        return {
            "method": f"TALE-PT-{kind.upper()}",
            "template": asdict(tmpl),
            "prompt": "plain TALE prompt without a budget: " + json.dumps(tmpl.user_message("{question}")),
            "evaluate_with": f"tokenskip tale run --estimator none --template {tmpl.name} --model {model} "
            f"--adapter {out}",
            "traces": str(traces),
            "examples": len(data),
            "config": {k: v for k, v in settings.items() if k not in ("traces", "data_sha256", "model")},
            "last_log": history[-1] if history else None,
        }

    done = run_lora(f"TALE-PT {kind.upper()}", out, settings, model=model, lora=lora, optim=optim, run=run,
                    info_name=ADAPTER_INFO, data=build_data, trainer=build_trainer, meta=describe)  # fmt: skip
    return TalePTResult(
        done.out, done.global_step, done.train_loss, done.resumed_from, len(data), model=done.model
    )
