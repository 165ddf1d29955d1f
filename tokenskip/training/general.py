"""TELL's general data (``build-sft --general``): plain examples without ratio marker or anchor.

The default, ``self-instruct`` (:data:`DEFAULT_GENERAL`), is real instruction data outside the task: the
human-written seed tasks of Self-Instruct (Wang et al. 2023; Apache-2.0), bundled in
``tokenskip/data/samples/self_instruct_seed.jsonl`` less the six that solve a math problem, so that no
untagged general example is a math word problem worked step by step (:data:`GENERAL_SOURCES` records the
source, commit, licence and what was left out). GSM8K reference CoTs, the former default, are the task's
own domain.

Accepted sources, detected per row:

* a named general set (:data:`GENERAL_SOURCES`: ``self-instruct``);
* question / CoT / answer rows (``sample``, ``gsm8k``, ``math500``, a pre-split GSM8K or MATH file, any file
  :func:`tokenskip.data.datasets.load_records` reads with a CoT): user message = the preset's instruction and
  the question, output = the uncompressed CoT (GSM8K's ``<<...>>`` calculator notes removed) and the
  preset's answer sentence. ``gsm8k`` (train split) reads GSM8K's own reference CoTs: offline from
  ``$TOKENSKIP_DATA_DIR/gsm8k/train.jsonl``, else from the hub;
* alpaca rows (``instruction``, optional ``input``, ``output``): user = instruction (+ newline + input);
* sharegpt rows (``conversations`` with ``from``/``value``, or ``messages`` with ``role``/``content``): the
  first user turn and the assistant turn after it;
* a hub dataset id (``owner/name``, needs network) whose rows have one of these shapes.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

from tokenskip.data.datasets import NAMED, _hub_rows, collect_rows, load_records, row_to_record
from tokenskip.data.inputs import read_rows
from tokenskip.data.jsonl import BadLineStats, OnError
from tokenskip.data.prompts import PromptPreset, format_target, user_message
from tokenskip.errors import UserError
from tokenskip.training.tell import general_row

CALC = re.compile(r"<<[^>]*>>")
SAMPLES = Path(__file__).resolve().parent.parent / "data" / "samples"
DEFAULT_GENERAL = "self-instruct"
# named general sets bundled with tokenskip, with where they come from
GENERAL_SOURCES: dict[str, dict[str, Any]] = {
    "self-instruct": {
        "file": SAMPLES / "self_instruct_seed.jsonl",
        "licence": "Apache-2.0",
        "licence_file": SAMPLES / "self_instruct_seed.LICENSE",
        "source": "https://github.com/yizhongw/self-instruct/blob/0b26ccaa415992100fa32df62d41b994cf928e23/"
        "data/seed_tasks.jsonl",
        "source_sha256": "7779004fa198fdf27cf70a159363879d8a26c53329e11b436af17b3941875f48",
        "sha256": "87e1bce064315608f737ae6555d40b46836baad2a5232a84ebd532ae88847b69",
        "rows": 169,
        "left_out": [
            "solving_equation",
            "math_word_problem_with_reasoning",
            "numerical_question_answering",
            "solving_math_problem",
            "word_math_with_algebra",
            "solve_equation_system",
        ],
        "description": "Self-Instruct's 175 human-written seed tasks (one instance each) as alpaca rows (id, name, "
        "instruction, input, output), less the six that solve a math problem",
    },
}
USER_ROLES = ("human", "user")
ASSISTANT_ROLES = ("gpt", "assistant", "model")


def _turns(row: dict[str, Any]) -> tuple[str, str]:
    """First user turn and the assistant reply after it, from a sharegpt row."""
    turns = row.get("conversations", row.get("messages"))
    if not isinstance(turns, list):
        raise ValueError("'conversations'/'messages' is not a list")
    pairs = [(str(t.get("from", t.get("role", ""))), t.get("value", t.get("content"))) for t in turns
             if isinstance(t, dict)]  # fmt: skip
    for (role, text), (next_role, reply) in zip(pairs, pairs[1:], strict=False):
        if (
            role in USER_ROLES
            and next_role in ASSISTANT_ROLES
            and isinstance(text, str)
            and isinstance(reply, str)
        ):
            if text.strip() and reply.strip():
                return text, reply
    raise ValueError("no user turn followed by an assistant turn")


def general_example(row: dict[str, Any], preset: PromptPreset, default_id: str) -> tuple[str, str, str]:
    """``(question, user message, output)`` of one general row (alpaca, sharegpt, or question/CoT/answer)."""
    if "conversations" in row or "messages" in row:
        user, reply = _turns(row)
        return user, user, reply
    if "instruction" in row and "output" in row:
        ins, inp, out = row["instruction"], row.get("input") or "", row["output"]
        if not isinstance(ins, str) or not isinstance(inp, str) or not isinstance(out, str):
            raise ValueError("alpaca fields instruction/input/output must be text")
        if not ins.strip() or not out.strip():
            raise ValueError("empty alpaca instruction or output")
        user = f"{ins}\n{inp}" if inp.strip() else ins
        return user, user, out
    rec = row_to_record(row, default_id, require_cot=True)
    return cot_example(rec.question, rec.cot or "", rec.answer, preset)


def cot_example(question: str, cot: str, answer: str, preset: PromptPreset) -> tuple[str, str, str]:
    """A plain question -> CoT + answer example: the preset's user message without anchor or ratio."""
    plain = dataclasses.replace(preset, anchor=None)
    return (
        question,
        user_message(question, None, plain, None),
        format_target(CALC.sub("", cot), answer, plain),
    )


def load_general(
    source: str, preset: PromptPreset, split: str = "train", on_error: OnError = "raise"
) -> list[dict[str, Any]]:
    """Every usable example of ``source`` as a general build-sft row (see the module docstring)."""
    name = source.strip()
    if not name:
        raise UserError("--general is empty")
    if name in NAMED:
        records, stats = load_records(name, split=split, require_cot=True, on_error=on_error)
        for msg in stats.skipped:
            print(f"tokenskip: skipped {msg}")
        found = [cot_example(r.question, r.cot or "", r.answer, preset) for r in records]
        return [general_row(i, q, u, o, name) for i, (q, u, o) in enumerate(found)]
    path = GENERAL_SOURCES[name]["file"] if name in GENERAL_SOURCES else Path(name).expanduser()
    stats = BadLineStats()
    if path.exists():
        rows, where = read_rows(path, on_error, stats), str(path)
    elif "/" in name and not path.suffix:
        rows, where = _hub_rows(name, None, split), name
    else:
        named = ", ".join([*GENERAL_SOURCES, *NAMED])
        raise UserError(f"--general {name}: no such file, named dataset ({named}) or hub id")
    items = collect_rows(
        rows, where,
        lambda lineno, row: general_row(lineno, *general_example(row, preset, f"general-{lineno}"), name),
        lambda r: r["id"], on_error, stats,
    )  # fmt: skip
    for msg in stats.skipped:
        print(f"tokenskip: skipped {msg}")
    return items
