"""Controllability benchmark: does the trained model shorten its CoT when asked for a smaller γ?

Pipeline (embedded model, CPU; every stage resumes when re-run with the same --work folder):

1. the first ``--n_train`` GSM8K train problems (reference CoTs, calculator annotations ``<<...>>`` removed);
2. ``tokenskip compress`` with the offline ``selfinfo`` scorer at the training ratios, by default keeping
   every number (``--keep_digits 1``, TokenSkip's LLaMA-3 setting): plain surprisal drops the results of
   calculations, which are the most predictable tokens, and a model trained on that loses track;
3. ``tokenskip build-sft`` (default preset: γ wrapped in the model's EOS token); by default with
   ``--every_ratio 1``: every problem at every ratio, a denser mixture than TokenSkip's one drawn γ per
   problem (``--every_ratio 0``), to give the small model a direct contrast within the CPU budget;
4. ``tokenskip train`` (LoRA, rank 8, all linear layers, batches grouped by length);
5. greedy generation on ``--n_test`` held-out GSM8K test problems at each γ in ``--eval_ratios``
   (vLLM when installed: the adapter merged into a model folder, every prompt of every γ in one call; else
   transformers with the adapter merged in memory).

Prints, per γ: mean and median CoT tokens (target tokenizer, the text before "The final answer is:"), the
achieved ratio (mean CoT tokens / mean CoT tokens at γ = 1.0), how many hit ``--max_new_tokens``, and
accuracy; with ``--probe N`` also whether the model reads the digit at all (each compressed training target
scored under every γ's prompt: see ``ratio_sensitivity``).

    python benchmarks/controllability.py          # defaults: ~27 min on 2 idle CPU cores (128 LoRA steps ~21 min)
    python benchmarks/controllability.py --n_train 8 --n_test 4 --work /tmp/ctl-smoke   # smoke run
    # one GPU (bf16 LoRA, 1,000 steps of 16): the scale at which the 135M model reads γ (docs/training.md)
    python benchmarks/controllability.py --n_train 2000 --epochs 2 --learning_rate 1e-3 --batch_size 16 \
        --n_test 500 --backend hf --gen_batch_size 125 --probe 16
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import re
import statistics
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tokenskip.data.datasets import load_records  # noqa: E402
from tokenskip.data.jsonl import ResumableJsonlWriter, read_jsonl, write_json_atomic, write_jsonl_atomic  # noqa: E402
from tokenskip.data.prompts import format_prompt, format_ratio, split_cot  # noqa: E402
from tokenskip.grading import grade  # noqa: E402

CALC = re.compile(r"<<[^>]*>>")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train_file", default=str(REPO.parent / "shared/data/gsm8k/train.jsonl"))
    ap.add_argument("--test_file", default=str(REPO.parent / "shared/data/gsm8k/test.jsonl"))
    ap.add_argument(
        "--work", default="/tmp/tokenskip_controllability", help="folder for every stage's output"
    )
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--n_train", type=int, default=64, help="GSM8K train problems for the SFT mixture")
    ap.add_argument("--n_test", type=int, default=48, help="held-out GSM8K test problems generated per γ")
    ap.add_argument("--train_ratios", default="0.9,0.7,0.5", help="ratios compressed for training")
    ap.add_argument("--eval_ratios", default="1.0,0.9,0.7,0.5")
    ap.add_argument("--epochs", type=float, default=2.0)
    ap.add_argument("--learning_rate", type=float, default=5e-3)
    ap.add_argument("--lora_rank", type=int, default=8)
    ap.add_argument("--lora_alpha", type=int, default=16)
    ap.add_argument("--batch_size", type=int, default=4)
    ap.add_argument("--cutoff", type=int, default=384)
    ap.add_argument("--max_new_tokens", type=int, default=192)
    ap.add_argument(
        "--every_ratio",
        type=int,
        default=1,
        help="1: each training problem at every ratio (denser mixture); 0: TokenSkip's one drawn γ",
    )
    ap.add_argument(
        "--keep_digits",
        type=int,
        default=1,
        help="1: the scorer always keeps numbers (TokenSkip's LLaMA-3 setting); 0: plain surprisal",
    )
    ap.add_argument(
        "--force_tokens",
        default="",
        help="comma-separated words the scorer always keeps (e.g. '=,+,-,*,/' keeps equations whole)",
    )
    ap.add_argument(
        "--group_by_length", type=int, default=1, help="1: train batches of similar length (less padding)"
    )
    ap.add_argument(
        "--gen_batch_size",
        type=int,
        default=None,
        help="prompts per generate call (default: 8 for hf; for vllm every prompt of every γ in one call)",
    )
    ap.add_argument(
        "--backend",
        default="vllm" if importlib.util.find_spec("vllm") else "hf",
        choices=("hf", "vllm"),
        help="generation backend (hf merges the adapter into the weights: same outputs, faster)",
    )
    ap.add_argument(
        "--preset",
        default="default",
        help="prompt preset for training and generation (default: γ between the model's EOS tokens; "
        "tokenskip: the original release's prompt, γ between plain-text <|eot_id|>)",
    )
    ap.add_argument(
        "--probe",
        type=int,
        default=0,
        help="after generating, score N training problems' compressed targets under every γ prompt: does the "
        "model read the digit? (~11 s per problem on 2 CPU cores; on the GPU when there is one)",
    )
    ap.add_argument(
        "--tell",
        type=float,
        default=0.0,
        help="TELL ablation: K > 0 also trains with K general examples per task example and the anchor, for "
        "the same number of steps as the run without, and compares the two (work/no_tell, work/tell)",
    )
    ap.add_argument(
        "--general", default=None, help="TELL's general data (default: --train_file's uncompressed CoTs)"
    )
    ap.add_argument("--anchor_prompt", default="default", help="TELL's anchor (default: the built-in one)")
    ap.add_argument("--shuffle", default="extensive", choices=("extensive", "blocked"))
    ap.add_argument(
        "--max_steps", type=int, default=-1, help="LoRA steps (default: --epochs over the task data)"
    )
    ap.add_argument("--seed", type=int, default=42)
    return ap.parse_args(argv)


def ratio_sensitivity(
    model_dir: Path, sft_rows: list[dict], preset: Any, n: int
) -> dict[str, dict[str, float]]:
    """Mean summed NLL of each γ's training target under the prompt for every γ (rows: target γ, columns:
    prompt γ), over the first ``n`` problems that have every γ < 1. A model that reads the digit scores each
    target best under its own γ (a lower diagonal); equal columns mean it only sees whether a γ is there."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    by_id: dict[str, dict[float, dict]] = {}
    sft_rows = [row for row in sft_rows if row.get("ratio") is not None]  # TELL's general rows have no γ
    for row in sft_rows:
        by_id.setdefault(row["id"], {})[float(row["ratio"])] = row
    ratios = sorted({float(r["ratio"]) for r in sft_rows if float(r["ratio"]) < 1.0}, reverse=True)
    # the same problems whatever the mixture's order (a TELL mixture is shuffled): by id
    problems = [by_id[i] for i in sorted(by_id) if all(g in by_id[i] for g in ratios)][:n]
    if not problems:
        raise ValueError(f"no problem has a target at every γ in {ratios}: probe an every-ratio mixture")
    device = "cuda" if torch.cuda.is_available() else "cpu"  # fp32 either way: the columns differ by 0.1s
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).to(device).eval()
    nll = {(t, p): 0.0 for t in ratios for p in ratios}
    with torch.inference_mode():
        for rows in problems:
            question = rows[ratios[0]]["question"]  # one problem: the same question at every γ
            prompts = {p: tok(format_prompt(tok, question, p, preset), add_special_tokens=False).input_ids
                       for p in ratios}  # fmt: skip
            for t in ratios:
                target = tok(rows[t]["output"], add_special_tokens=False).input_ids
                for p, prompt in prompts.items():
                    ids = torch.tensor([prompt + target], device=device)
                    logits = model(ids).logits[0, len(prompt) - 1 : -1]
                    loss = torch.nn.functional.cross_entropy(logits, ids[0, len(prompt) :], reduction="sum")
                    nll[(t, p)] += loss.item() / len(problems)
    return {format_ratio(t): {format_ratio(p): round(nll[(t, p)], 2) for p in ratios} for t in ratios}


