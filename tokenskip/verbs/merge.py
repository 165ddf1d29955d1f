"""``tokenskip merge``: fold a LoRA adapter into its base model and save a plain safetensors model folder.

The merged folder loads anywhere a normal model does (``--model MERGED`` for every verb, vLLM, llama.cpp
conversion) and gives the same outputs as base + adapter. The adapter's ``tokenskip_adapter.json`` is
copied along, so the prompt preset and delimiter the model was trained with travel with it.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from tokenskip.data.adapters import ADAPTER_INFO
from tokenskip.data.jsonl import atomic_dir
from tokenskip.errors import UserError


def adapter_base_model(adapter: str | Path) -> str:
    """The base model an adapter was trained on (tokenskip's record first, then peft's config)."""
    d = Path(adapter)
    if not (d / "adapter_config.json").exists():
        raise UserError(f"--adapter {d}: not a peft adapter folder (no adapter_config.json)")
    if (d / ADAPTER_INFO).exists():
        base = json.loads((d / ADAPTER_INFO).read_text(encoding="utf-8")).get("base_model")
        if base:
            return str(base)
    base = json.loads((d / "adapter_config.json").read_text(encoding="utf-8")).get("base_model_name_or_path")
    if not base:
        raise UserError(f"--adapter {d}: no base model recorded; pass --model")
    return str(base)


def merge(
    adapter: str,
    out: str,
    model: str | None = None,
    dtype: str = "auto",
    device: str = "cpu",
    overwrite: bool = False,
    trust_remote_code: bool = False,
) -> dict[str, Any]:
    """Merge a LoRA adapter into its base model and save the result (safetensors + tokenizer).

    Args:
        adapter: peft adapter folder (output of ``tokenskip train``).
        out: output folder for the merged model.
        model: base model; default: the one recorded in the adapter.
        dtype: weights dtype of the merged model: ``auto`` (bf16 on a GPU or an AMX CPU, else fp32), ``float32``,
            ``bfloat16`` or ``float16``.
        device: where to merge (``cpu`` needs RAM for the full model in --dtype).
        overwrite: replace an existing --out folder.
        trust_remote_code: allow model code from the hub (off by default).
    """
    from tokenskip.inference.hf import load_adapter
    from tokenskip.models import load_model

    base = model or adapter_base_model(adapter)
    out_dir = Path(out)
    if out_dir.exists() and any(out_dir.iterdir()) and not overwrite:
        raise UserError(f"--out {out_dir} exists and is not empty; pass --overwrite to replace it")
    if out_dir.resolve() == Path(adapter).resolve():
        raise UserError("--out must differ from --adapter")
    base_model, tok = load_model(base, dtype=dtype, device=device, trust_remote_code=trust_remote_code)
    merged = load_adapter(base_model, adapter, merge=True)
    with atomic_dir(out_dir) as tmp:
        merged.save_pretrained(str(tmp), safe_serialization=True)
        tok.save_pretrained(str(tmp))
        info_src = Path(adapter) / ADAPTER_INFO
        if info_src.exists():
            shutil.copyfile(info_src, tmp / ADAPTER_INFO)
    print(f"tokenskip: merged {adapter} into {base}; saved to {out_dir}")
    return {"out": str(out_dir), "base_model": base, "adapter": str(adapter)}
