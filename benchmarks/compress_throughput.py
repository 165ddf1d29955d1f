"""Compression throughput: tokenskip's llmlingua2 scorer vs the llmlingua loop as TokenSkip runs it.

TokenSkip (LLMLingua.py) builds a ``PromptCompressor`` per ratio and calls ``compress_prompt(cot, rate=γ)``
one CoT at a time. We score each CoT once (length-bucketed batches) and prune it to every ratio. Both run
the same checkpoint on the same first N GSM8K CoTs and ratios. Offline, the checkpoint is LLMLingua-2's
architecture with random weights (built once under ``$TOKENSKIP_CACHE/bench``; its tokenizer is trained on
the CoTs): fine for timing and for the identity check.

Prints, from one run: the checkpoint's forward pass alone over the same CoTs (length-sorted batches of 16,
the floor any implementation pays), ours in compat mode (load, score + prune, and how much of it is the
model), the llmlingua loop, their ratio, the share of records whose compat output is identical to
llmlingua's at every ratio, and exact mode (time, host share per 1,000 CoTs, mean |achieved - γ| in
target-model tokens). ``--dtype bfloat16`` adds the share of outputs identical to fp32's.

The llmlingua loop's outputs and times are cached (``$TOKENSKIP_CACHE/bench/reference``, keyed by
checkpoint, CoTs, ratios, settings and llmlingua's version), so a re-run times only ours and still checks
identity; ``--fresh-reference`` times the loop again.

    python benchmarks/compress_throughput.py --n 200 --size small      # identity on 200 CoTs (fast)
    python benchmarks/compress_throughput.py --n 50 --size large       # the issue's timing run
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
# shared/ sits next to the main checkout (../shared) or, from a worktree under wt/, two levels up
DATA = next((p / "shared" / "data" for p in REPO.parents if (p / "shared" / "data").is_dir()), REPO / "data")

from tokenskip.compressors.blocks import finish_block  # noqa: E402
from tokenskip.compressors.compress import parse_ratios  # noqa: E402
from tokenskip.compressors.prune import prune_compat_many  # noqa: E402


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


class Clock:
    """Wall-clock and process CPU seconds since the last :meth:`lap`. CPU seconds (all threads of this
    process) hardly move when other jobs load the machine; wall seconds do."""

    def __init__(self) -> None:
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def lap(self) -> tuple[float, float]:
        wall, cpu = time.perf_counter(), time.process_time()
        out = (wall - self.wall, cpu - self.cpu)
        self.wall, self.cpu = wall, cpu
        return out


class ForwardTimer:
    """Wraps a scorer's ``_forward`` and adds up the time spent in it (the model's share; synchronised
    on CUDA so that the time is the GPU's), and the real and padded tokens it was fed."""

    def __init__(self, scorer: Any) -> None:
        self.seconds = self.cpu = 0.0
        self.tokens = 0
        self.padded = 0
        inner: Callable = scorer._forward
        cuda = str(scorer.device).startswith("cuda")

        def timed(ids: Any, mask: Any) -> Any:
            import torch

            clock = Clock()
            try:
                out = inner(ids, mask)
                if cuda:
                    torch.cuda.synchronize(scorer.device)
                return out
            finally:
                wall, cpu = clock.lap()
                self.seconds += wall
                self.cpu += cpu
                self.tokens += int((mask != 0).sum())
                self.padded += int(ids.numel())

        scorer._forward = timed


def forward_only(ckpt: Path, cots: list[str], device: str, batch: int = 16) -> dict:
    """The checkpoint's forward pass alone over each CoT (llmlingua's input: 510-token windows), length-sorted
    batches of ``batch`` rows padded to their longest: what the model itself needs."""
    import torch
    from transformers import AutoModelForTokenClassification, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(ckpt))
    model = AutoModelForTokenClassification.from_pretrained(str(ckpt), dtype=torch.float32).to(device).eval()
    seqs = []
    for ids in tok(cots, add_special_tokens=False)["input_ids"]:
        for st in range(0, max(len(ids), 1), 510):
            seqs.append([tok.cls_token_id, *ids[st : st + 510], tok.sep_token_id])
    seqs.sort(key=len, reverse=True)
    clock = Clock()
    fed = 0
    with torch.inference_mode():
        for b in range(0, len(seqs), batch):
            rows = seqs[b : b + batch]
            longest = len(rows[0])
            ids = torch.full((len(rows), longest), tok.pad_token_id, dtype=torch.long)
            mask = torch.zeros((len(rows), longest), dtype=torch.long)
            for r, s in enumerate(rows):
                ids[r, : len(s)] = torch.tensor(s)
                mask[r, : len(s)] = 1
            model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.float().cpu()
            fed += ids.numel()
    wall, cpu = clock.lap()
    return {"s": round(wall, 2), "cpu_s": round(cpu, 2), "tokens": sum(len(s) for s in seqs), "fed": fed}