def diagonal_margin(sensitivity: dict[str, dict[str, float]]) -> dict[str, float]:
    """Per target γ: mean NLL of its target under the other γ prompts minus under its own (> 0: the model
    prefers the right γ), and their mean (``mean``)."""
    out = {}
    for t, row in sensitivity.items():
        others = [v for p, v in row.items() if p != t]
        out[t] = round(sum(others) / len(others) - row[t], 3) if others else 0.0
    out["mean"] = round(sum(out.values()) / len(out), 3) if out else 0.0
    return out


def sensitivity_table(
    sensitivity: dict[str, dict[str, float]], margin: dict[str, float], title: str, n: int
) -> str:
    """The probe's matrix as a markdown table, each row's diagonal margin beside it, and the mean margin."""
    cols = list(next(iter(sensitivity.values())))
    lines = [
        f"{title} (rows: target γ; columns: γ in the prompt; {n} problems)",
        "| target \\ prompt | " + " | ".join(cols) + " | diagonal margin |",
        "|---|" + "---|" * (len(cols) + 1),
    ]
    for t, row in sensitivity.items():
        lines.append(f"| {t} | " + " | ".join(f"{v:.1f}" for v in row.values()) + f" | {margin[t]:+.2f} |")
    lines.append(
        f"mean diagonal margin (other γ minus own γ; > 0: the model reads the digit): {margin['mean']:+.3f}"
    )
    return "\n".join(lines)


