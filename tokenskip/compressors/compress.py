"""What ``tokenskip compress`` (:mod:`tokenskip.verbs.compress`) builds on: the ratios, and a scorer by name.

The ratio γ is the share of the CoT's *target-model* tokens that is kept (``--model``'s tokenizer):
``achieved_ratio = compressed_tokens / original_tokens``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tokenskip.compressors.finish import assign_costs, compress_block, count_tokens
from tokenskip.compressors.outputs import ratio_file
from tokenskip.compressors.registry import SCORERS, make_scorer, scorer_class
from tokenskip.compressors.sharding import parse_shard
from tokenskip.errors import UserError

__all__ = [
    "SCORERS",
    "assign_costs",
    "compress_block",
    "count_tokens",
    "make_scorer",
    "parse_ratios",
    "parse_shard",
    "ratio_file",
    "scorer_dtype",
]

DEFAULT_RATIOS = "0.9,0.8,0.7,0.6,0.5"


# ------------------------------------------------------------------------------------------- options


def parse_ratios(ratios: str | float | Sequence[float]) -> list[float]:
    """``"0.9,0.8"`` (or a list) -> ``[0.9, 0.8]``; every γ must be in (0, 1]."""
    from tokenskip.data.prompts import check_ratio

    if isinstance(ratios, int | float):
        items: list[Any] = [ratios]
    elif isinstance(ratios, str):
        items = [x.strip() for x in ratios.split(",") if x.strip()]
    else:
        items = list(ratios)
    if not items:
        raise UserError("--ratios is empty (example: --ratios 0.9,0.8,0.7,0.6,0.5)")
    out: list[float] = []
    for item in items:
        value = check_ratio(item)
        if value not in out:
            out.append(value)
    return out


def scorer_dtype(scorer: str, mode: str, dtype: str, device: str) -> str | None:
    """The dtype a scorer's model runs in (recorded in compress_config.json); None for model-free scorers
    and for the llmlingua reference (the package picks its own)."""
    if "dtype" not in scorer_class(scorer).options:
        return None
    if dtype == "tf32":
        return "tf32"
    if scorer == "llmlingua2" and mode == "compat" and dtype == "auto":
        return "float32"
    from tokenskip.models import dtype_name

    return dtype_name(dtype, device)
