"""Reading a ``tokenskip build-sft`` folder back: its info, its exact prompt preset, its rows."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from tokenskip.data.jsonl import OnError, read_jsonl
from tokenskip.data.prompts import PromptPreset, get_preset
from tokenskip.errors import UserError

SFT_FILE = "sft.jsonl"
INFO_FILE = "sft_info.json"


def user_text(row: dict[str, Any]) -> str:
    """The user message of an alpaca row, as LLaMA-Factory joins it (``instruction\\ninput``)."""
    return f"{row['instruction']}\n{row['input']}" if row["instruction"] else row["input"]


def read_sft_info(folder: str | Path) -> dict[str, Any]:
    """``sft_info.json`` of a build-sft folder, with a UserError if the folder is not one."""
    d = Path(folder)
    if d.is_file() and d.name == SFT_FILE:
        d = d.parent
    info_path = d / INFO_FILE
    if not (d / SFT_FILE).exists() or not info_path.exists():
        raise UserError(
            f"--data {folder}: not a `tokenskip build-sft` folder (needs {SFT_FILE} and {INFO_FILE})"
        )
    try:
        return json.loads(info_path.read_text(encoding="utf-8"))
    except ValueError as e:
        raise UserError(f"{info_path}: not valid JSON ({str(e)[:100]})") from None


def preset_from_info(info: dict[str, Any]) -> PromptPreset:
    """The exact prompt preset a build-sft folder was written with (every field, TELL's anchor and the think
    tags included; folders written before ``preset_fields`` existed: the named preset and the recorded fields)."""
    if isinstance(info.get("preset_fields"), dict):
        return PromptPreset.from_dict(info["preset_fields"])
    return dataclasses.replace(
        get_preset(info["preset"]),
        delimiter=info["delimiter"],
        instruction=info["instruction"],
        system=info["system"],
        answer_template=info["answer_template"],
    )


def load_sft(folder: str | Path, on_error: OnError = "raise") -> Any:
    """A build-sft folder as a ``datasets.Dataset`` (rows of ``sft.jsonl``)."""
    import datasets

    read_sft_info(folder)
    d = Path(folder)
    d = d.parent if d.is_file() else d
    rows = [row for _, row in read_jsonl(d / SFT_FILE, on_error=on_error)]
    return datasets.Dataset.from_list(rows)
