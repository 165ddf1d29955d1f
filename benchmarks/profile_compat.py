"""Where compat mode's CPU time goes: load, score + prune, the model's share, and (``--cprofile``) the host
phases: tokenisation, chunking, word merge (with tiktoken counts), pruning (percentile + detokenise).

Scores the first N GSM8K CoTs in compat mode and prunes them to 5 ratios, one thread, CPU seconds (robust to
other jobs on a shared machine). Runs on older tokenskip checkouts too, for before/after pairs:

    python benchmarks/profile_compat.py --n 50 --size large
    PYTHONPATH=/path/to/old/checkout python benchmarks/profile_compat.py --n 50 --size large
    python benchmarks/profile_compat.py --n 200 --size small --cprofile
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import sys
import time
from pathlib import Path

RATIOS = (0.9, 0.8, 0.7, 0.6, 0.5)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=50)
    ap.add_argument("--size", choices=["small", "large"], default="large")
    ap.add_argument("--cprofile", action="store_true", help="break the host time down (adds overhead)")
    args = ap.parse_args()

    import torch

    import tokenskip
    from tokenskip.compressors import prune as _  # noqa: F401  (the package, on every version)
    from tokenskip.compressors.llmlingua2 import LLMLingua2Scorer
    from tokenskip.models import cache_dir

    prune_mod = sys.modules["tokenskip.compressors.prune"]
    many = getattr(prune_mod, "prune_compat_many", None)

    def prune_all(scored: list) -> list:
        if many is not None:  # what the CLI does now
            return [many(s, RATIOS) for s in scored]
        return [[prune_mod.prune(s, r) for r in RATIOS] for s in scored]

    torch.set_num_threads(1)
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
    c0 = time.process_time()
    scorer = LLMLingua2Scorer(str(ckpt), mode="compat", device="cpu")
    load = time.process_time() - c0
    prune_all(scorer.score(cots[:2]))  # warm-up
    model = [0.0]
    inner = scorer._forward

    def timed(*a):
        c = time.process_time()
        try:
            return inner(*a)
        finally:
            model[0] += time.process_time() - c

    scorer._forward = timed
    prof = cProfile.Profile(time.process_time) if args.cprofile else None
    c1 = time.process_time()
    if prof:
        prof.enable()
    prune_all(scorer.score(cots))
    if prof:
        prof.disable()
    work = time.process_time() - c1
    res = {
        "tokenskip": str(Path(tokenskip.__file__).resolve().parents[1]),
        "n": len(cots),
        "size": args.size,
        "load_cpu_s": round(load, 2),
        "score_prune_cpu_s": round(work, 2),
        "model_cpu_s": round(model[0], 2),
        "host_cpu_share": round(1 - model[0] / work, 4),
    }
    print(
        f"{len(cots)} CoTs x {len(RATIOS)} ratios, {args.size}: load {load:.2f} CPU s, score + prune {work:.2f} "
        f"CPU s (model {model[0]:.2f}, host {1 - model[0] / work:.1%})"
    )
    if prof:
        st = pstats.Stats(prof)

        def cum(*names: str) -> float:
            return sum(v[3] for k, v in st.stats.items() if k[2] in names)

        tokenize = cum("tokenize") + sum(
            v[3] for k, v in st.stats.items() if k[2] == "__call__" and "tokenization_utils_base" in k[0]
        )
        if "_encode_compat" in {k[2] for k in st.stats}:
            tokenize = cum("_encode_compat") - cum("_chunk_compat")
        phases = {
            "tokenisation": tokenize,
            "chunking": cum("_chunk_compat"),
            "word merge": cum("_merge_compat"),
            "  of which tiktoken counts": cum("_oai_counts"),
            "pruning (percentile + detokenise)": cum("prune_compat", "prune_compat_many")
            if many is None
            else cum("prune_compat_many"),
            "forward pass": cum("_forward"),
        }
        for name, v in phases.items():
            print(f"  {name:36s} {v:7.3f} CPU s")
        res["phases_cpu_s"] = {k.strip(): round(v, 3) for k, v in phases.items()}
    print(json.dumps(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
