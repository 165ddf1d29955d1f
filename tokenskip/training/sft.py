"""TokenSkip's training mixture of original and compressed CoTs (the verb: :mod:`tokenskip.verbs.build_sft`).

For every example of the original file one ratio γ is drawn uniformly (seeded) from {1.0} ∪ the ratios
found in the compressed folder. γ = 1.0 keeps the original CoT; γ < 1 takes that ratio's compressed CoT and
writes the ratio into the prompt. The rows carry LLaMA-Factory's alpaca fields, so the same mixture trains
with ``tokenskip train`` or with LLaMA-Factory:

* ``instruction``: the preset's instruction (``Please reason step by step, ...``),
* ``input``: the question, plus ``<delim>γ<delim>`` when γ < 1 (delimiter: the preset's, else the model's
  EOS token, or ``--delimiter``),
* ``output``: the CoT, then ``"\\n\\nThe final answer is: $\\boxed{ANSWER}$"`` (never compressed).

``instruction + "\\n" + input`` is exactly the user message that
:func:`tokenskip.data.prompts.format_prompt` writes at inference time.
"""

from __future__ import annotations

import dataclasses
import json
import random
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tokenskip.data.datasets import load_records
from tokenskip.data.inputs import read_rows
from tokenskip.data.jsonl import BadLineStats, OnError, read_jsonl
from tokenskip.data.prompts import (
    PromptPreset,
    check_ratio,
    format_ratio,
    format_target,
    get_preset,
    user_message,
)
from tokenskip.errors import UserError
from tokenskip.training.sft_folder import INFO_FILE

ALPACA_FILE = "alpaca.json"
COMPRESSED_RE = re.compile(r"^compressed_(\d+(?:\.\d+)?)\.jsonl$")


@dataclass
class Example:
    """One original example and its compressed CoTs (by γ) as read from the inputs."""

    id: str
    question: str
    answer: str
    cot: str
    compressed: dict[float, str]
    output: str | None = None  # a thinking model's whole original output (thinking presets)
    thinking: bool = False  # the CoT holds its own think tags (compress pruned only the thinking)


def resolve_sft_preset(
    preset: str | PromptPreset, delimiter: str | None, eos_token: str | None
) -> PromptPreset:
    """The preset with its delimiter made explicit (``--delimiter``, else the preset's, else the EOS token)."""
    p = get_preset(preset)
    delim = delimiter if delimiter is not None else p.delimiter if p.delimiter is not None else eos_token
    if not delim:
        raise UserError("no ratio delimiter: the tokenizer has no EOS token; pass --delimiter")
    return dataclasses.replace(p, delimiter=delim)


def draw_ratios(ids: list[str], available: dict[str, list[float]], seed: int) -> list[float]:
    """TokenSkip's mixture: one γ per example, uniform over {1.0} ∪ that example's compressed ratios."""
    rng = random.Random(seed)
    return [rng.choice([1.0, *sorted(available.get(i, []), reverse=True)]) for i in ids]


def sft_row(example: Example, ratio: float, preset: PromptPreset) -> dict[str, Any]:
    """The training row for one example at γ (``preset.delimiter`` must be set, see resolve_sft_preset).

    The user message (anchor, instruction, question, ``<delim>γ<delim>``) is split the LLaMA-Factory way:
    ``input`` = the question and marker, ``instruction`` = what comes before it. The output is the CoT and
    the answer sentence, or for a thinking preset the original output with its thinking replaced
    (:func:`thinking_target`).
    """
    cot = example.cot if ratio >= 1.0 else example.compressed[ratio]
    message = user_message(example.question, ratio, preset, preset.delimiter)
    bare = dataclasses.replace(preset, anchor=None, instruction="")
    input_text = user_message(example.question, ratio, bare, preset.delimiter)
    head = message[: len(message) - len(input_text)]
    assert message.endswith(input_text) and (not head or head.endswith("\n"))
    if example.thinking:  # compress kept the text around the thinking (tags, answer) byte for byte
        output = example.cot if ratio >= 1.0 else cot
    elif preset.think_close:
        if example.output is None:
            raise UserError(f"example {example.id}: a thinking preset needs the record's original 'output'")
        output = example.output if ratio >= 1.0 else thinking_target(example.output, cot, preset)
    else:
        output = format_target(cot, example.answer, preset)
    return {
        "id": example.id,
        "ratio": ratio,
        "question": example.question,
        "answer": example.answer,
        "instruction": head[:-1],
        "input": input_text,
        "output": output,
    }


