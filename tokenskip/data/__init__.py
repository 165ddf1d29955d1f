"""Datasets mapped to one record schema, the reader of user files, JSONL I/O, and prompt presets."""

from tokenskip.data.datasets import Record, load_records
from tokenskip.data.inputs import read_rows, require_fields
from tokenskip.data.jsonl import ResumableJsonlWriter, read_jsonl
from tokenskip.data.prompts import PRESETS, PromptPreset, format_prompt, format_target

__all__ = [
    "PRESETS",
    "PromptPreset",
    "Record",
    "ResumableJsonlWriter",
    "format_prompt",
    "format_target",
    "load_records",
    "read_jsonl",
    "read_rows",
    "require_fields",
]
