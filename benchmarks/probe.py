"""Does a trained adapter read γ? The ratio-sensitivity probe of benchmarks/controllability.py, for any adapter.

For the first ``--n`` training problems that have a compressed target at every γ < 1, each target's summed
NLL is measured under the prompt of every γ (rows: the target's γ, columns: the prompt's γ). A model that
reads the digit scores each target best under its own γ: the diagonal margin (mean NLL under the other γ
prompts minus under its own) is > 0. The same probe on the base model (``--adapter none``, prompts with the
adapter's preset) is the control: the margin the prompt's digit gives before any training.

The targets come from a pipeline run's files: ``--original`` (the filtered CoTs) and ``--compressed`` (the
``tokenskip compress`` folder); an every-γ mixture of them is built once under ``--work`` (TokenSkip's own
mixture has one γ per problem). The adapter is merged into a model folder under ``--work``.

    R=benchmarks/runs/tokenskip-qwen
    python benchmarks/probe.py --model qwen2.5-coder-0.5b --adapter $R/adapter --original $R/kept.jsonl \
        --compressed $R/compressed --n 16 --work /tmp/probe --json $R/probe.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, help="the base model the adapter was trained on")
    ap.add_argument(
        "--adapter", required=True, help="adapter folder (tokenskip train), or none: the base model"
    )
    ap.add_argument("--original", required=True, help="the CoTs the compressed targets were made from")
    ap.add_argument("--compressed", required=True, help="tokenskip compress output folder")
    ap.add_argument("--preset", default=None, help="prompt preset (default: the adapter's; else default)")
    ap.add_argument("--n", type=int, default=16, help="problems probed")
    ap.add_argument("--work", default="/tmp/tokenskip_probe")
    ap.add_argument("--json", default=None, help="also write the matrix and margins here")
    args = ap.parse_args(argv)

    from controllability import diagonal_margin, ratio_sensitivity, sensitivity_table

    from tokenskip.data.adapters import ADAPTER_INFO, read_adapter_preset, resolve_preset
    from tokenskip.data.jsonl import read_jsonl
    from tokenskip.models import resolve_model
    from tokenskip.training.sft_folder import SFT_FILE
    from tokenskip.verbs.build_sft import build_sft
    from tokenskip.verbs.merge import merge

    base = args.adapter.lower() == "none"
    work = Path(args.work)
    trained = None if base else read_adapter_preset(args.adapter)
    preset_name = args.preset or (trained.name if trained else "default")
    sft = work / f"every-ratio-{preset_name}"
    if not (sft / SFT_FILE).exists():
        build_sft(
            args.original, args.compressed, str(sft), model=args.model, every_ratio=True, preset=preset_name
        )
    rows = [r for _, r in read_jsonl(sft / SFT_FILE)]
    if base:
        model_dir = Path(resolve_model(args.model))
        preset = resolve_preset(preset_name, None)
    else:
        model_dir = work / "merged"
        if not (model_dir / ADAPTER_INFO).exists():
            merge(args.adapter, str(model_dir), dtype="float32", overwrite=True)
        preset = resolve_preset(args.preset, args.adapter)
    sensitivity = ratio_sensitivity(model_dir, rows, preset, args.n)
    margin = diagonal_margin(sensitivity)
    who = "base model" if base else args.adapter
    print(
        sensitivity_table(
            sensitivity, margin, f"ratio sensitivity of {who}: mean NLL of compressed targets", args.n
        )
    )
    result = {"model": args.model, "adapter": None if base else args.adapter, "preset": preset_name, "n": args.n,
              "ratio_sensitivity": sensitivity, "diagonal_margin": margin}  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return result


if __name__ == "__main__":
    main()
