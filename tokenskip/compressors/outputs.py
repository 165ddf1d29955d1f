"""The files of a ``tokenskip compress`` run folder: the settings check, the ratio files, merging and the summary."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from tokenskip.compressors.rows import iter_rows
from tokenskip.compressors.sharding import merge_shards, read_ids
from tokenskip.data.inputs import BadLineStats
from tokenskip.errors import UserError

CONFIG_FILE = "compress_config.json"
SUMMARY_FILE = "summary.json"


def ratio_file(out: Path, ratio: float) -> Path:
    from tokenskip.data.prompts import format_ratio

    return out / f"compressed_{format_ratio(ratio)}.jsonl"


def _check_config(out: Path, config: dict) -> None:
    """Refuse an ``out`` compressed with other settings (:mod:`tokenskip.data.resume`); record this run's."""
    from tokenskip.data.resume import check_run_file

    keys = ("scorer", "checkpoint", "mode", "model", "field", "force_tokens", "keep_digits", "drop_consecutive",
            "seed", "pick", "correct_field", "think_tags", "dtype")  # fmt: skip
    check_run_file(out / CONFIG_FILE, config, keys)


def compress_reading(folder: str | Path) -> dict:
    """How a run read its rows (field, pick, correct_field, think_tags), from the folder's settings file;
    empty for a folder without one (so that build-sft reads the originals and finds the thinking alike)."""
    path = Path(folder) / CONFIG_FILE
    try:
        config = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    except ValueError:
        raise UserError(f"{path}: not valid JSON") from None
    return {k: config[k] for k in ("field", "pick", "correct_field", "think_tags") if k in config}


def merge_parts(
    out: Path,
    parts: list[Path],
    ratios: list[float],
    input_path: Path,
    field: str,
    on_error: str,
    limit: int | None,
    spec: object = None,
) -> None:
    """Append the parts' rows to ``out``'s ratio files in input order (see :func:`sharding.merge_shards`)."""

    def row_ids() -> Iterator[str]:
        for index, row in enumerate(iter_rows(input_path, field, on_error, BadLineStats(), spec)):
            if limit is not None and index >= limit:
                return
            yield row.id

    files = [(ratio_file(out, r), [ratio_file(d, r) for d in parts]) for r in ratios]
    merge_shards(files, row_ids(), len(parts))


def _already_done(out: Path, ratios: list[float]) -> set[str]:
    return set.intersection(*(read_ids(ratio_file(out, r)) for r in ratios))


def summarize(out: Path, ratios: list[float], extra: dict) -> dict:
    """Mean achieved ratio (and mean |achieved - γ|) per γ, read back from the ratio files."""
    from tokenskip.data.jsonl import write_json_atomic
    from tokenskip.data.prompts import format_ratio

    per_ratio = {}
    for r in ratios:
        n = empty = thinking = unclosed = 0
        total = abs_err = orig = comp = 0.0
        with ratio_file(out, r).open("r", encoding="utf-8") as f:
            for line in f:
                if not line.strip():
                    continue
                row = json.loads(line)
                if row.get("thinking"):
                    thinking += 1
                    unclosed += not row.get("thinking_closed", True)
                if not row["original_tokens"]:
                    empty += 1
                    continue
                n += 1
                total += row["achieved_ratio"]
                abs_err += abs(row["achieved_ratio"] - r)
                orig += row["original_tokens"]
                comp += row["compressed_tokens"]
        per_ratio[format_ratio(r)] = {
            "ratio": r,
            "records": n + empty,
            "empty_cots": empty,
            "thinking_records": thinking,  # think tags found: only the thinking was pruned and counted
            "unclosed_thinking": unclosed,
            "mean_achieved_ratio": round(total / n, 4) if n else None,
            "mean_abs_error": round(abs_err / n, 4) if n else None,
            "token_weighted_ratio": round(comp / orig, 4) if orig else None,
            "original_tokens": int(orig),
            "compressed_tokens": int(comp),
        }
    summary = {**extra, "ratios": per_ratio}
    write_json_atomic(out / SUMMARY_FILE, summary)
    return summary
