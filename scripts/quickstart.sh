#!/usr/bin/env bash
# The main job end to end on the embedded model, offline: set-up, generate CoTs, grade, report.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
out=runs/quickstart
tokenskip models
tokenskip generate --dataset sample --limit 8 --max-new-tokens 128 --batch-size 8 --out $out/generations.jsonl
tokenskip eval $out/generations.jsonl
