"""LoRA step time per dtype on this machine: which dtype should `tokenskip train` use here?

One optimizer step = forward + backward over ``--batch`` sequences of ``--tokens`` tokens (real text: CoTs
from a generate file, or the bundled sample's reference CoTs, concatenated and cut) + an AdamW step on the
LoRA weights (rank ``--rank``, alpha 2 x rank, all linear layers, like ``tokenskip train``). The first
``--warmup`` steps are not timed. Prints seconds per step and trained tokens per second, per dtype, and the
CPU's matrix features (AMX or not), since those decide it.

    python benchmarks/lora_step.py --model qwen2.5-coder-0.5b --text benchmarks/runs/tokenskip-qwen/gen.jsonl
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def cpu_flags() -> str:
    try:
        flags = next(
            line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags")
        ).split()
    except (OSError, StopIteration):
        return "unknown"
    wanted = ("amx_bf16", "amx_tile", "avx512_bf16", "avx512f")
    return ",".join(f for f in wanted if f in flags) or "none of amx/avx512"


def batch_ids(tokenizer, text_file: str, batch: int, tokens: int):
    import torch

    from tokenskip.data.jsonl import read_jsonl

    texts = [str(r.get("cot") or r.get("output") or "") for _, r in read_jsonl(text_file, on_error="skip")]
    ids: list[int] = []
    for t in texts:
        ids.extend(tokenizer(t, add_special_tokens=False)["input_ids"])
        if len(ids) >= batch * tokens:
            break
    if len(ids) < batch * tokens:
        ids = (ids * (batch * tokens // max(1, len(ids)) + 1))[: batch * tokens]
    return torch.tensor(ids[: batch * tokens]).view(batch, tokens)


def time_dtype(model_name: str, dtype: str, ids, steps: int, warmup: int, rank: int) -> float:
    import torch
    from peft import get_peft_model

    from tokenskip.models import load_model
    from tokenskip.training.runs import lora_config

    model, _ = load_model(model_name, dtype=dtype, device="cpu")
    model.train()
    model = get_peft_model(model, lora_config(rank, 2 * rank, 0.05, "all-linear"))
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    times = []
    for i in range(warmup + steps):
        start = time.perf_counter()
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if i >= warmup:
            times.append(time.perf_counter() - start)
    del model, opt
    return sum(times) / len(times)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--text", default=str(REPO / "tokenskip/data/samples/grade_school.jsonl"))
    ap.add_argument("--dtypes", default="float32,bfloat16")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--tokens", type=int, default=384)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--rank", type=int, default=8)
    args = ap.parse_args(argv)

    import torch

    from tokenskip.models import load_tokenizer

    ids = batch_ids(load_tokenizer(args.model), args.text, args.batch, args.tokens)
    result = {"model": args.model, "cpu": cpu_flags(), "threads": torch.get_num_threads(),
              "batch": args.batch, "tokens": args.tokens, "steps": args.steps, "dtypes": {}}  # fmt: skip
    for dtype in args.dtypes.split(","):
        s = time_dtype(args.model, dtype, ids, args.steps, args.warmup, args.rank)
        result["dtypes"][dtype] = {"s_per_step": s, "tokens_per_s": args.batch * args.tokens / s}
        print(f"{dtype}: {s:.1f} s/step, {args.batch * args.tokens / s:.0f} trained tokens/s", flush=True)
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