def reference_key(
    ckpt: Path, cots: list[str], ratios: list[float], kwargs: dict, device: str, threads: int
) -> str:
    from importlib.metadata import version

    h = hashlib.sha256()
    weights = sorted(ckpt.glob("*.safetensors"))
    stamp = [(p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in weights]
    h.update(json.dumps([str(ckpt), stamp, ratios, kwargs, device, threads, version("llmlingua")]).encode())
    for c in cots:
        h.update(c.encode() + b"\0")
    return h.hexdigest()[:20]


def run_reference(ckpt: Path, cots: list[str], ratios: list[float], kwargs: dict, device: str) -> dict:
    """The llmlingua loop as TokenSkip runs it: a PromptCompressor per ratio, one CoT per call."""
    from tokenskip.compressors.llmlingua2 import LLMLinguaReference

    ref = [[""] * len(ratios) for _ in cots]
    load = calls = load_cpu = calls_cpu = 0.0
    clock = Clock()
    for j, r in enumerate(ratios):
        clock.lap()
        compressor = LLMLinguaReference(str(ckpt), device=device, **kwargs)
        wall, cpu = clock.lap()
        load, load_cpu = load + wall, load_cpu + cpu
        for i, c in enumerate(cots):
            ref[i][j] = compressor.compress(c, r)
        wall, cpu = clock.lap()
        calls, calls_cpu = calls + wall, calls_cpu + cpu
        del compressor
    return {
        "outputs": ref,
        "load_s": round(load, 2),
        "compress_s": round(calls, 2),
        "load_cpu_s": round(load_cpu, 2),
        "compress_cpu_s": round(calls_cpu, 2),
        "measured_at": time.strftime("%Y-%m-%d %H:%M:%S"),
        "loadavg_1min": round(os.getloadavg()[0], 2),
    }


def cached_reference(args: Any, ckpt: Path, cots: list[str], ratios: list[float], kwargs: dict) -> dict:
    import torch

    from tokenskip.models import cache_dir

    key = reference_key(ckpt, cots, ratios, kwargs, args.device, torch.get_num_threads())
    path = cache_dir() / "bench" / "reference" / f"{key}.json"
    if path.exists() and not args.fresh_reference:
        ref = json.loads(path.read_text(encoding="utf-8"))
        ref["cached"] = str(path)
        return ref
    ref = run_reference(ckpt, cots, ratios, kwargs, args.device)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(ref, ensure_ascii=False), encoding="utf-8")
    os.replace(tmp, path)
    ref["cached"] = None
    return ref


def same_share(a: list[list[str]], b: list[list[str]]) -> float:
    return round(float(np.mean([x == y for x, y in zip(a, b, strict=True)])), 4) if a else 1.0


def run_compat(
    ckpt: Path, cots: list[str], ratios: list[float], kwargs: dict, device: str, dtype: str
) -> dict:
    from tokenskip.compressors.llmlingua2 import LLMLingua2Scorer

    clock = Clock()
    scorer = LLMLingua2Scorer(str(ckpt), mode="compat", device=device, dtype=dtype, **kwargs)
    timer = ForwardTimer(scorer)
    load, load_cpu = clock.lap()
    scored = scorer.score(cots)
    outs = [prune_compat_many(s, ratios) for s in scored]  # as the CLI does
    work, work_cpu = clock.lap()
    return {
        "outputs": outs,
        "load_s": round(load, 2),
        "compress_s": round(work, 2),
        "total_s": round(load + work, 2),
        "total_cpu_s": round(load_cpu + work_cpu, 2),
        "compress_cpu_s": round(work_cpu, 2),
        "model_s": round(timer.seconds, 2),
        "model_cpu_s": round(timer.cpu, 2),
        "non_model_share": round(1 - timer.seconds / work, 4) if work else 0.0,
        "non_model_cpu_share": round(1 - timer.cpu / work_cpu, 4) if work_cpu else 0.0,
        "padding_share": round(1 - timer.tokens / timer.padded, 4) if timer.padded else 0.0,
        "tokens_fed": timer.padded,
    }