def thinking_target(output: str, thinking: str, preset: PromptPreset) -> str:
    """A thinking model's ``output`` with its thinking replaced by ``thinking`` (a compressed one).

    Kept from the original: the text before the thinking (the open tag when the output has it: a chat
    template whose generation prompt opens the block leaves it out), the whitespace around the thinking,
    the close tag and everything after it, byte for byte.
    """
    assert preset.think_close
    head, closed, after = output.partition(preset.think_close)
    if not closed:
        raise ValueError(f"the thinking never closes ({preset.think_close!r} missing)")
    lead, inner = "", head
    if preset.think_open and head.lstrip().startswith(preset.think_open):
        cut = head.index(preset.think_open) + len(preset.think_open)
        lead, inner = head[:cut], head[cut:]
    before = inner[: len(inner) - len(inner.lstrip())]
    end = inner[len(inner.rstrip()) :]
    return lead + before + thinking.strip() + end + preset.think_close + after


def read_compressed_dir(
    folder: str | Path, on_error: OnError = "raise"
) -> dict[float, dict[str, dict[str, Any]]]:
    """``{γ: {id: row}}`` from the ``compressed_<γ>.jsonl`` files of ``tokenskip compress``."""
    d = Path(folder)
    if not d.exists():
        raise UserError(f"--compressed {d}: folder not found")
    if not d.is_dir():
        raise UserError(f"--compressed {d}: expected the output folder of `tokenskip compress`")
    out: dict[float, dict[str, dict[str, Any]]] = {}
    for f in sorted(d.iterdir()):
        m = COMPRESSED_RE.match(f.name)
        if not m:
            continue
        ratio = check_ratio(float(m.group(1)))
        if ratio >= 1.0:
            continue  # γ = 1.0 is the original CoT
        rows: dict[str, dict[str, Any]] = {}
        for lineno, row in read_jsonl(f, on_error=on_error):
            rid, text = row.get("id"), row.get("compressed_cot")
            if rid in (None, "") or not isinstance(text, str):
                msg = f"{f}:{lineno}: row needs 'id' and a string 'compressed_cot'"
                if on_error == "raise":
                    raise UserError(msg)
                print(f"tokenskip: skipping {msg}")
                continue
            rows[str(rid)] = row
        out[ratio] = rows
    if not out:
        raise UserError(
            f"--compressed {d}: no compressed_<ratio>.jsonl files (run `tokenskip compress` first)"
        )
    return out


