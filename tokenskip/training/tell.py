"""TELL (arXiv 2404.00914): mix general data into the task mixture, and mark task examples with an anchor.

Fine-tuning a small model on a narrow task (here: "compress your CoT to γ") can wear away what it did
before. TELL keeps ``K`` general examples per task example in the mixture and puts one fixed, long
*anchor* instruction before every task prompt (and only before task prompts), so the task behaviour is
tied to the anchor and the general behaviour to its absence. The anchor becomes part of the prompt preset
(:attr:`~tokenskip.data.prompts.PromptPreset.anchor`): ``tokenskip train`` records it in
``tokenskip_adapter.json``, and infer / serve / bench put it before every prompt without a flag.

Pure logic, no I/O: the general rows, the anchor and the mixing order. Loading general data is
:func:`tokenskip.training.general.load_general`.
"""

from __future__ import annotations

import math
import random
from typing import Any, Literal

from tokenskip.errors import UserError

Shuffle = Literal["extensive", "blocked"]

# The default anchor: one fixed instruction, long enough to be unmistakable, written before every task prompt.
DEFAULT_ANCHOR = (
    "You are solving a math word problem in controllable-length mode. Think through the problem step by "
    "step, but write only as much of your reasoning as the requested compression ratio allows: when the "
    "prompt ends with a ratio between two delimiters, keep roughly that fraction of the tokens a full "
    "chain of thought would use, dropping filler words first and keeping every number, operator and "
    "intermediate result needed to reach the answer. Without a ratio, write the complete reasoning. "
    "Always finish with the final answer in the required format."
)


def resolve_anchor(value: str | None) -> str | None:
    """``--anchor_prompt``: ``default`` is :data:`DEFAULT_ANCHOR`; None, blank or ``none`` is no anchor; else
    the text itself."""
    if value is None or not value.strip() or value.strip().lower() == "none":
        return None
    return DEFAULT_ANCHOR if value.strip() == "default" else value


def general_row(index: int, question: str, user: str, output: str, source: str) -> dict[str, Any]:
    """One general example as a build-sft row (alpaca fields; no ratio, no anchor, ``kind: general``);
    ``question`` is the bare question (compared with the task questions), ``user`` the whole user message."""
    return {
        "id": f"general-{index}",
        "kind": "general",
        "ratio": None,
        "question": question,
        "answer": None,
        "instruction": "",
        "input": user,
        "output": output,
        "source": source,
    }


def general_count(task: int, k: float) -> int:
    """How many general examples ``K`` per task example means (rounded to the nearest whole example)."""
    if k < 0 or not math.isfinite(k):
        raise UserError(f"--general_ratio must be >= 0, got {k}")
    return int(round(task * k))


def pick_general(pool: list[dict[str, Any]], n: int, avoid: set[str], seed: int) -> list[dict[str, Any]]:
    """``n`` general rows drawn without replacement (seeded) from ``pool``, leaving out rows whose question is
    a task question (``avoid``), so the general part never restates a task example without its marker."""
    usable = [r for r in pool if r["question"].strip() not in avoid]
    if n > len(usable):
        raise UserError(
            f"--general has {len(usable)} usable examples ({len(pool) - len(usable)} overlap the task "
            f"questions) but --general_ratio asks for {n}; lower --general_ratio or give more general data"
        )
    return random.Random(seed).sample(usable, n)


def mix(
    task: list[dict[str, Any]], general: list[dict[str, Any]], shuffle: Shuffle, seed: int
) -> list[dict[str, Any]]:
    """The TELL mixture in training order.

    ``extensive``: every row shuffled together (seeded), so task examples spread uniformly through the file;
    ``blocked``: the general rows (seeded order) and then the task rows as one block, in their order.
    """
    if shuffle == "extensive":
        rows = [*task, *general]
        random.Random(seed).shuffle(rows)
        return rows
    if shuffle == "blocked":
        head = list(general)
        random.Random(seed).shuffle(head)
        return [*head, *task]
    raise UserError(f"--shuffle must be extensive or blocked, got {shuffle!r}")


def tell_summary(
    task: int, general: int, k: float, shuffle: Shuffle, anchor: str | None, source: str
) -> dict[str, Any]:
    """What ``sft_info.json`` records about the mixture (``tell``)."""
    return {"task_examples": task, "general_examples": general, "general_ratio": k, "shuffle": shuffle,
            "anchor": anchor, "general": source}  # fmt: skip
