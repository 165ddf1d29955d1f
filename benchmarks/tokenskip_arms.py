"""When the TokenSkip adapter does not follow γ: the arms the issue names, each trained like the run's adapter.

On the files of a finished ``tokenskip pipeline --recipe tokenskip-gsm8k`` run (``--run``), each arm changes one
thing against the run's adapter and keeps everything else (LoRA settings, dtype, the number of optimizer steps):

* ``every-ratio``: every problem at every γ (``build-sft --every_ratio true``): the same question seen with each
  γ and its own target, the contrast that makes the digit worth reading (what taught the 135M model γ on a GPU);
* ``lr-1e-3``: the run's own mixture at twice the learning rate (1e-3);
* ``every-ratio+lr-1e-3``: both.

Each arm is benched at every γ on the run's test questions (the run's bench settings; its ``original`` records
are reused, so ActRatio is against the same base-model row) and probed (``benchmarks/probe.py``: the diagonal
margin). Every stage resumes when re-run with the same ``--work``. Prints and writes ``WORK/results.md`` and
``results.json``, with the run's own adapter as the first row. TELL's anchor is the third arm the issue names:
``benchmarks/tell_ablation.py``.

    R=benchmarks/runs/tokenskip-qwen
    TOKENSKIP_DATA_DIR=../shared/data python benchmarks/tokenskip_arms.py --run $R --work benchmarks/runs/tokenskip-qwen-arms
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

# arm -> (build-sft options, train options); anything unnamed is the run's own
ARMS: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "every-ratio": ({"every_ratio": True}, {}),
    "lr-1e-3": ({}, {"learning_rate": 1e-3}),
    "every-ratio+lr-1e-3": ({"every_ratio": True}, {"learning_rate": 1e-3}),
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", required=True, help="a finished tokenskip-gsm8k pipeline folder")
    ap.add_argument("--work", required=True)
    ap.add_argument("--arms", default="every-ratio", help=f"comma list of: {', '.join(ARMS)}")
    ap.add_argument("--ratios", default="1.0,0.9,0.8,0.7,0.6,0.5", help="γ benched per arm")
    ap.add_argument("--probe", type=int, default=16, help="problems probed per arm (0: no probe)")
    ap.add_argument("--steps", type=int, default=None, help="optimizer steps (default: the run adapter's)")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    a = parse_args(argv)
    from tell_ablation import arm_result, bench_arm, probe_arm, read, run_rows, write_results

    from tokenskip.data.adapters import ADAPTER_INFO
    from tokenskip.verbs.build_sft import build_sft

    arms = [x.strip() for x in a.arms.split(",") if x.strip()]
    unknown = [x for x in arms if x not in ARMS]
    if unknown:
        raise SystemExit(f"--arms: unknown {', '.join(unknown)}; known: {', '.join(ARMS)}")
    run, work = Path(a.run), Path(a.work)
    info = read(run / "adapter" / ADAPTER_INFO)
    config = run / "adapter" / "train_config.json"
    full = {**info.get("settings", {}), **(read(config) if config.exists() else {})}
    model = read(run / "pipeline.json")["settings"]["model"]
    steps = a.steps or int(info["global_step"])
    ratios = [g.strip() for g in a.ratios.split(",") if g.strip()]
    t0 = time.perf_counter()
    results: dict[str, dict[str, Any]] = {}
    for name in ["run", *arms]:
        arm = work / name.replace("+", "-")
        print(f"\n== {name} ({time.perf_counter() - t0:.0f}s)", flush=True)
        if name == "run":  # the run's own adapter: its bench rows and probe, read from the run
            rows, margin = run_rows(run)
        else:
            from tell_ablation import train_arm

            sft_options, train_options = ARMS[name]
            sft = arm / "sft"
            if not (sft / "sft_info.json").exists():
                build_sft(
                    str(run / "kept.jsonl"), str(run / "compressed"), str(sft), model=model, **sft_options
                )
            adapter = train_arm(arm, sft, full, model, steps, train_options)
            # the probe first: five minutes that say whether the arm reads the digit, before its bench's hour
            margin = probe_arm(arm, adapter, run, model, a.probe)["mean"] if a.probe else None
            print(f"{name}: probe diagonal margin {margin}", flush=True)
            rows = {r["method"]: r for r in bench_arm(arm, adapter, run, ratios)}
        sft_info = read((run if name == "run" else arm) / "sft" / "sft_info.json")
        results[name] = arm_result(sft_info["examples"], steps, rows, margin, ratios)
    write_results(work, results, ratios,
        f"{model}; every arm trained {steps} optimizer steps with the run's LoRA settings except what its name "
        f"changes; bench: {run}/bench's questions and settings. Wall time {(time.perf_counter() - t0) / 60:.1f} min.",
    )  # fmt: skip
    return results


if __name__ == "__main__":
    main()