def load_examples(
    original: str,
    compressed: dict[float, dict[str, dict[str, Any]]],
    on_error: OnError = "raise",
    preset: PromptPreset | None = None,
    reading: dict[str, Any] | None = None,
) -> tuple[list[Example], Counter]:
    """Join the original CoTs with their compressed versions by id.

    ``reading`` (how compress read its input: :func:`~tokenskip.compressors.outputs.compress_reading`)
    makes the originals the generations compress read, its field and pick, with the same ids. A CoT that
    holds its think tags is a thinking example: its target is the text as it is (γ = 1) or as compressed
    (text around the thinking byte for byte); one whose thinking never closed is left out.

    For a thinking preset each other example also carries the record's whole ``output`` (the text after
    the thinking is trained verbatim); a record whose thinking never closed has no answer to keep and is
    left out (counted as ``unclosed_thinking``).
    """
    from tokenskip.compressors.thinking import ThinkTags, split_think
    from tokenskip.data.generations import picked_records

    reading = reading or {}
    field, pick, flags = reading.get("field", "cot"), reading.get("pick", "all"), reading.get("correct_field")
    if field != "cot" or pick != "all" or flags:
        stats = BadLineStats()
        records = picked_records(Path(original), field, pick, flags, on_error, stats)
    else:
        records, stats = load_records(original, on_error=on_error, require_cot=True)
    tags = ThinkTags(*reading["think_tags"]) if reading.get("think_tags") else None
    for msg in stats.skipped:
        print(f"tokenskip: skipped {msg}")
    close = preset.think_close if preset is not None else None
    outputs = _outputs(original) if close else {}
    counts: Counter = Counter()
    examples = []
    for rec in records:  # load_records(require_cot=True): every record has a non-blank cot
        assert rec.cot is not None
        part = split_think(rec.cot, tags)
        output = rec.cot if part is not None else outputs.get(rec.id)
        if part is not None and not part.closed:
            counts["unclosed_thinking"] += 1
            continue
        if part is None and close and (output is None or close not in output):
            counts["unclosed_thinking" if output is not None else "no_output"] += 1
            continue
        comp = {}
        for ratio, rows in compressed.items():
            row = rows.get(rec.id)
            if row is None:
                counts[f"missing_{format_ratio(ratio)}"] += 1
            elif not row["compressed_cot"].strip():
                counts[f"empty_{format_ratio(ratio)}"] += 1
            elif part is not None and not part.surrounds(row["compressed_cot"]):
                counts[f"thinking_mismatch_{format_ratio(ratio)}"] += 1
            else:
                comp[ratio] = row["compressed_cot"]
        examples.append(Example(rec.id, rec.question, rec.answer, rec.cot, comp, output, part is not None))
    known = {e.id for e in examples}
    for ratio, rows in compressed.items():
        extra = len(set(rows) - known)
        if extra:
            counts[f"unmatched_{format_ratio(ratio)}"] += extra
    return examples, counts


def _outputs(original: str) -> dict[str, str]:
    """``id -> output`` of a records file (``tokenskip generate``'s ``output`` field)."""
    path = Path(original)
    if not path.is_file():
        raise UserError(
            f"--original {original}: a thinking preset needs a records file with an 'output' field"
        )
    return {str(row["id"]): row["output"] for _, row in read_rows(path, "skip")
            if row.get("id") not in (None, "") and isinstance(row.get("output"), str)}  # fmt: skip


def build_mixture(
    examples: list[Example],
    preset: PromptPreset,
    seed: int = 42,
    ratios: list[float] | None = None,
    every_ratio: bool = False,
) -> list[dict[str, Any]]:
    """One row per example; γ drawn uniformly from {1.0} ∪ the example's compressed ratios (optionally restricted).

    ``every_ratio``: instead, one row per example *and* ratio (γ = 1.0 first, then descending), so the
    same question is seen at every length -- a denser mixture for small data budgets, not TokenSkip's.
    """
    allowed = None if ratios is None else {check_ratio(r) for r in ratios}
    available = {e.id: [r for r in e.compressed if allowed is None or r in allowed] for e in examples}
    if every_ratio:
        return [
            sft_row(e, r, preset) for e in examples for r in [1.0, *sorted(available[e.id], reverse=True)]
        ]
    drawn = draw_ratios([e.id for e in examples], available, seed)
    return [sft_row(e, r, preset) for e, r in zip(examples, drawn, strict=True)]


def to_alpaca(rows: list[dict[str, Any]]) -> list[dict[str, str]]:
    """LLaMA-Factory's alpaca format (instruction / input / output)."""
    return [{"instruction": r["instruction"], "input": r["input"], "output": r["output"]} for r in rows]


def check_sft_folder(out: Path, settings: dict[str, Any]) -> None:
    """Refuse to rebuild a build-sft folder written with other settings (:mod:`tokenskip.data.resume`); a folder
    written before its ``sft_info.json`` recorded them is compared on what it records."""
    from tokenskip.data.resume import check_same_settings

    path = out / INFO_FILE
    if not path.is_file():
        return
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except ValueError:
        raise UserError(f"{path}: not valid JSON; move it away or pick another --out") from None
    old = info.get("settings")
    if not isinstance(old, dict):  # written before the settings were recorded
        legacy = {"model": info.get("model"), "preset": info.get("preset"), "seed": info.get("seed"),
                  "compressed": info.get("compressed"), "original": (info.get("original") or {}).get("path"),
                  "every_ratio": None if "mixture" not in info else info["mixture"] == "every_ratio"}  # fmt: skip
        old = {k: v for k, v in legacy.items() if v is not None}
    check_same_settings(out, old, settings)
