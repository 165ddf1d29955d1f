"""Ray's overhead: ``tokenskip compress --engine ray`` against the single-process path on the same CoTs.

Compresses the first N GSM8K train CoTs (llmlingua2 exact mode, the random-weight checkpoint that
``compress_throughput.py`` builds, ``--size small``) to 5 ratios three times: the local engine in this
process (one torch thread, as an actor has: local against one actor is Ray's overhead), then on a local Ray
runtime of ``--cpus`` CPUs with 1 and with ``--cpus`` scorer actors. Prints wall seconds of each (and the
Ray runtime's start-up, counted apart) and the load average, and checks that every run wrote the same bytes.

    python benchmarks/ray_overhead.py --n 200 --size small
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from compress_throughput import DATA, checkpoint  # noqa: E402

from tokenskip.compressors.outputs import ratio_file  # noqa: E402
from tokenskip.verbs.compress import compress  # noqa: E402


def files(out: Path, ratios: list[float]) -> list[bytes]:
    return [ratio_file(out, r).read_bytes() for r in ratios]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=200, help="number of GSM8K train CoTs (first N)")
    ap.add_argument("--size", choices=["small", "large"], default="small", help="checkpoint body size")
    ap.add_argument("--data", default=str(DATA / "gsm8k" / "train.jsonl"))
    ap.add_argument("--cpus", type=int, default=2, help="CPUs of the local Ray runtime")
    ap.add_argument("--batch_size", type=int, default=64, help="CoTs per scored batch (both engines)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads of the local run (an actor has 1)")
    ap.add_argument("--json", default=None, help="also write the figures to this JSON file")
    args = ap.parse_args()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import ray
    import torch

    torch.set_num_threads(args.threads)
    ratios = [0.9, 0.8, 0.7, 0.6, 0.5]
    ckpt = checkpoint(args.size, "xlm-roberta", Path(args.data))
    work = Path(tempfile.mkdtemp(prefix="ray-overhead-"))
    try:
        src = work / "in.jsonl"
        with Path(args.data).open(encoding="utf-8") as f, src.open("w", encoding="utf-8") as g:
            for _, line in zip(range(args.n), f, strict=False):
                g.write(line)
        job = {"input": str(src), "ratios": ",".join(map(str, ratios)), "scorer": "llmlingua2",
               "checkpoint": str(ckpt), "batch_size": args.batch_size, "progress": False}  # fmt: skip
        t = time.perf_counter()
        compress(out=str(work / "local"), **job)
        figures = {"n": args.n, "size": args.size, "local_threads": args.threads}
        figures["local_s"] = round(time.perf_counter() - t, 2)
        reference = files(work / "local", ratios)

        t = time.perf_counter()
        ray.init(
            num_cpus=args.cpus, include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False
        )
        figures["ray_init_s"] = round(time.perf_counter() - t, 2)
        for actors in sorted({1, args.cpus}):
            out = work / f"ray{actors}"
            t = time.perf_counter()
            compress(out=str(out), engine="ray", ray_workers=actors, **job)
            figures[f"ray_{actors}_actors_s"] = round(time.perf_counter() - t, 2)
            figures[f"ray_{actors}_actors_identical"] = files(out, ratios) == reference
    finally:
        if ray.is_initialized():
            ray.shutdown()
        shutil.rmtree(work, ignore_errors=True)
    figures["load_average"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(figures, indent=1))
    for actors in sorted({1, args.cpus}):
        print(
            f"{args.n} CoTs x 5 ratios: local {figures['local_s']} s; Ray with {actors} actor(s) "
            f"{figures[f'ray_{actors}_actors_s']} s ({figures[f'ray_{actors}_actors_s'] / figures['local_s']:.2f}x)"
            f" + runtime start {figures['ray_init_s']} s; identical: {figures[f'ray_{actors}_actors_identical']}"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
