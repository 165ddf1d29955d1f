#!/usr/bin/env bash
# The whole TokenSkip pipeline on the embedded model, CPU, offline: a smoke run that every stage works
# and hands its files to the next (the embedded model is a pipeline model, not a quality model).
# Re-running resumes: every stage skips what is already in runs/pipeline/.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
run=runs/pipeline
# 1. the model's own CoTs on the bundled grade-school problems
tokenskip generate --dataset sample --max-new-tokens 96 --out $run/gen.jsonl
# 2. keep short CoTs (the embedded model cannot do arithmetic, so correctness is not required here)
tokenskip filter --input $run/gen.jsonl --out $run/kept.jsonl --require-correct false --max-cot-tokens 400
# 3. score every CoT once and prune it to each ratio (offline scorer: self-information)
tokenskip compress --input $run/kept.jsonl --out $run/compressed --ratios 0.9,0.7,0.5
# 4. TokenSkip's mixture: question<EOS>γ<EOS> -> compressed CoT + final answer
tokenskip build-sft --original $run/kept.jsonl --compressed $run/compressed --out $run/sft
# 5. LoRA (TokenSkip's rank/alpha/targets; a few CPU-sized steps)
tokenskip train --data $run/sft --out $run/adapter --max-steps 4 --batch-size 4 --grad-accum 1 \
    --learning-rate 1e-3 --cutoff 512 --save-steps 2 --eval-size 0
# 6. merge the adapter into a plain model folder
tokenskip merge --adapter $run/adapter --out $run/merged --overwrite true
# 7. reasoning at γ = 1.0 and 0.5 with the adapter
for g in 1.0 0.5; do
  tokenskip infer --adapter $run/adapter --ratio $g --input tokenskip/data/samples/grade_school.jsonl --limit 4 \
      --max-new-tokens 96 --out $run/infer-$g.jsonl
done
tokenskip eval $run/gen.jsonl $run/infer-1.0.jsonl $run/infer-0.5.jsonl
