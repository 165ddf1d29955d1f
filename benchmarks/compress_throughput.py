"""Compression throughput: tokenskip's llmlingua2 scorer vs the llmlingua loop as TokenSkip runs it.

TokenSkip (LLMLingua.py) builds a ``PromptCompressor`` per ratio and calls ``compress_prompt(cot, rate=γ)``
one CoT at a time. We score each CoT once (length-bucketed batches) and prune it to every ratio. Both run
the same checkpoint on the same first N GSM8K CoTs and ratios. Offline, the checkpoint is LLMLingua-2's
architecture with random weights (built once under ``$TOKENSKIP_CACHE/bench``; its tokenizer is trained on
the CoTs): fine for timing and for the identity check.

Prints both times, their ratio, the share of records whose compat output is identical to llmlingua's at
every ratio, and (exact mode) the mean |achieved - γ| in target-model tokens.

    python benchmarks/compress_throughput.py --n 200 --size small      # identity on 200 CoTs (fast)
    python benchmarks/compress_throughput.py --n 20 --size large       # timing, xlm-roberta-large body
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

from tokenskip.compressors.compress import assign_costs, count_tokens, parse_ratios  # noqa: E402
from tokenskip.compressors.prune import prune, prune_calibrated  # noqa: E402


def load_cots(path: Path, n: int) -> list[str]:
    out = []
    with path.open(encoding="utf-8") as f:
        for line in f:
            if line.strip():
                out.append(json.loads(line)["cot"])
            if len(out) >= n:
                break
    return out


def checkpoint(size: str, family: str, data: Path) -> Path:
    from tokenskip.compressors.testing import build_token_classifier
    from tokenskip.models import cache_dir

    root = cache_dir() / "bench" / f"{family}-{size}"
    name = "tiny-xlm-roberta-large" if family == "xlm-roberta" else "tiny-bert-base-multilingual-cased"
    folder = root / f"{name}-{size}"
    if not (folder / "config.json").exists():
        corpus = load_cots(data, 3000)
        print(f"building {size} {family} checkpoint with random weights in {folder} ...", file=sys.stderr)
        build_token_classifier(root, size=size, family=family, corpus=corpus, vocab_size=8000)
    return folder


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=200, help="number of GSM8K CoTs (first N of the file)")
    ap.add_argument("--size", choices=["small", "large"], default="small", help="checkpoint body size")
    ap.add_argument("--family", choices=["xlm-roberta", "bert"], default="xlm-roberta")
    ap.add_argument("--ratios", default="0.9,0.8,0.7,0.6,0.5")
    ap.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "gsm8k" / "train.jsonl"))
    ap.add_argument("--checkpoint", default=None, help="use this checkpoint instead of building one")
    ap.add_argument("--device", default="cpu")
    ap.add_argument(
        "--target", default="smollm2-135m", help="target model whose tokens define γ (exact mode)"
    )
    ap.add_argument("--llama3", action="store_true", help="TokenSkip's LLaMA-3 settings (Step, :, digits)")
    ap.add_argument("--skip-reference", action="store_true", help="time our scorer only")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    ap.add_argument("--json", default=None, help="also write the figures to this JSON file")
    args = ap.parse_args()

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    ratios = parse_ratios(args.ratios)
    cots = load_cots(Path(args.data), args.n)
    ckpt = Path(args.checkpoint) if args.checkpoint else checkpoint(args.size, args.family, Path(args.data))
    kwargs = (
        {"force_tokens": ["Step", ":"], "keep_digits": True, "drop_consecutive": True} if args.llama3 else {}
    )
    from tokenskip.compressors.llmlingua2 import LLMLingua2Scorer, LLMLinguaReference

    res: dict = {
        "n": len(cots),
        "size": args.size,
        "family": args.family,
        "ratios": ratios,
        "device": args.device,
        "threads": torch.get_num_threads(),
        "checkpoint": str(ckpt),
        "llama3_settings": args.llama3,
    }
    mean_tokens = None

    # ours, compat mode: load, score once, prune to every ratio
    t0 = time.perf_counter()
    scorer = LLMLingua2Scorer(str(ckpt), mode="compat", device=args.device, **kwargs)
    t1 = time.perf_counter()
    scored = scorer.score(cots)
    ours = [[prune(s, r) for r in ratios] for s in scored]
    t2 = time.perf_counter()
    res["ours_load_s"] = round(t1 - t0, 2)
    res["ours_compress_s"] = round(t2 - t1, 2)
    res["ours_total_s"] = round(t2 - t0, 2)
    print(
        f"ours (compat): load {t1 - t0:.1f}s, score+prune {len(cots)} CoTs x {len(ratios)} ratios {t2 - t1:.1f}s"
    )

    if not args.skip_reference:
        # the llmlingua loop as TokenSkip runs it: a PromptCompressor per ratio, one CoT per call
        ref = [[""] * len(ratios) for _ in cots]
        load = calls = 0.0
        for j, r in enumerate(ratios):
            a = time.perf_counter()
            compressor = LLMLinguaReference(str(ckpt), device=args.device, **kwargs)
            b = time.perf_counter()
            for i, c in enumerate(cots):
                ref[i][j] = compressor.compress(c, r)
            load += b - a
            calls += time.perf_counter() - b
            del compressor
        res["llmlingua_load_s"] = round(load, 2)
        res["llmlingua_compress_s"] = round(calls, 2)
        res["llmlingua_total_s"] = round(load + calls, 2)
        res["speedup_total"] = round((load + calls) / (t2 - t0), 2)
        res["speedup_compress"] = round(calls / (t2 - t1), 2)
        same = [all(o == x for o, x in zip(ours[i], ref[i], strict=True)) for i in range(len(cots))]
        res["identical_records_share"] = round(float(np.mean(same)), 4)
        res["identical_per_ratio"] = {
            str(r): round(float(np.mean([ours[i][j] == ref[i][j] for i in range(len(cots))])), 4)
            for j, r in enumerate(ratios)
        }
        print(
            f"llmlingua loop: load {load:.1f}s, compress_prompt calls {calls:.1f}s, total {load + calls:.1f}s"
        )
        print(f"speed-up: {res['speedup_total']}x end to end, {res['speedup_compress']}x compression only")
        print(
            f"compat identical to llmlingua: {res['identical_records_share']:.1%} of records at every ratio "
            f"(per ratio: {res['identical_per_ratio']})"
        )

    # exact mode: kept share of target-model tokens vs γ
    from tokenskip.models import load_tokenizer

    target = load_tokenizer(args.target)
    t3 = time.perf_counter()
    exact = LLMLingua2Scorer(str(ckpt), mode="exact", device=args.device, **kwargs)
    scored = exact.score(cots)
    assign_costs(target, scored)
    outs = prune_calibrated(scored, ratios, lambda ts: count_tokens(target, ts))
    t4 = time.perf_counter()
    original = np.array(count_tokens(target, cots), dtype=float)
    mean_tokens = float(original.mean())
    keep = original > 0
    res["exact_total_s"] = round(t4 - t3, 2)
    res["mean_cot_tokens"] = round(mean_tokens, 1)
    res["exact_mean_abs_error"] = {}
    res["exact_mean_achieved"] = {}
    for j, r in enumerate(ratios):
        achieved = np.array(count_tokens(target, [o[j] for o in outs]))[keep] / original[keep]
        res["exact_mean_abs_error"][str(r)] = round(float(np.abs(achieved - r).mean()), 4)
        res["exact_mean_achieved"][str(r)] = round(float(achieved.mean()), 4)
    print(
        f"exact mode ({args.target} tokens, mean {mean_tokens:.0f} per CoT): {t4 - t3:.1f}s; "
        f"mean achieved {res['exact_mean_achieved']}; mean |achieved - γ| {res['exact_mean_abs_error']}"
    )
    print(json.dumps(res))
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
