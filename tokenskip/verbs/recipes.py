"""Named settings for ``tokenskip pipeline --recipe NAME``: what each stage runs with.

A recipe is a :class:`Recipe`; every field can be overridden by the pipeline option of the same name. Two
ship with tokenskip:

* ``quickstart``: the embedded model on the 16 bundled problems, a few LoRA steps, ``infer`` at the end: a
  pipeline check that runs in minutes on a laptop CPU (what ``scripts/quickstart.sh`` runs).
* ``tokenskip-gsm8k``: the TokenSkip recipe on ``qwen2.5-coder-0.5b`` (a model that reasons: 26% of GSM8K
  test), on the CPU: its own CoTs on 3,000 GSM8K train questions, the correct ones of at most 500 CoT
  tokens, self-information compression to γ = 0.9 … 0.5, TokenSkip's mixture (one γ drawn per example, the
  original included), LoRA r = 8 / α = 16 on all linear layers, then ``bench`` on the first 200 GSM8K test
  questions. Hours of CPU, resumable: the run folder is meant to span sessions (README, Results).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from tokenskip.errors import UserError
from tokenskip.models import DEFAULT_MODEL


@dataclass(frozen=True)
class Recipe:
    """Every stage's settings (the pipeline's options of the same names override them)."""

    # generate
    model: str = DEFAULT_MODEL
    dataset: str = "sample"
    split: str = "train"
    limit: int | None = None
    backend: str = "hf"
    dtype: str = "auto"
    max_new_tokens: int = 96
    batch_size: int | None = None
    # filter
    max_cot_tokens: int = 400
    keep_incorrect: bool = False
    # compress
    ratios: str = "0.9,0.7,0.5"
    scorer: str = "selfinfo"
    # build-sft
    every_ratio: bool = False
    # train
    max_steps: int = 4
    epochs: float = 1.0
    learning_rate: float = 1e-3
    train_batch_size: int = 4
    grad_accum: int = 1
    cutoff: int = 512
    train_dtype: str = "auto"
    save_steps: int | None = None
    save_dtype: str | None = None
    # last stage: infer at a few γ (a check), or bench on a test set (a measurement)
    final: str = "infer"
    infer_ratios: str = "1.0,0.5"
    infer_limit: int = 4
    bench_dataset: str = "gsm8k"
    bench_split: str = "test"
    bench_limit: int = 200
    bench_methods: str = "original"
    bench_max_new_tokens: int = 1024
    bench_batch_size: int = 50
    latency_samples: int = 2
    merge_adapter: bool = False

    def check(self) -> Recipe:
        if self.final not in ("infer", "bench"):
            raise UserError(f"--final must be infer or bench, got {self.final!r}")
        if self.max_steps == 0 or self.max_steps < -1 or self.infer_limit < 1 or self.bench_limit < 1:
            raise UserError("--max_steps (-1 = by --epochs), --infer_limit and --bench_limit must be >= 1")
        if self.max_cot_tokens < 1:
            raise UserError(f"--max_cot_tokens must be >= 1, got {self.max_cot_tokens}")
        return self

    def with_overrides(self, overrides: dict[str, Any]) -> Recipe:
        known = {f.name for f in fields(self)}
        return replace(self, **{k: v for k, v in overrides.items() if k in known and v is not None})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


TOKENSKIP_RATIOS = "0.9,0.8,0.7,0.6,0.5"

RECIPES: dict[str, Recipe] = {
    "quickstart": Recipe(),
    "tokenskip-gsm8k": Recipe(
        model="qwen2.5-coder-0.5b",
        dataset="gsm8k",
        limit=3000,
        backend="vllm",
        # bf16 for generation: the 900 CoTs this run extends and the 9-method bench it is compared with were
        # generated in bf16 (on AMX CPUs bf16 is several times faster; on avx512_bf16-only CPUs fp32 was
        # 1.25x faster, docs/training.md), and one run never mixes dtypes.
        dtype="bfloat16",
        max_new_tokens=512,
        batch_size=64,
        max_cot_tokens=500,
        ratios=TOKENSKIP_RATIOS,
        scorer="selfinfo",
        max_steps=-1,
        epochs=2.0,
        learning_rate=5e-4,
        train_batch_size=4,
        grad_accum=4,
        cutoff=768,
        # LoRA training dtype as measured by benchmarks/lora_step.py on the machine that ran it (avx512_bf16, no
        # AMX): 14.5 s per step of 4 x 384 tokens in bf16 against 26.5 s in fp32 (docs/training.md); on another
        # CPU measure first (`--train_dtype` overrides, and the run records it)
        train_dtype="bfloat16",
        save_steps=5,
        # the released adapter: bf16 on disk (8.8 MB instead of 17.6; the bench runs this file)
        save_dtype="bfloat16",
        final="bench",
        # the trained adapter at every γ, and truncation at every γ beside it (the paper's baseline at the same
        # CoT tokens); the 9 prompt and budget methods are in benchmarks/runs/bench-qwen, same questions
        bench_methods="original,"
        + ",".join(f"tokenskip@{g}" for g in ("1.0", *TOKENSKIP_RATIOS.split(",")))
        + ","
        + ",".join(f"truncation@{g}" for g in TOKENSKIP_RATIOS.split(",")),
        # the paper's latency is per sample at batch 1: 5 questions per method (2 in the 9-method bench)
        latency_samples=5,
        # the adapter merged into the weights for the tokenskip@γ rows: vLLM's CPU LoRA kernels ran this model
        # about 2x slower than the base (bench of 4 questions, docs/training.md), which would hide the speedup
        # that fewer tokens give; a merged model runs at the base model's speed, as a user deploys it
        merge_adapter=True,
    ),
}


def get_recipe(name: str) -> Recipe:
    if name not in RECIPES:
        raise UserError(f"unknown --recipe {name!r}; known: {', '.join(RECIPES)}")
    return RECIPES[name]
