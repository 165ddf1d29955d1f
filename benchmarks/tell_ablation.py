"""TELL at 0.5B: does a tenth of the task data, mixed with general data under an anchor, teach γ as well as all of it?

Three arms on the files of a finished ``tokenskip pipeline --recipe tokenskip-gsm8k`` run (``--run``), trained
with the full run's LoRA settings for the same number of optimizer steps:

* (a) ``tenth``: the first ``--fraction`` of the run's filtered CoTs, TokenSkip's mixture, plain;
* (b) ``tenth+tell``: the same CoTs with TELL: ``--general_ratio`` general examples per task example (the
  default general set: Self-Instruct's seed tasks), the anchor prompt, extensive shuffle;
* (c) ``full``: the run's own adapter (all of the task data, plain): its bench rows and probe are read from
  the run, not made again.

Each arm is benched at every γ of ``--ratios`` on the run's test questions (``tokenskip bench``, the run's
settings; the run's ``original`` records are reused, so ActRatio is against the same base-model row), and
probed (``benchmarks/probe.py``: the diagonal margin, > 0 when the model reads the digit). Every stage
resumes when re-run with the same ``--work``. Prints and writes ``WORK/results.md`` and ``results.json``.

    R=benchmarks/runs/tokenskip-qwen
    TOKENSKIP_DATA_DIR=../shared/data python benchmarks/tell_ablation.py --run $R --work benchmarks/runs/tell-qwen
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", required=True, help="a finished tokenskip-gsm8k pipeline folder")
    ap.add_argument("--work", required=True)
    ap.add_argument("--fraction", type=float, default=0.1, help="share of the task data for arms (a) and (b)")
    ap.add_argument(
        "--general_ratio", type=float, default=1.0, help="TELL's K: general examples per task one"
    )
    ap.add_argument("--general", default="self-instruct", help="TELL's general data (build-sft --general)")
    ap.add_argument("--ratios", default="1.0,0.9,0.8,0.7,0.6,0.5", help="γ benched per arm")
    ap.add_argument("--probe", type=int, default=16, help="problems probed per arm (0: no probe)")
    ap.add_argument("--arms", default="tenth,tenth+tell,full")
    return ap.parse_args(argv)


def read(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def tenth_file(kept: Path, out: Path, fraction: float) -> int:
    """The first ``fraction`` of ``kept``'s rows (at least one), written once; the same rows on every re-run."""
    lines = [x for x in kept.read_text(encoding="utf-8").split("\n") if x.strip()]
    n = max(1, math.ceil(fraction * len(lines)))
    text = "\n".join(lines[:n]) + "\n"
    if out.exists() and out.read_text(encoding="utf-8") != text:
        raise SystemExit(f"{out} holds other rows than the first {n} of {kept}: pick another --work")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    return n


def train_arm(
    arm: Path,
    data: Path,
    full: dict[str, Any],
    model: str,
    steps: int,
    overrides: dict[str, Any] | None = None,
) -> Path:
    """Train ``arm/adapter`` on ``data`` with the full run's LoRA settings (``overrides`` changes some) for
    ``steps`` optimizer steps; resumes from its last checkpoint."""
    from tokenskip.models import release_memory
    from tokenskip.verbs.train import train

    adapter = arm / "adapter"
    keys = ("lora_rank", "lora_alpha", "lora_dropout", "target_modules", "learning_rate", "batch_size", "grad_accum",
            "scheduler", "warmup", "weight_decay", "cutoff", "seed")  # fmt: skip
    settings = {**{k: full[k] for k in keys if k in full}, **(overrides or {})}
    train(data=str(data), out=str(adapter), model=model, max_steps=steps, save_steps=5, eval_size=0,
          dtype=full["dtype"], save_dtype=full.get("save_dtype"), progress="none", group_by_length=True,
          **settings)  # fmt: skip
    release_memory()  # the training peak goes back before the probe's and the bench's models load
    return adapter


def bench_arm(arm: Path, adapter: Path, run: Path, ratios: list[str]) -> list[dict[str, Any]]:
    """``tokenskip bench`` of the arm's adapter at every γ, with the run's bench settings (merged adapter when
    the run's was) and the run's ``original`` records copied in (the same base-model row)."""
    from tokenskip.verbs.bench import bench

    meta = read(run / "bench" / "run.json")
    out = arm / "bench"
    (out / "records").mkdir(parents=True, exist_ok=True)
    for name in ("original.jsonl", "original.b1.jsonl"):  # the same base-model row as the run's
        src, dst = run / "bench" / "records" / name, out / "records" / name
        if src.exists() and not dst.exists():
            shutil.copyfile(src, dst)
    return bench(out=str(out), adapter=str(adapter), model=meta["model"], backend=meta["backend"],
                 dtype=meta.get("dtype", "auto"), dataset=meta["dataset"], split=meta["split"], limit=meta["limit"],
                 methods="original," + ",".join(f"tokenskip@{g}" for g in ratios), max_new_tokens=meta["max_new_tokens"],
                 batch_size=meta["batch_size"], latency_samples=0,
                 merge_adapter=bool(meta.get("adapter_merged")))  # fmt: skip


def probe_arm(arm: Path, adapter: Path, run: Path, model: str, n: int) -> dict[str, Any]:
    import tempfile

    import probe

    out = arm / "probe.json"
    if (
        not out.exists()
    ):  # the merged model (~1 GB) and the probe's mixture live outside the committed run folder
        with tempfile.TemporaryDirectory(prefix="tokenskip-probe-") as work:
            probe.main(["--model", model, "--adapter", str(adapter), "--original", str(run / "kept.jsonl"),
                        "--compressed", str(run / "compressed"), "--n", str(n), "--work", work,
                        "--json", str(out)])  # fmt: skip
    return read(out)["diagonal_margin"]