def stage(name: str, t0: float) -> None:
    print(f"[{time.time() - t0:7.1f}s] {name}", flush=True)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    t0 = time.time()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    # stages resume from --work: refuse to mix outputs of different settings
    keys = ("train_file", "model", "n_train", "train_ratios", "epochs", "learning_rate", "lora_rank",
            "lora_alpha", "batch_size", "cutoff", "seed", "every_ratio", "group_by_length", "keep_digits",
            "force_tokens", "preset", "tell", "general", "anchor_prompt", "shuffle", "max_steps")  # fmt: skip
    settings = {k: getattr(args, k) for k in keys}
    if (work / "bench_settings.json").exists():
        old = json.loads((work / "bench_settings.json").read_text())
        if any(old.get(k, v) != v for k, v in settings.items()):  # keys new since the run: their defaults
            sys.exit(f"controllability: {work} holds a run with other settings {old}; use another --work")
    write_json_atomic(work / "bench_settings.json", settings)
    try:
        from tokenskip.verbs.compress import compress
    except ImportError as e:  # the offline scorer ships with tokenskip.compressors
        sys.exit(f"controllability: tokenskip.compressors is not available ({e}); cannot compress CoTs")

    # 1. training problems: reference CoTs without the calculator annotations
    train_rows = work / "train_problems.jsonl"
    if not train_rows.exists():
        rows = []
        for _, row in read_jsonl(args.train_file):
            rows.append({"id": f"train-{len(rows)}", "question": row["question"],
                         "cot": CALC.sub("", row["cot"]), "answer": row["answer"]})  # fmt: skip
            if len(rows) >= args.n_train:
                break
        write_jsonl_atomic(train_rows, rows)
    stage(f"{args.n_train} training problems", t0)

    # 2. compress with the offline selfinfo scorer (target tokenizer = the model's)
    compress(input=str(train_rows), out=str(work / "compressed"), ratios=args.train_ratios, scorer="selfinfo",
             model=args.model, keep_digits=bool(args.keep_digits), force_tokens=[t for t in args.force_tokens.split(",") if t],
             progress=False)  # fmt: skip
    summary = json.loads((work / "compressed" / "summary.json").read_text())
    data_ratios = {k: v.get("mean_achieved_ratio") for k, v in summary.get("ratios", {}).items()}
    stage("compressed (selfinfo)", t0)

    if args.tell <= 0:  # one run, in --work itself
        report = run_variant(args, work, work, train_rows, 0.0, args.max_steps, t0)
    else:  # TELL ablation: the same task data and steps with and without TELL
        base = run_variant(args, work, work / "no_tell", train_rows, 0.0, args.max_steps, t0)
        tell = run_variant(args, work, work / "tell", train_rows, args.tell, base["train_steps"], t0)
        report = {"no_tell": base, "tell": tell}
        print_tell_table(base, tell, args)
    report.update(args=vars(args), train_data_achieved_ratio=data_ratios, wall_s=round(time.time() - t0, 1))
    print(f"training targets (selfinfo): mean achieved ratio per γ {data_ratios}")
    print(f"wall time: {time.time() - t0:.0f}s")
    write_json_atomic(work / "report.json", report)
    return report


