"""``tokenskip tale train-sft|train-dpo``: TALE-PT, token-budget awareness internalized by LoRA training on the
traces of ``tokenskip tale search`` (the data and the run: :mod:`tokenskip.training.tale_pt`)."""

from __future__ import annotations

from dataclasses import replace

from tokenskip.args import LoRAArgs, OptimArgs, RunArgs, flat_options
from tokenskip.errors import UserError
from tokenskip.models import DEFAULT_MODEL
from tokenskip.training.tale_pt import TALE_LORA, TALE_OPTIM, TalePTResult, _train


@flat_options(lora=TALE_LORA, optim=TALE_OPTIM, run=RunArgs())
def train_sft(
    traces: str, out: str, lora: LoRAArgs, optim: OptimArgs, run: RunArgs, model: str = DEFAULT_MODEL,
    template: str = "tale",
) -> TalePTResult:  # fmt: skip
    """TALE-PT-SFT: LoRA SFT on the answers under each question's searched optimal budget (trl SFTTrainer).

    Writes into OUT: adapter_model.safetensors + adapter_config.json (peft), tale_adapter.json (base
    model, prompt, config, losses; written last), train_log.jsonl and, while running, checkpoints/.
    Re-running after an interruption resumes from the last complete checkpoint.

    Args:
        traces: output folder (or traces.jsonl) of `tokenskip tale search`.
        out: output folder for the adapter.
        model: base model (alias, Hugging Face id or local folder); the one the search ran with.
        template: TALE prompt template (tale or tale-boxed); the plain prompt, without a budget, is trained.
    """
    return _train("sft", traces, out, lora, optim, run, model, template)


@flat_options(
    lora=TALE_LORA, optim=replace(TALE_OPTIM, learning_rate=3e-5, weight_decay=0.001), run=RunArgs()
)
def train_dpo(
    traces: str, out: str, lora: LoRAArgs, optim: OptimArgs, run: RunArgs, model: str = DEFAULT_MODEL,
    template: str = "tale", beta: float = 0.5, max_grad_norm: float = 5.0,
) -> TalePTResult:  # fmt: skip
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
    """
    if beta <= 0:
        raise UserError(f"--beta must be > 0, got {beta}")
    return _train(
        "dpo", traces, out, lora, optim, run, model, template, beta=beta, max_grad_norm=max_grad_norm
    )