def run_rows(run: Path) -> tuple[dict[str, Any], float | None]:
    """The finished run's own adapter as an arm: its bench rows by method and its probe margin (None when the
    run was not probed), read from the run's files instead of benched again."""
    done = (
        read(run / "bench" / "results.json")["runs"][0]["methods"]
        if (run / "bench" / "results.json").exists()
        else []
    )
    margin = read(run / "probe.json")["diagonal_margin"]["mean"] if (run / "probe.json").exists() else None
    return {r["method"]: r for r in done}, margin


def table(results: dict[str, dict[str, Any]], ratios: list[str]) -> str:
    head = "| arm | task examples | steps | " + " | ".join(f"γ={g} tokens / ActRatio / acc" for g in ratios)
    lines = [head + " | strictly decreasing | probe margin |", "|---" * (len(ratios) + 5) + "|"]
    for arm, r in results.items():
        cells = []
        for g in ratios:
            row = r["rows"].get(f"tokenskip@{g}")
            cells.append("–" if row is None else
                         f"{row['mean_cot_tokens']:.0f} / {row['act_ratio']:.2f} / {100 * row['accuracy']:.1f}%")  # fmt: skip
        margin = r.get("probe_margin")
        lines.append(f"| {arm} | {r['task_examples']} | {r['steps']} | " + " | ".join(cells)
                     + f" | {r['strictly_decreasing']} | {'–' if margin is None else f'{margin:+.3f}'} |")  # fmt: skip
    return "\n".join(lines)


def arm_result(
    task_examples: int, steps: int, rows: dict[str, Any], margin: float | None, ratios: list[str]
) -> dict[str, Any]:
    """One arm's line of the table: its bench rows, probe margin, and whether ActRatio falls strictly with γ."""
    acts = [rows[f"tokenskip@{g}"]["act_ratio"] for g in ratios if f"tokenskip@{g}" in rows]
    return {"task_examples": task_examples, "steps": steps, "rows": rows, "probe_margin": margin,
            "strictly_decreasing": all(x > y for x, y in zip(acts, acts[1:], strict=False))}  # fmt: skip


def write_results(work: Path, results: dict[str, dict[str, Any]], ratios: list[str], caption: str) -> None:
    """Print the arms' table with ``caption`` and write ``WORK/results.md`` and ``results.json``."""
    text = table(results, ratios) + "\n\n" + caption
    print("\n" + text)
    (work / "results.md").write_text(text + "\n", encoding="utf-8")
    (work / "results.json").write_text(json.dumps(results, indent=2, default=str) + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    a = parse_args(argv)
    from tokenskip.data.adapters import ADAPTER_INFO
    from tokenskip.verbs.build_sft import build_sft

    run, work = Path(a.run), Path(a.work)
    info = read(run / "adapter" / ADAPTER_INFO)
    full = (
        read(run / "adapter" / "train_config.json")
        if (run / "adapter" / "train_config.json").exists()
        else {}
    )
    full = {**info.get("settings", {}), **full}
    model, steps = read(run / "pipeline.json")["settings"]["model"], int(info["global_step"])
    ratios = [g.strip() for g in a.ratios.split(",") if g.strip()]
    n = tenth_file(run / "kept.jsonl", work / "tenth.jsonl", a.fraction)
    total = sum(1 for x in (run / "kept.jsonl").read_text(encoding="utf-8").split("\n") if x.strip())
    t0 = time.perf_counter()
    results: dict[str, dict[str, Any]] = {}
    for arm_name in [x.strip() for x in a.arms.split(",") if x.strip()]:
        arm = work / arm_name.replace("+", "-")
        print(f"\n== {arm_name} ({time.perf_counter() - t0:.0f}s)", flush=True)
        if arm_name == "full":  # the run's own adapter: its bench rows and probe, not benched again
            rows, margin = run_rows(run)
            results[arm_name] = arm_result(total, steps, rows, margin, ratios)
            continue
        else:
            tell = (
                {"general_ratio": a.general_ratio, "general": a.general, "shuffle": "extensive"}
                if "tell" in arm_name
                else {}
            )
            sft = arm / "sft"
            if not (sft / "sft_info.json").exists():
                build_sft(str(work / "tenth.jsonl"), str(run / "compressed"), str(sft), model=model, **tell)
            adapter = train_arm(arm, sft, full, model, steps)
        # the probe first: five minutes that say whether the arm reads the digit, before its bench's hour
        margin = probe_arm(arm, adapter, run, model, a.probe)["mean"] if a.probe else None
        print(f"{arm_name}: probe diagonal margin {margin}", flush=True)
        rows = {r["method"]: r for r in bench_arm(arm, adapter, run, ratios)}
        results[arm_name] = arm_result(n, steps, rows, margin, ratios)
    write_results(work, results, ratios,
        f"{model}; arms trained {steps} optimizer steps with the full run's LoRA settings; (a)/(b): the first "
        f"{n} of {total} filtered CoTs; (b): + K = {a.general_ratio:g} general examples ({a.general}) per task "
        f"example, anchor, extensive shuffle. Bench: {run}/bench's questions and settings. "
        f"Wall time {(time.perf_counter() - t0) / 60:.1f} min.",
    )  # fmt: skip
    return results


if __name__ == "__main__":
    main()