def run_variant(
    args: argparse.Namespace, work: Path, vdir: Path, train_rows: Path, k: float, max_steps: int, t0: float
) -> dict:
    """Build the mixture (TELL with ``k`` > 0), train ``max_steps`` (-1: --epochs), generate, probe."""
    from tokenskip.data.adapters import ADAPTER_INFO, resolve_preset
    from tokenskip.inference import make_generator
    from tokenskip.inference.base import SamplingConfig
    from tokenskip.training.sft_folder import SFT_FILE
    from tokenskip.verbs.build_sft import build_sft
    from tokenskip.verbs.merge import merge
    from tokenskip.verbs.train import train

    name = "TELL" if k > 0 else "no TELL" if args.tell > 0 else ""
    tell = {"general": args.general or args.train_file, "general_ratio": k, "anchor_prompt": args.anchor_prompt,
            "shuffle": args.shuffle} if k > 0 else {}  # fmt: skip
    # 3. TokenSkip's mixture (by default every problem at every ratio: see --every_ratio), TELL's general data
    info = build_sft(str(train_rows), str(work / "compressed"), str(vdir / "sft"), model=args.model, seed=args.seed,
                     every_ratio=bool(args.every_ratio), preset=args.preset, **tell)  # fmt: skip
    stage(f"{name} SFT mixture {info['per_ratio']} tell={info.get('tell')}", t0)

    # 4. LoRA
    adapter = vdir / "adapter"
    if not (adapter / ADAPTER_INFO).exists():
        train(str(vdir / "sft"), str(adapter), model=args.model, epochs=args.epochs, max_steps=max_steps,
              learning_rate=args.learning_rate, lora_rank=args.lora_rank, lora_alpha=args.lora_alpha,
              batch_size=args.batch_size, grad_accum=1, cutoff=args.cutoff, eval_size=0, save_steps=25,
              logging_steps=5, seed=args.seed, progress="none", group_by_length=bool(args.group_by_length))  # fmt: skip
    meta = json.loads((adapter / ADAPTER_INFO).read_text())
    preset = resolve_preset(None, str(adapter))  # the trained prompt: delimiter and TELL's anchor

    def merged_model() -> Path:  # the adapter merged into a model folder, once (vLLM and the probe load it)
        merged = vdir / "merged"
        if not (merged / ADAPTER_INFO).exists():
            merge(str(adapter), str(merged), overwrite=True)
        return merged

    stage(f"{name} trained {meta['global_step']} steps, final loss {meta['train_loss']}", t0)

    # 5. generate on held-out questions at each γ (vllm: every γ's prompts in one continuous batch)
    records, _ = load_records(args.test_file, limit=args.n_test)
    ratios = [float(r) for r in args.eval_ratios.split(",")]
    if args.backend == "vllm":  # room for all prompts of all γ at once (vLLM's CPU default here is 1 GiB)
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "4")
    gen_batch = args.gen_batch_size or (8 if args.backend == "hf" else len(records) * len(ratios))
    if args.backend == "hf":  # the adapter merged in memory
        gen = make_generator(
            "hf", model=args.model, adapter=str(adapter), batch_size=gen_batch, merge_adapter=True
        )
    else:  # a merged model folder: vLLM's CPU LoRA kernels would halve its speed (same outputs up to fp32 rounding)
        gen = make_generator("vllm", model=str(merged_model()), batch_size=gen_batch, max_model_len=1024)
    sampling = SamplingConfig(max_new_tokens=args.max_new_tokens, temperature=0.0)
    paths = {ratio: vdir / f"gen_{format_ratio(ratio)}.jsonl" for ratio in ratios}
    with contextlib.ExitStack() as stack:
        writers = {ratio: stack.enter_context(ResumableJsonlWriter(path)) for ratio, path in paths.items()}
        todo = [(ratio, r) for ratio in ratios for r in records if r.id not in writers[ratio].done]
        for start in range(0, len(todo), gen_batch):
            batch = todo[start : start + gen_batch]
            prompts = [format_prompt(gen.tokenizer, r.question, ratio, preset) for ratio, r in batch]
            for (ratio, rec), g in zip(batch, gen.generate(prompts, sampling), strict=True):
                cot = split_cot(g.text)
                pred, ok = grade(g.text, rec.answer, rec.task)
                writers[ratio].write({"id": rec.id, "ratio": ratio, "output": g.text,
                                      "cot_tokens": gen.count_tokens(cot), "output_tokens": g.num_tokens,
                                      "finish_reason": g.finish_reason, "prediction": pred, "correct": ok})  # fmt: skip
        gen.close()
    stage(f"{name} generated {len(todo)} answers at γ = {args.eval_ratios}", t0)
    results = {}
    ids = {r.id for r in records}
    for ratio, path in paths.items():
        rows = [row for _, row in read_jsonl(path) if row["id"] in ids]
        results[ratio] = {
            "n": len(rows),
            "mean_cot_tokens": sum(r["cot_tokens"] for r in rows) / len(rows),
            "median_cot_tokens": statistics.median(r["cot_tokens"] for r in rows),
            "hit_max_new_tokens": sum(r["finish_reason"] == "length" for r in rows),
            "accuracy": sum(bool(r["correct"]) for r in rows) / len(rows),
        }

    full = results.get(1.0, {}).get("mean_cot_tokens")
    print(f"\n{name}".rstrip())
    print(
        f"| γ | mean CoT tokens | median | achieved ratio | hit max_new_tokens ({args.max_new_tokens}) | accuracy |"
    )
    print("|---|---|---|---|---|---|")
    for ratio, r in results.items():
        r["achieved_ratio"] = r["mean_cot_tokens"] / full if full else None
        achieved = f"{r['achieved_ratio']:.2f}" if full else "-"
        print(f"| {format_ratio(ratio)} | {r['mean_cot_tokens']:.1f} | {r['median_cot_tokens']:g} | {achieved} | "
              f"{r['hit_max_new_tokens']}/{r['n']} | {r['accuracy']:.1%} |")  # fmt: skip
    means = [results[r]["mean_cot_tokens"] for r in sorted(results, reverse=True)]
    monotone = all(a > b for a, b in zip(means, means[1:], strict=False))
    print(f"\nmean CoT tokens strictly decreasing from γ=1.0 to γ=0.5: {monotone}")
    sensitivity = margin = None
    if args.probe > 0:
        probe_sft = vdir / "sft"
        if not args.every_ratio:  # the drawn mixture has one γ per problem: probe every γ of the same data
            probe_sft = work / "probe_sft"
            build_sft(str(train_rows), str(work / "compressed"), str(probe_sft), model=args.model,
                      seed=args.seed, every_ratio=True, preset=args.preset)  # fmt: skip
        sft_rows = [row for _, row in read_jsonl(probe_sft / SFT_FILE)]
        sensitivity = ratio_sensitivity(merged_model(), sft_rows, preset, args.probe)
        margin = diagonal_margin(sensitivity)
        print(
            "\n"
            + sensitivity_table(
                sensitivity, margin, "ratio sensitivity: mean NLL of training targets", args.probe
            )
        )
    return {"ratio_sensitivity": sensitivity, "diagonal_margin": margin,
            "results": {format_ratio(k): v for k, v in results.items()}, "strictly_decreasing": monotone,
            "train_steps": meta["global_step"], "train_loss": meta["train_loss"], "sft_per_ratio": info["per_ratio"],
            "tell": info.get("tell")}  # fmt: skip