def run_exact(
    ckpt: Path, cots: list[str], ratios: list[float], kwargs: dict, device: str, dtype: str, target: Any
) -> dict:
    from tokenskip.compressors.llmlingua2 import LLMLingua2Scorer

    clock = Clock()
    scorer = LLMLingua2Scorer(str(ckpt), mode="exact", device=device, dtype=dtype, **kwargs)
    timer = ForwardTimer(scorer)
    load, load_cpu = clock.lap()
    out = finish_block(scorer.score(cots), target, cots, ratios)  # what the CLI does, counts included
    work, work_cpu = clock.lap()
    host, host_cpu = work - timer.seconds, work_cpu - timer.cpu
    return {
        "outputs": out.texts,
        "original_tokens": out.original_tokens,
        "compressed_tokens": out.compressed_tokens,
        "load_s": round(load, 2),
        "compress_s": round(work, 2),
        "total_s": round(load + work, 2),
        "total_cpu_s": round(load_cpu + work_cpu, 2),
        "model_s": round(timer.seconds, 2),
        "host_s": round(host, 2),
        "host_cpu_s": round(host_cpu, 2),
        "host_share": round(host / work, 4) if work else 0.0,
        "host_s_per_1000_cots": round(1000 * host / max(len(cots), 1), 2),
        "host_cpu_s_per_1000_cots": round(1000 * host_cpu / max(len(cots), 1), 2),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=200, help="number of GSM8K CoTs (first N of the file)")
    ap.add_argument("--size", choices=["small", "large"], default="small", help="checkpoint body size")
    ap.add_argument("--family", choices=["xlm-roberta", "bert"], default="xlm-roberta")
    ap.add_argument("--ratios", default="0.9,0.8,0.7,0.6,0.5")
    ap.add_argument("--data", default=str(DATA / "gsm8k" / "train.jsonl"))
    ap.add_argument("--checkpoint", default=None, help="use this checkpoint instead of building one")
    ap.add_argument("--device", default="cpu")
    ap.add_argument(
        "--dtype", default="float32", help="scorer dtype of a second run (bfloat16: share identical)"
    )
    ap.add_argument(
        "--target", default="smollm2-135m", help="target model whose tokens define γ (exact mode)"
    )
    ap.add_argument("--llama3", action="store_true", help="TokenSkip's LLaMA-3 settings (Step, :, digits)")
    ap.add_argument("--skip-reference", action="store_true", help="time our scorer only")
    ap.add_argument("--fresh-reference", action="store_true", help="re-time the llmlingua loop (no cache)")
    ap.add_argument("--skip-forward", action="store_true", help="do not time the forward pass alone")
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
    res: dict = {
        "n": len(cots),
        "size": args.size,
        "family": args.family,
        "ratios": ratios,
        "device": args.device,
        "threads": torch.get_num_threads(),
        "checkpoint": str(ckpt),
        "llama3_settings": args.llama3,
        "loadavg_1min_start": round(os.getloadavg()[0], 2),
    }
    print(f"{len(cots)} CoTs x {len(ratios)} ratios, {args.size} {args.family}, {args.device}, "
          f"{res['threads']} threads, load average {res['loadavg_1min_start']}")  # fmt: skip

    if not args.skip_forward:
        fwd = forward_only(ckpt, cots, args.device)
        res["forward_only_s"], res["forward_only_cpu_s"] = fwd["s"], fwd["cpu_s"]
        res["forward_only_tokens_fed"] = fwd["fed"]
        res["real_tokens"] = fwd["tokens"]
        print(f"forward pass alone (fp32, length-sorted batches of 16, {fwd['tokens']} tokens, {fwd['fed']} "
              f"with padding): {fwd['s']:.1f}s (cpu {fwd['cpu_s']:.1f}s)")  # fmt: skip

    compat = run_compat(ckpt, cots, ratios, kwargs, args.device, "float32")
    for k in ("load_s", "compress_s", "total_s", "total_cpu_s", "compress_cpu_s", "model_s", "model_cpu_s",
              "non_model_share", "non_model_cpu_share", "padding_share", "tokens_fed"):  # fmt: skip
        res[f"ours_{k}"] = compat[k]
    print(
        f"ours (compat, fp32): load {compat['load_s']:.1f}s, score+prune {compat['compress_s']:.1f}s "
        f"(cpu {compat['compress_cpu_s']:.1f}s; model {compat['model_s']:.1f}s, non-model "
        f"{compat['non_model_share']:.1%} (cpu {compat['non_model_cpu_share']:.1%}), padding "
        f"{compat['padding_share']:.1%} of the {compat['tokens_fed']} tokens fed)"
    )
    if res.get("forward_only_s"):
        res["ours_over_forward_only"] = round(compat["compress_s"] / res["forward_only_s"], 2)
        res["ours_over_forward_only_cpu"] = round(compat["compress_cpu_s"] / res["forward_only_cpu_s"], 2)
        print(f"ours score+prune / forward alone: {res['ours_over_forward_only']}x "
              f"(cpu {res['ours_over_forward_only_cpu']}x)")  # fmt: skip

    if not args.skip_reference:
        ref = cached_reference(args, ckpt, cots, ratios, kwargs)
        load, calls = ref["load_s"], ref["compress_s"]
        res["llmlingua_load_s"] = load
        res["llmlingua_compress_s"] = calls
        res["llmlingua_total_s"] = round(load + calls, 2)
        res["llmlingua_total_cpu_s"] = round(ref["load_cpu_s"] + ref["compress_cpu_s"], 2)
        res["llmlingua_cached"] = ref["cached"]
        res["llmlingua_measured_at"] = ref["measured_at"]
        res["llmlingua_loadavg_1min"] = ref["loadavg_1min"]
        res["speedup_total"] = round((load + calls) / compat["total_s"], 2)
        res["speedup_compress"] = round(calls / compat["compress_s"], 2)
        res["speedup_total_cpu"] = round(res["llmlingua_total_cpu_s"] / compat["total_cpu_s"], 2)
        out, want = compat["outputs"], ref["outputs"]
        res["identical_records_share"] = same_share(out, want)
        res["identical_per_ratio"] = {
            str(r): same_share([[o[j]] for o in out], [[w[j]] for w in want]) for j, r in enumerate(ratios)
        }
        origin = f"cached, timed {ref['measured_at']}" if ref["cached"] else "timed now"
        print(f"llmlingua loop ({origin}, load average {ref['loadavg_1min']}): load {load:.1f}s, "
              f"compress_prompt calls {calls:.1f}s, total {load + calls:.1f}s "
              f"(cpu {res['llmlingua_total_cpu_s']:.1f}s)")  # fmt: skip
        print(f"speed-up: {res['speedup_total']}x end to end, {res['speedup_compress']}x compression only, "
              f"{res['speedup_total_cpu']}x in cpu seconds end to end")  # fmt: skip
        print(
            f"compat identical to llmlingua: {res['identical_records_share']:.1%} of records at every ratio "
            f"(per ratio: {res['identical_per_ratio']})"
        )

    from tokenskip.models import load_tokenizer

    target = load_tokenizer(args.target)
    exact = run_exact(ckpt, cots, ratios, kwargs, args.device, "float32", target)
    for k in ("load_s", "compress_s", "total_s", "total_cpu_s", "model_s", "host_s", "host_cpu_s", "host_share",
              "host_s_per_1000_cots", "host_cpu_s_per_1000_cots"):  # fmt: skip
        res[f"exact_{k}"] = exact[k]
    res["exact_over_compat"] = round(exact["total_s"] / compat["total_s"], 3)
    res["exact_over_compat_cpu"] = round(exact["total_cpu_s"] / compat["total_cpu_s"], 3)
    original = np.array(exact["original_tokens"], dtype=float)
    keep = original > 0
    res["mean_cot_tokens"] = round(float(original.mean()), 1)
    res["exact_mean_abs_error"], res["exact_mean_achieved"] = {}, {}
    for j, r in enumerate(ratios):
        achieved = np.array([c[j] for c in exact["compressed_tokens"]])[keep] / original[keep]
        res["exact_mean_abs_error"][str(r)] = round(float(np.abs(achieved - r).mean()), 4)
        res["exact_mean_achieved"][str(r)] = round(float(achieved.mean()), 4)
    print(
        f"exact mode (fp32): load {exact['load_s']:.1f}s, score+prune {exact['compress_s']:.1f}s "
        f"(model {exact['model_s']:.1f}s, host {exact['host_s']:.2f}s = {exact['host_share']:.1%}, "
        f"{exact['host_s_per_1000_cots']:.2f}s per 1,000 CoTs, cpu {exact['host_cpu_s_per_1000_cots']:.2f}s); "
        f"exact / compat total: {res['exact_over_compat']}x (cpu {res['exact_over_compat_cpu']}x)"
    )
    print(
        f"exact mode ({args.target} tokens, mean {res['mean_cot_tokens']:.0f} per CoT): mean achieved "
        f"{res['exact_mean_achieved']}; mean |achieved - γ| {res['exact_mean_abs_error']}"
    )

    if args.dtype not in ("float32", "fp32"):
        low_c = run_compat(ckpt, cots, ratios, kwargs, args.device, args.dtype)
        low_e = run_exact(ckpt, cots, ratios, kwargs, args.device, args.dtype, target)
        res[f"compat_{args.dtype}_compress_s"] = low_c["compress_s"]
        res[f"exact_{args.dtype}_compress_s"] = low_e["compress_s"]
        res[f"compat_{args.dtype}_identical_to_fp32"] = same_share(low_c["outputs"], compat["outputs"])
        res[f"exact_{args.dtype}_identical_to_fp32"] = same_share(low_e["outputs"], exact["outputs"])
        print(
            f"{args.dtype}: compat score+prune {low_c['compress_s']:.1f}s, identical to fp32 on "
            f"{res[f'compat_{args.dtype}_identical_to_fp32']:.1%} of records; exact {low_e['compress_s']:.1f}s, "
            f"identical on {res[f'exact_{args.dtype}_identical_to_fp32']:.1%}"
        )
    res["loadavg_1min_end"] = round(os.getloadavg()[0], 2)
    print(json.dumps(res))
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
