"""``tokenskip fidelity``: can a reader still answer from its own CoT once a scorer compressed it?

No training needed. From the reader's generated records (``tokenskip generate``), keep the ones it got
right, strip the sentence that states the answer (:func:`tokenskip.eval.fidelity.strip_final_answer`),
compress each CoT with every scorer to every γ (``tokenskip compress``, resumable), then give the reader
``prompt(question) + compressed CoT + answer cue`` (the preset's ``"\\n\\nThe final answer is: $\\boxed{"``)
and grade the few tokens it writes (greedy, through one :class:`~tokenskip.session.Session`). Layout of ``--out DIR``::

    run.json                          reader, adapter, preset, backend, dtype, answer cap, sampling, ratios
                                      (a resumed run must match its settings)
    selected.jsonl                    the CoTs under test (answer stated in the CoT stripped)
    compressed/<scorer>/              `tokenskip compress` output per scorer (compressed_<γ>.jsonl)
    answers/<scorer>@<γ>.jsonl        the reader's graded answers (plus full@1.0 and none@0.0 controls)
                                      written --chunk CoTs at a time through every cell
    fidelity.md / .json / .png        accuracy (95% Wilson interval) and achieved ratio per scorer and γ

Re-running the same command resumes every step; a longer ``--input`` (or larger ``--limit``) extends it.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from tokenskip.args import ModelArgs, SamplingArgs, flat_options
from tokenskip.data.datasets import Record
from tokenskip.data.jsonl import read_jsonl, write_json_atomic, write_jsonl_atomic
from tokenskip.data.prompts import THINKING_ANSWER_CUE, forced_answer, format_ratio
from tokenskip.data.resume import check_run_file
from tokenskip.errors import UserError
from tokenskip.eval.fidelity import FULL, NONE, label, parse_scorers, select_records, summarize_cell
from tokenskip.inference.base import Generation
from tokenskip.methods import Context, Method, Request
from tokenskip.session import Session

DEFAULT_SCORERS = "selfinfo,selfinfo:qwen2.5-coder-0.5b,random,truncation,llmlingua2?"
RESUME_KEYS = (
    "model", "adapter", "adapter_sha256", "preset", "backend", "dtype", "max_new_tokens", "temperature", "top_p",
    "seed", "stop", "strip",
)  # fmt: skip


class ForcedAnswer(Method):
    """The reader's answer to ``prompt(question) + record.cot + answer cue``: the CoT (compressed, or
    empty for the no-CoT control) is given, only the answer is generated. The recorded ``output`` is the
    CoT, the cue and the generated answer, so ``cot``/``cot_tokens`` are the given CoT's and
    ``output_tokens`` counts the generated answer only. ``info`` adds per-id fields (achieved ratio ...)."""

    kind = "forced-answer"

    def __init__(
        self,
        info: dict[str, dict[str, Any]] | None = None,
        thinking: set[str] | None = None,
        think_cue: str = "",
    ) -> None:
        super().__init__(None)
        self.info = info or {}
        self.thinking, self.think_cue = thinking or set(), think_cue  # records cut to their thinking

    def given(self, ctx: Context, rec: Record) -> str:
        cue = self.think_cue if rec.id in self.thinking else forced_answer(self.preset(ctx.preset))
        return rec.cot + cue if rec.cot else cue.lstrip("\n")

    def order(self, ctx: Context, records: list[Record]) -> list[Record]:
        return sorted(records, key=lambda r: len(r.question) + len(r.cot or ""))  # similar lengths together

    def requests(self, ctx: Context, records: list[Record]) -> list[Request]:
        return [Request(self.prompt(ctx, r.question) + self.given(ctx, r)) for r in records]

    def finish(
        self, ctx: Context, record: Record, request: Request, gen: Generation
    ) -> tuple[Generation, dict]:
        text = self.given(ctx, record) + gen.text
        full = Generation(text, gen.num_tokens, gen.finish_reason, gen.latency_s, gen.batch_size, gen.extra)
        return full, {"answer_text": gen.text, **self.info.get(record.id, {})}


def _cells(
    root: Path, selected: list[dict[str, Any]], labels: list[str], ratios: list[float], count: Any
) -> list[tuple[str, float, list[Record], dict[str, dict[str, Any]]]]:
    """Every (scorer, γ) to answer: its records (cot = the compressed CoT) and per-id ratio fields."""
    from tokenskip.compressors.compress import ratio_file

    by_id = {s["id"]: s for s in selected}
    cells = []
    tokens = dict(zip(by_id, count([s["cot"] for s in selected]), strict=True))
    for name, ratio, cot in ((FULL, 1.0, lambda s: s["cot"]), (NONE, 0.0, lambda s: "")):
        if name not in labels:
            continue
        recs = [Record(s["id"], s["question"], s["answer"], cot(s), s["task"]) for s in selected]
        info = {
            s["id"]: {"original_tokens": tokens[s["id"]], "compressed_tokens": tokens[s["id"]] if ratio else 0,
                      "achieved_ratio": ratio}
            for s in selected
        }  # fmt: skip
        cells.append((name, ratio, recs, info))
    for name in (x for x in labels if x not in (FULL, NONE)):
        for ratio in ratios:
            path = ratio_file(root / "compressed" / name, ratio)
            rows = {str(r["id"]): r for _, r in read_jsonl(path)} if path.exists() else {}
            recs, info = [], {}
            for s in selected:
                r = rows.get(s["id"])
                if r is None:
                    continue
                recs.append(Record(s["id"], s["question"], s["answer"], r["compressed_cot"], s["task"]))
                info[s["id"]] = {k: r[k] for k in ("original_tokens", "compressed_tokens", "achieved_ratio")}
            cells.append((name, ratio, recs, info))
    return cells


def cache_order(cell: tuple[str, float, Any, Any]) -> int:
    """Answering order within a chunk: the full CoT first, then truncation (its CoTs are prefixes of the full
    ones, so vLLM's prefix cache still holds most of their prompts), the other scorers, no CoT last."""
    return {FULL: 0, "truncation": 1, NONE: 3}.get(cell[0], 2)


def answers_file(root: Path, name: str, ratio: float) -> Path:
    return root / "answers" / f"{name}@{format_ratio(ratio)}.jsonl"


@flat_options(model=ModelArgs(), sampling=SamplingArgs(max_new_tokens=16))
def fidelity(
    input: str,
    out: str,
    model: ModelArgs,
    sampling: SamplingArgs,
    scorers: str = DEFAULT_SCORERS,
    ratios: str = "0.9,0.7,0.5",
    limit: int | None = None,
    controls: bool = True,
    strip: bool = True,
    preset: str | None = None,
    think_tags: str | None = None,
    chunk: int = 32,
    compress_batch_size: int = 64,
    on_error: str = "raise",
) -> list[dict[str, Any]]:
    """Compression fidelity: the reader's answer accuracy from its own correct CoTs compressed to each γ.

    Args:
        input: the reader's records from `tokenskip generate` (id, question, answer, cot, correct; records
            without 'correct' are graded from 'output'). Only correct ones with a CoT are used.
        out: output folder (see `tokenskip.verbs.fidelity`); re-running resumes.
        scorers: comma list of scorers: selfinfo, llmlingua2, random, truncation; `name:checkpoint` picks
            the scorer's model (selfinfo:qwen2.5-coder-0.5b); a trailing `?` skips a scorer whose model
            cannot be loaded instead of failing (llmlingua2? without its weights offline).
        ratios: comma-separated γ in (0, 1]: the share of the reader's CoT tokens each scorer keeps.
        limit: use only the first N usable records.
        controls: also answer from the uncompressed CoT (full, γ = 1) and from no CoT (none, γ = 0).
        strip: remove the sentence stating the final answer (the last \\boxed{}) from each CoT first.
        preset: prompt preset the reader answers under (default: the model's default preset); its answer cue
            follows the CoT.
        think_tags: ``OPEN,CLOSE``: a record whose CoT (or output) holds them is cut to its thinking and
            answered after the thinking and the close tag (default: the preset's tags, else
            ``<think>,</think>``; ``none``: off), as the reader's own thinking records are.
        chunk: CoTs answered in every cell (scorer x γ) before the next CoTs start: an interrupted run has
            (nearly) the same n in every cell, and each question's prompt prefix is reused across cells.
        compress_batch_size: CoTs scored per block by `tokenskip compress`.
        on_error: a malformed input row is fatal (raise) or skipped and counted (skip).
    """
    from tokenskip.compressors.blocks import count_tokens
    from tokenskip.compressors.compress import parse_ratios
    from tokenskip.compressors.registry import scorer_class
    from tokenskip.compressors.thinking import resolve_think_tags
    from tokenskip.data.jsonl import BadLineStats
    from tokenskip.eval.evaluate import load_results, report_skipped
    from tokenskip.verbs.compress import compress

    if limit is not None and limit < 1:
        raise UserError(f"--limit must be >= 1, got {limit}")
    if chunk < 1:
        raise UserError(f"--chunk must be >= 1, got {chunk}")
    if on_error not in ("raise", "skip"):
        raise UserError(f"--on_error must be 'raise' or 'skip', got '{on_error}'")
    ratio_list = parse_ratios(ratios)
    scorer_list = parse_scorers(scorers)
    prompt_preset = model.preset(preset)
    stats = BadLineStats()
    rows = load_results(input, on_error=on_error, stats=stats)  # type: ignore[arg-type]
    report_skipped(input, stats)
    tags = resolve_think_tags(think_tags, prompt_preset if prompt_preset.think_close else None)
    selected = select_records(rows, limit, tags)
    thinking = {s["id"] for s in selected if s.get("thinking")}
    cue = prompt_preset.answer_cue if prompt_preset.think_close else THINKING_ANSWER_CUE
    think_cue = f"\n{tags.close}\n\n{cue}" if tags else ""
    if not strip:
        for s in selected:
            s["cot"] = s["source_cot"].rstrip()
    if not selected:
        raise UserError(f"{input}: no correct record with a CoT to compress")
    root = Path(out)
    session = Session(model, sampling, prompt_preset, on_error=on_error)
    meta = {
        **session.base_settings(),
        "input": str(input),
        "strip": strip,
        "ratios": ratio_list,
        "scorers": scorers,
        "selected": len(selected),
        "think_tags": tags.to_list() if tags else None,
        "thinking_records": len(thinking),
    }
    check_run_file(root / "run.json", meta, RESUME_KEYS)
    write_jsonl_atomic(root / "selected.jsonl", selected)
    print(f"tokenskip: {len(selected)} correct CoTs of {len(rows)} records under test", file=sys.stderr)
    t0 = time.perf_counter()

    labels = [FULL, NONE] if controls else []
    skipped: dict[str, str] = {}
    for scorer, checkpoint, optional in scorer_list:
        name = label(scorer, checkpoint)
        why = scorer_class(scorer).unavailable(checkpoint) if optional else None
        if why is not None:
            skipped[name] = why
            print(f"tokenskip: skipping scorer {name}: {why}", file=sys.stderr)
            continue
        compress(
            input=str(root / "selected.jsonl"), out=str(root / "compressed" / name), ratios=ratios,
            scorer=scorer, checkpoint=checkpoint, model=model.model, device=model.device,
            dtype=model.dtype, batch_size=compress_batch_size, think_tags="none",  # cut to the thinking above
        )  # fmt: skip
        labels.append(name)

    cells = _cells(root, selected, labels, ratio_list, lambda texts: count_tokens(session.tokenizer(), texts))
    batch = sampling.batch(model.backend)
    ids = [s["id"] for s in selected]
    with session:
        for start in range(0, len(ids), chunk):  # every record through every cell before the next chunk
            part = set(ids[start : start + chunk])
            for name, ratio, recs, info in sorted(cells, key=cache_order):
                session.run(ForcedAnswer(info, thinking, think_cue), [r for r in recs if r.id in part],
                            answers_file(root, name, ratio), settings={"scorer": name, "ratio": ratio},
                            batch_size=batch, progress=False)  # fmt: skip
            done = min(start + chunk, len(ids))
            print(f"tokenskip: {done}/{len(ids)} CoTs answered in every cell "
                  f"({time.perf_counter() - t0:.0f}s)", file=sys.stderr)  # fmt: skip
    return render(root, selected, cells, skipped, meta, time.perf_counter() - t0)


def render(
    root: Path,
    selected: list[dict[str, Any]],
    cells: list[tuple[str, float, list[Record], dict[str, dict[str, Any]]]],
    skipped: dict[str, str],
    meta: dict[str, Any],
    elapsed: float,
) -> list[dict[str, Any]]:
    """fidelity.md/.json/.png from the answer files (only ids under test count), with every scorer paired
    against ``random`` at the same γ (exact McNemar test on the same CoTs)."""
    from tokenskip.eval.fidelity import fidelity_markdown, paired, paired_markdown, plot_fidelity

    ids = {s["id"] for s in selected}
    summary, answered = [], {}
    for name, ratio, _recs, _info in cells:
        path = answers_file(root, name, ratio)
        rows = [r for _, r in read_jsonl(path, on_error="skip")] if path.exists() else []
        answered[name, ratio] = [r for r in rows if str(r["id"]) in ids]
        summary.append(summarize_cell(name, ratio, answered[name, ratio]))
    pairs = [
        paired(name, ratio, rows, "random", answered[("random", ratio)])
        for (name, ratio), rows in answered.items()
        if name not in ("random", FULL, NONE) and ("random", ratio) in answered
    ]
    table = fidelity_markdown(summary) + ("\n\n" + paired_markdown(pairs) if pairs else "")
    head = (
        f"**{Path(str(meta['model'])).name}** reading its own {len(selected)} correct CoTs "
        f"({'final-answer sentence stripped, ' if meta['strip'] else ''}answer cap {meta['max_new_tokens']} tokens)\n"
    )
    (root / "fidelity.md").write_text(head + "\n" + table + "\n", encoding="utf-8")
    write_json_atomic(
        root / "fidelity.json", {"meta": meta, "skipped_scorers": skipped, "cells": summary, "paired": pairs}
    )
    plot_fidelity(
        summary, root / "fidelity.png", f"Fidelity: {Path(str(meta['model'])).name} reads compressed CoTs"
    )
    print(head + "\n" + table)
    print(f"tokenskip: fidelity finished in {elapsed:.0f}s -> {root}", file=sys.stderr)
    return summary