def print_tell_table(base: dict, tell: dict, args: argparse.Namespace) -> None:
    """TELL vs no TELL at equal steps: mean CoT tokens and achieved ratio per γ, accuracy, probe margin."""
    print(
        f"\nTELL ablation (K = {args.tell}, {args.shuffle}; {base['train_steps']} vs {tell['train_steps']} steps)"
    )
    print("| γ | CoT tokens, no TELL | CoT tokens, TELL | achieved ratio, no TELL | achieved ratio, TELL "
          "| accuracy, no TELL | accuracy, TELL |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    for g, b in base["results"].items():
        t = tell["results"][g]
        ratio = "{:.2f}".format
        print(f"| {g} | {b['mean_cot_tokens']:.1f} | {t['mean_cot_tokens']:.1f} | {ratio(b['achieved_ratio'] or 0)} | "
              f"{ratio(t['achieved_ratio'] or 0)} | {b['accuracy']:.1%} | {t['accuracy']:.1%} |")  # fmt: skip
    if base["diagonal_margin"] and tell["diagonal_margin"]:
        print(f"probe diagonal margin (mean NLL nats): no TELL {base['diagonal_margin']['mean']:+.3f}, "
              f"TELL {tell['diagonal_margin']['mean']:+.3f}")  # fmt: skip


if __name__ == "__main__":
    main()
