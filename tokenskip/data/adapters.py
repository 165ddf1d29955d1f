"""What a trained adapter records about its prompt: ``tokenskip_adapter.json`` and the preset to serve it with.

``tokenskip train`` writes ``tokenskip_adapter.json`` into the adapter folder (``tokenskip merge`` copies it
into the merged model folder). Every verb that builds prompts for such a model reads the preset from here,
so a model is always served with exactly the prompt it was trained on.
"""

from __future__ import annotations

import json
from pathlib import Path

from tokenskip.data.prompts import PromptPreset, get_preset
from tokenskip.errors import UserError

ADAPTER_INFO = "tokenskip_adapter.json"


def read_adapter_preset(folder: str | Path) -> PromptPreset | None:
    """The prompt preset recorded in ``folder/tokenskip_adapter.json`` (an adapter from ``tokenskip train``
    or a model merged by ``tokenskip merge``); None when the folder has no such file."""
    path = Path(folder) / ADAPTER_INFO
    if not path.is_file():
        return None
    try:
        return PromptPreset.from_dict(json.loads(path.read_text(encoding="utf-8"))["preset"])
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise UserError(f"{path}: unreadable preset ({type(e).__name__}: {str(e)[:120]})") from None


def resolve_preset(preset: str | None, adapter: str | None = None, model: str | None = None) -> PromptPreset:
    """The prompt preset to generate with: the one a TokenSkip model was trained with, when it says so.

    An adapter from ``tokenskip train`` (or a model folder from ``tokenskip merge``) records its preset,
    including a custom ``build-sft --delimiter``, in ``tokenskip_adapter.json``. ``preset=None`` uses that
    record (else ``default``); a preset named like the record also gets the record's exact fields; another
    name is used as asked, with a warning that it differs from training.
    """
    trained = None
    for folder in (adapter, model):
        if folder and Path(folder).is_dir():
            trained = read_adapter_preset(folder)
            if trained is not None:
                break
    if preset is None:
        return trained or get_preset("default")
    chosen = get_preset(preset)
    if trained is not None and trained.name == chosen.name:
        return trained
    if trained is not None:
        print(
            f"tokenskip: warning: --preset {preset} differs from the preset the model was trained with "
            f"({trained.name}, delimiter {trained.delimiter!r}); prompts will not match training"
        )
    return chosen


ADAPTER_WEIGHTS = ("adapter_config.json", "adapter_model.safetensors", "adapter_model.bin")


def adapter_sha256(folder: str | Path | None) -> str | None:
    """A content hash of a peft adapter folder (its config and weights), so a run records which adapter it
    used even when the folder is later retrained or moved; None without an adapter (or a folder without
    those files)."""
    if not folder:
        return None
    import hashlib

    h, found = hashlib.sha256(), False
    for name in ADAPTER_WEIGHTS:
        path = Path(folder) / name
        if path.is_file():
            found = True
            h.update(name.encode() + b"\0")
            with path.open("rb") as f:
                while block := f.read(1 << 22):
                    h.update(block)
    return h.hexdigest() if found else None
