"""Generation throughput: the same prompts through the ``hf`` and ``vllm`` backends on the same model.

    python benchmarks/generation_throughput.py                      # 64 GSM8K prompts x 128 tokens, CPU
    python benchmarks/generation_throughput.py --prompts 16 --max-new-tokens 32 --out tp.json

Prompts are TokenSkip prompts (``format_prompt``) of the first N questions of ``--data`` (default: the
GSM8K test file beside the repo, else the bundled sample, repeated). Decoding is greedy; each backend
gets one warm-up call, then ONE timed ``generate`` call over all prompts (``hf`` splits it into batches
of ``--hf-batch-size``; vLLM schedules all of them continuously). Throughput = generated tokens (EOS
excluded, in the model's tokenizer) / wall seconds. The load average is printed with the figures: on a
shared CPU the numbers move with it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "gsm8k" / "test.jsonl"


def load_questions(path: Path | None, n: int) -> list[str]:
    from tokenskip.data.datasets import load_records

    source = str(path) if path is not None and path.exists() else "sample"
    records, _ = load_records(source, split="test", limit=n)
    questions = [r.question for r in records]
    while len(questions) < n:  # the bundled sample has 16: repeat it
        questions += questions[: n - len(questions)]
    return questions[:n]


def measure(backend: str, model: str, prompts: list[str], max_new_tokens: int, hf_batch_size: int) -> dict:
    from tokenskip.inference import SamplingConfig, make_generator

    kwargs = {"model": model, "batch_size": hf_batch_size}
    t0 = time.perf_counter()
    gen = make_generator(backend, **kwargs)
    load_s = time.perf_counter() - t0
    try:
        gen.generate(prompts[:2], SamplingConfig(max_new_tokens=4))  # warm-up
        cfg = SamplingConfig(max_new_tokens=max_new_tokens)
        load_before = os.getloadavg()[0]
        t0 = time.perf_counter()
        outs = gen.generate(prompts, cfg)
        wall = time.perf_counter() - t0
        load_after = os.getloadavg()[0]
    finally:
        gen.close()
    tokens = sum(g.num_tokens for g in outs)
    return {
        "backend": backend,
        "prompts": len(prompts),
        "generated_tokens": tokens,
        "wall_s": round(wall, 2),
        "tokens_per_s": round(tokens / wall, 1),
        "load_s": round(load_s, 1),
        "loadavg_1m_before_after": [round(load_before, 2), round(load_after, 2)],
        "finished_by_length": sum(g.finish_reason == "length" for g in outs),
        "texts": [g.text for g in outs],
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument(
        "--data", type=Path, default=DEFAULT_DATA, help="JSONL of questions (default: GSM8K test)"
    )
    ap.add_argument("--prompts", type=int, default=64)
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--hf-batch-size", type=int, default=8)
    ap.add_argument("--ratio", type=float, default=1.0, help="compression ratio written into the prompts")
    ap.add_argument("--backends", default="hf,vllm")
    ap.add_argument("--out", type=Path, help="also write the results as JSON")
    args = ap.parse_args()

    from tokenskip.data.prompts import format_prompt
    from tokenskip.models import load_tokenizer

    tok = load_tokenizer(args.model)
    prompts = [format_prompt(tok, q, args.ratio) for q in load_questions(args.data, args.prompts)]
    results = {}
    for backend in [b.strip() for b in args.backends.split(",") if b.strip()]:
        r = measure(backend, args.model, prompts, args.max_new_tokens, args.hf_batch_size)
        results[backend] = r
        print(
            f"{backend:>5}: {r['generated_tokens']} tokens in {r['wall_s']} s = {r['tokens_per_s']} tok/s "
            f"({r['prompts']} prompts, load avg {r['loadavg_1m_before_after']})",
            flush=True,
        )
    summary = {
        "model": args.model,
        "prompts": len(prompts),
        "max_new_tokens": args.max_new_tokens,
        "hf_batch_size": args.hf_batch_size,
        "cpu_count": os.cpu_count(),
        "machine": platform.processor() or platform.machine(),
        "results": {k: {kk: vv for kk, vv in v.items() if kk != "texts"} for k, v in results.items()},
    }
    if "hf" in results and "vllm" in results:
        speedup = results["vllm"]["tokens_per_s"] / results["hf"]["tokens_per_s"]
        same = sum(a == b for a, b in zip(results["hf"]["texts"], results["vllm"]["texts"], strict=True))
        summary["vllm_over_hf"] = round(speedup, 2)
        summary["identical_outputs"] = same
        print(f"vllm / hf = {speedup:.2f}x  ({same}/{len(prompts)} greedy outputs identical)")
    if args.out:
        args.out.write_text(json.dumps(summary, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    sys.exit(main())
