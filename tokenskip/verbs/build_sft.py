"""``tokenskip build-sft``: TokenSkip's training mixture of original and compressed CoTs (the rows and their
format: :mod:`tokenskip.training.sft`)."""

from __future__ import annotations

import dataclasses
from collections import Counter
from pathlib import Path
from typing import Any

from tokenskip.data.jsonl import OnError, write_json_atomic, write_jsonl_atomic
from tokenskip.data.prompts import check_ratio, format_ratio, get_preset
from tokenskip.errors import UserError
from tokenskip.models import DEFAULT_MODEL, sha256_file
from tokenskip.training.general import DEFAULT_GENERAL, load_general
from tokenskip.training.sft import (
    ALPACA_FILE,
    build_mixture,
    check_sft_folder,
    load_examples,
    read_compressed_dir,
    resolve_sft_preset,
    to_alpaca,
)
from tokenskip.training.sft_folder import INFO_FILE, SFT_FILE
from tokenskip.training.tell import Shuffle, general_count, mix, pick_general, resolve_anchor, tell_summary


def build_sft(
    original: str,
    compressed: str,
    out: str,
    model: str = DEFAULT_MODEL,
    preset: str = "default",
    delimiter: str | None = None,
    ratios: list[float] | None = None,
    seed: int = 42,
    every_ratio: bool = False,
    alpaca: bool = False,
    on_error: OnError = "raise",
    general: str = DEFAULT_GENERAL,
    general_ratio: float = 0.0,
    anchor_prompt: str | None = None,
    shuffle: Shuffle = "extensive",
) -> dict[str, Any]:
    """Build TokenSkip's SFT mixture of original and compressed CoTs.

    Writes ``OUT/sft.jsonl`` (fields: id, ratio, question, answer, instruction, input, output) and
    ``OUT/sft_info.json`` (preset, delimiter, ratios, counts, sources and the settings), plus
    ``OUT/alpaca.json`` and ``OUT/dataset_info.json`` for LLaMA-Factory with ``--alpaca``. Re-running into a
    folder built with other settings is refused.

    Args:
        original: .jsonl / .json / .parquet rows with id, question, answer and a non-empty cot
            (``tokenskip generate`` output, best after ``tokenskip filter`` keeps the correct ones, or the
            pre-split GSM8K file). When compress read another --field or --pick, the same generations.
        compressed: output folder of ``tokenskip compress`` (``compressed_<γ>.jsonl`` files). Texts with
            think tags train as they are, the compressed thinking inside the tags (docs/thinking.md).
        out: output folder.
        model: target model; its EOS token is the ratio delimiter unless the preset or --delimiter sets one.
        preset: prompt preset (``default``, or ``tokenskip`` = the original release's prompt and ``<|eot_id|>``).
        delimiter: string around γ in the prompt, overriding the preset and the EOS token.
        ratios: use only these compressed ratios (default: every ratio found in --compressed).
        seed: seed of the per-example ratio draw.
        every_ratio: write every example at every ratio (1 + number of ratios rows each) instead of
            TokenSkip's one drawn γ per example; for small data budgets (the controllability benchmark).
        alpaca: also write LLaMA-Factory's alpaca JSON and a dataset_info.json entry for it.
        on_error: ``raise`` on a malformed row, or ``skip`` it (and report the count).
        general: TELL's general data (used when --general_ratio > 0): plain examples without ratio marker
            or anchor. ``self-instruct`` (default: Self-Instruct's 169 human-written seed tasks outside
            math, bundled, Apache-2.0; see docs/training.md), ``gsm8k`` (GSM8K train's uncompressed
            reference CoTs: the task's own domain), ``sample``, a question/cot/answer, alpaca or sharegpt
            .jsonl/.json file, or a hub dataset id. Questions of the task are left out.
        general_ratio: TELL's K: general examples per task example (0: no general data, TokenSkip's mixture).
        anchor_prompt: TELL's anchor, put before every task prompt and no general one, and recorded in the
            preset (infer/serve/bench apply it): ``default`` (a fixed instruction, see docs/training.md),
            your text, or ``none``. Unset: ``default`` when --general_ratio > 0, else none.
        shuffle: TELL's order (train keeps it): ``extensive`` (task examples spread uniformly, seeded) or
            ``blocked`` (the general examples, then the task examples as one block).
    """
    from tokenskip.compressors.outputs import compress_reading

    settings = {
        "original": str(original), "compressed": str(compressed), "model": model, "preset": preset,
        "delimiter": delimiter, "ratios": sorted(check_ratio(r) for r in ratios) if ratios else None, "seed": seed,
        "every_ratio": every_ratio, "general": general if general_ratio else None, "general_ratio": general_ratio,
        "anchor_prompt": anchor_prompt, "shuffle": shuffle,
    }  # fmt: skip
    check_sft_folder(Path(out), settings)  # before anything is read or written
    p = get_preset(preset)
    comp = read_compressed_dir(compressed, on_error=on_error)
    if ratios:
        missing = [r for r in ratios if check_ratio(r) < 1.0 and check_ratio(r) not in comp]
        if missing:
            found = ", ".join(format_ratio(r) for r in sorted(comp))
            raise UserError(f"--ratios {missing}: not in {compressed} (found: {found})")
    # every input row is checked before the tokenizer loads
    examples, counts = load_examples(
        original, comp, on_error=on_error, preset=p, reading=compress_reading(compressed)
    )
    if not examples:
        raise UserError(f"{original}: no usable examples")
    pool = []
    if general_ratio != 0:
        general_count(1, general_ratio)  # a negative K is an error before anything loads
        pool = load_general(general, p, split="train", on_error=on_error)
    eos = None
    if delimiter is None and p.delimiter is None:
        from tokenskip.models import load_tokenizer

        eos = load_tokenizer(model).eos_token
    anchor = resolve_anchor(
        anchor_prompt if anchor_prompt is not None else "default" if general_ratio > 0 else None
    )
    resolved = dataclasses.replace(resolve_sft_preset(p, delimiter, eos), anchor=anchor)
    rows = build_mixture(examples, resolved, seed=seed, ratios=ratios, every_ratio=every_ratio)
    task_rows, tell = len(rows), None
    if general_ratio > 0:
        extra = pick_general(pool, general_count(len(rows), general_ratio), {e.question.strip() for e in examples},
                             seed)  # fmt: skip
        rows = mix(rows, extra, shuffle, seed)
        tell = tell_summary(task_rows, len(extra), general_ratio, shuffle, anchor, general)

    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    n = write_jsonl_atomic(out_dir / SFT_FILE, rows)
    per_ratio = Counter(format_ratio(r["ratio"]) for r in rows if r["ratio"] is not None)
    used = sorted({1.0, *(check_ratio(r) for r in ratios)} if ratios else {1.0, *comp}, reverse=True)
    info = {
        "examples": n,
        "ratios": used,
        "per_ratio": dict(sorted(per_ratio.items(), reverse=True)),
        "preset": p.name,
        "preset_fields": resolved.to_dict(),
        "delimiter": resolved.delimiter,
        "delimiter_source": "option"
        if delimiter is not None
        else "preset"
        if p.delimiter is not None
        else "eos",
        "model": model,
        "instruction": resolved.instruction,
        "system": resolved.system,
        "answer_template": resolved.answer_template,
        "seed": seed,
        "mixture": "every_ratio" if every_ratio else "one_drawn_ratio",
        "tell": tell,
        "original": {"path": str(original), "sha256": sha256_file(original)},
        "compressed": str(compressed),
        "issues": dict(counts),
        "thinking_examples": sum(e.thinking for e in examples),
        "settings": settings,
    }
    if alpaca:
        write_json_atomic(out_dir / ALPACA_FILE, to_alpaca(rows))
        name = f"tokenskip_{out_dir.resolve().name}"
        write_json_atomic(out_dir / "dataset_info.json", {name: {"file_name": ALPACA_FILE}})
        info["alpaca"] = {"file": ALPACA_FILE, "llamafactory_dataset": name}
    write_json_atomic(out_dir / INFO_FILE, info)
    counts_text = ", ".join(f"γ={k}: {v}" for k, v in info["per_ratio"].items())
    if tell:
        counts_text += f", general: {tell['general_examples']} ({shuffle})"
    print(
        f"tokenskip: wrote {n} examples to {out_dir / SFT_FILE} ({counts_text}); delimiter {resolved.delimiter!r}"
    )
    if counts:
        print("tokenskip: notes: " + ", ".join(f"{k}={v}" for k, v in sorted(counts.items())))
    return info
