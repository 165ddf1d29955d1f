import os
import subprocess
import sys
from pathlib import Path

import pytest

# Tests never reach a model hub: fail fast instead of retrying for a minute.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# `--dtype auto` is bf16 on CPUs with AMX: the greedy fixtures were recorded in fp32, so the suite pins it
os.environ.setdefault("TOKENSKIP_CPU_DTYPE", "float32")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


def run_cli(*args: str, timeout: float = 600, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run `tokenskip ARGS` in a subprocess (as a user would) and capture its output."""
    return subprocess.run(
        [sys.executable, "-m", "tokenskip.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        cwd=REPO,
    )


@pytest.fixture(scope="session")
def embedded_model_dir() -> str:
    """The embedded model's safetensors folder (converted once into the user cache)."""
    from tokenskip.models import resolve_model

    return resolve_model("smollm2-135m")


@pytest.fixture(scope="session")
def embedded_tokenizer(embedded_model_dir):
    from tokenskip.models import load_tokenizer

    return load_tokenizer("smollm2-135m")
