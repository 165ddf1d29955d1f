#!/usr/bin/env bash
# The main job end to end on the embedded model, offline: set-up, then the TokenSkip pipeline
# (generate -> filter -> compress at several γ -> build-sft -> a short LoRA train -> infer at γ = 1.0 and 0.5),
# ending with one table. Re-running resumes: finished stages are skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
# the embedded model gets ~0% of GSM8K right, so the quickstart keeps every CoT, explicitly (a real run keeps
# only the correct ones: see the tokenskip-gsm8k recipe in the README)
python3 -m tokenskip.cli pipeline --out runs/quickstart --keep_incorrect true "$@"
