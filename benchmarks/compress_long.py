"""Long-CoT compression: throughput and ratio accuracy from 500 to 16,000 tokens per CoT.

Builds synthetic GSM8K-like CoTs of each length (target-model tokens; ``tokenskip.compressors.testing.
long_cot``), about ``--tokens-per-length`` tokens of CoTs per length, and compresses them to every ratio in
exact mode (score once, calibrated pruning, real target-token counts) with the llmlingua2 scorer (LLMLingua-2's
architecture with random weights, built like ``compress_throughput.py``'s) and/or the selfinfo scorer (a
causal LM, default the embedded smollm2-135m). Prints, per length: CoTs, tokens, seconds, target tokens per
second (wall and CPU seconds of this process, which other jobs on the machine hardly move), model windows
(and the widest one, which never exceeds the scorer's window), and the mean and
largest |achieved - γ|. Throughput should stay flat from 500 to 16k tokens: windows are scored in
length-bucketed batches and every host step is linear in the CoT's length.

    python benchmarks/compress_long.py --scorer llmlingua2 --size small
    python benchmarks/compress_long.py --scorer selfinfo
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from tokenskip.compressors.blocks import count_tokens, finish_block  # noqa: E402
from tokenskip.compressors.compress import parse_ratios  # noqa: E402
from tokenskip.compressors.testing import long_cot  # noqa: E402


def make(args: argparse.Namespace, which: str):
    if which == "llmlingua2":
        from compress_throughput import DATA, checkpoint

        from tokenskip.compressors.llmlingua2 import LLMLingua2Scorer

        ckpt = args.checkpoint or checkpoint(args.size, "xlm-roberta", DATA / "gsm8k" / "train.jsonl")
        return LLMLingua2Scorer(str(ckpt), device=args.device, dtype=args.dtype), 512
    from tokenskip.compressors.selfinfo import SelfInfoScorer

    scorer = SelfInfoScorer(args.lm, device=args.device, dtype=args.dtype)
    return scorer, scorer.window


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scorer", choices=["llmlingua2", "selfinfo", "both"], default="both")
    ap.add_argument("--size", choices=["small", "large"], default="small", help="llmlingua2 checkpoint body")
    ap.add_argument("--checkpoint", default=None, help="llmlingua2 checkpoint instead of the built one")
    ap.add_argument("--lm", default="smollm2-135m", help="selfinfo causal LM")
    ap.add_argument("--lengths", default="500,1000,2000,4000,8000,16000")
    ap.add_argument("--tokens-per-length", type=int, default=16000, help="CoT tokens compressed per length")
    ap.add_argument("--ratios", default="0.9,0.8,0.7,0.6,0.5")
    ap.add_argument("--target", default="smollm2-135m", help="target model whose tokens define γ")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()

    import torch

    from tokenskip.models import load_tokenizer

    if args.threads:
        torch.set_num_threads(args.threads)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    ratios = parse_ratios(args.ratios)
    target = load_tokenizer(args.target)
    lengths = [int(x) for x in args.lengths.split(",")]
    res: dict = {"threads": torch.get_num_threads(), "loadavg_1min_start": round(os.getloadavg()[0], 2)}
    print(f"{res['threads']} threads, load average {res['loadavg_1min_start']}, ratios {ratios}")
    for which in ["llmlingua2", "selfinfo"] if args.scorer == "both" else [args.scorer]:
        scorer, window = make(args, which)
        widths: list[int] = []
        inner = scorer._forward

        def forward(ids, mask, inner=inner, widths=widths):
            widths.append(int(ids.shape[1]))
            return inner(ids, mask)

        scorer._forward = forward
        finish_block(scorer.score(["Warm up: 2 + 2 = 4."]), target, ["Warm up: 2 + 2 = 4."], ratios)
        rows = []
        print(
            f"\n{which} ({scorer.describe().get('checkpoint') or scorer.describe().get('model')}), window {window}"
        )
        print(
            "  tokens/CoT   CoTs   tokens      s   tokens/s  tokens/cpu-s  batches  widest  mean|a-γ|  max|a-γ|"
        )
        for n in lengths:
            k = max(1, args.tokens_per_length // n)
            texts = [long_cot(n, lambda ts: count_tokens(target, ts), seed=n * 100 + i) for i in range(k)]
            widths.clear()
            t0, c0 = time.perf_counter(), time.process_time()
            out = finish_block(scorer.score(texts), target, texts, ratios)
            seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
            tokens = int(sum(out.original_tokens))
            achieved = np.array(out.compressed_tokens) / np.array(out.original_tokens)[:, None]
            err = np.abs(achieved - np.array(ratios)[None, :])
            row = {
                "tokens_per_cot": n,
                "cots": k,
                "tokens": tokens,
                "seconds": round(seconds, 2),
                "tokens_per_s": round(tokens / seconds, 1),
                "cpu_seconds": round(cpu, 2),
                "tokens_per_cpu_s": round(tokens / cpu, 1),
                "model_batches": len(widths),
                "widest_input": max(widths),
                "mean_abs_error": round(float(err.mean()), 4),
                "max_abs_error": round(float(err.max()), 4),
            }
            rows.append(row)
            print(
                f"  {n:>10} {k:>6} {tokens:>8} {seconds:>6.1f} {row['tokens_per_s']:>10.0f} "
                f"{row['tokens_per_cpu_s']:>13.0f} {len(widths):>8} "
                f"{max(widths):>7} {row['mean_abs_error']:>10.4f} {row['max_abs_error']:>9.4f}"
            )
        res[which] = {"window": window, "describe": scorer.describe(), "rows": rows}
        del scorer
    res["loadavg_1min_end"] = round(os.getloadavg()[0], 2)
    print(json.dumps(res))
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
