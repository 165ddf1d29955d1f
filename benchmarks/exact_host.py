"""Exact mode's host work per 1,000 CoTs, measured apart from the model.

Runs what ``tokenskip compress --scorer llmlingua2 --mode exact`` does per block of 512 CoTs (score, target
-token costs, calibrated pruning to every ratio, target-token counts of every output) on the first N GSM8K
CoTs, with the scorer's forward pass timed separately: host = total - model. The checkpoint is the small
random LLMLingua-2-architecture one (the model is cheap, so the host work shows), or ``--size large``.

Also runs on tokenskip versions before ``compress_block`` returned its counts (it then counts the outputs
as ``run_shard`` did), so a before/after pair comes from the same script:

    python benchmarks/exact_host.py --n 1000
    PYTHONPATH=/path/to/old/checkout python benchmarks/exact_host.py --n 1000
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--size", choices=["small", "large"], default="small")
    ap.add_argument("--ratios", default="0.9,0.8,0.7,0.6,0.5")
    ap.add_argument("--target", default="smollm2-135m")
    ap.add_argument("--block", type=int, default=512, help="CoTs per block (the CLI's --batch_size)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()

    import torch

    import tokenskip
    from tokenskip.compressors import compress as C
    from tokenskip.compressors.llmlingua2 import LLMLingua2Scorer
    from tokenskip.models import cache_dir, load_tokenizer

    if args.threads:
        torch.set_num_threads(args.threads)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    data = next(
        p / "shared" / "data" for p in Path(__file__).resolve().parents if (p / "shared" / "data").is_dir()
    )
    cots = []
    with (data / "gsm8k" / "train.jsonl").open(encoding="utf-8") as f:
        for line in f:
            cots.append(json.loads(line)["cot"])
            if len(cots) >= args.n:
                break
    ckpt = cache_dir() / "bench" / f"xlm-roberta-{args.size}" / f"tiny-xlm-roberta-large-{args.size}"
    if not (ckpt / "config.json").exists():
        sys.exit(f"{ckpt} missing: run benchmarks/compress_throughput.py --size {args.size} once to build it")
    ratios = C.parse_ratios(args.ratios)
    target = load_tokenizer(args.target)
    scorer = LLMLingua2Scorer(str(ckpt), mode="exact", device="cpu")
    model_s = [0.0, 0.0]  # wall, cpu
    inner = scorer._forward

    def timed(*a):
        t, c = time.perf_counter(), time.process_time()
        try:
            return inner(*a)
        finally:
            model_s[0] += time.perf_counter() - t
            model_s[1] += time.process_time() - c

    scorer._forward = timed
    C.compress_block(scorer, target, cots[:8], ratios)  # warm-up
    model_s[:] = [0.0, 0.0]
    t0, c0 = time.perf_counter(), time.process_time()
    for b in range(0, len(cots), args.block):
        block = cots[b : b + args.block]
        out = C.compress_block(scorer, target, block, ratios)
        if isinstance(out, list):  # older API: texts only; the CLI counted originals and outputs after
            C.count_tokens(target, block)
            for j in range(len(ratios)):
                C.count_tokens(target, [o[j] for o in out])
    total, total_cpu = time.perf_counter() - t0, time.process_time() - c0
    host, host_cpu = total - model_s[0], total_cpu - model_s[1]
    res = {
        "tokenskip": str(Path(tokenskip.__file__).resolve().parents[1]),
        "n": len(cots),
        "size": args.size,
        "threads": torch.get_num_threads(),
        "total_s": round(total, 2),
        "model_s": round(model_s[0], 2),
        "host_s": round(host, 2),
        "host_share": round(host / total, 4),
        "host_s_per_1000_cots": round(1000 * host / len(cots), 2),
        "total_cpu_s": round(total_cpu, 2),
        "model_cpu_s": round(model_s[1], 2),
        "host_cpu_s": round(host_cpu, 2),
        "host_cpu_share": round(host_cpu / total_cpu, 4),
        "host_cpu_s_per_1000_cots": round(1000 * host_cpu / len(cots), 2),
        "loadavg_1min": round(os.getloadavg()[0], 2),
    }
    print(
        f"{len(cots)} CoTs x {len(ratios)} ratios, {args.size} checkpoint: total {total:.1f}s, model "
        f"{model_s[0]:.1f}s, host {host:.1f}s ({host / total:.1%}) = {res['host_s_per_1000_cots']:.2f}s per "
        f"1,000 CoTs; cpu: total {total_cpu:.1f}s, host {host_cpu:.1f}s ({host_cpu / total_cpu:.1%}) = "
        f"{res['host_cpu_s_per_1000_cots']:.2f}s per 1,000 CoTs (load average {res['loadavg_1min']})"
    )
    print(json.dumps(res))
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
