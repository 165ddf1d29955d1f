"""``tokenskip generate`` and ``tokenskip infer``: a method over questions, one graded record per question.

Both run a method from the registry (:mod:`tokenskip.methods`) through one :class:`~tokenskip.session.Session`:

* ``generate`` (TokenSkip step 1): the model's own CoTs on a dataset (``original``; ``--ratio γ`` prompts a
  TokenSkip-trained model with ``tokenskip@γ``);
* ``infer``: reasoning at a requested γ (``tokenskip@γ``, or any ``--method``) for one ``--question`` or a
  file of questions; rows without an answer are written ungraded.

Records are appended and flushed one by one; re-running with the same ``--out`` skips finished ids and
refuses an ``--out`` written with other settings (model, adapter, method, preset, backend, dtype,
max_new_tokens, sampling: :mod:`tokenskip.data.resume`). A prompt longer than the model's context is
refused before anything is generated (or skipped and counted with ``--on_error skip``).
"""

from __future__ import annotations

import random
import time
from typing import Any

from tokenskip.args import DataArgs, EngineArgs, ModelArgs, SamplingArgs, flat_options
from tokenskip.data.datasets import Record
from tokenskip.data.prompts import check_ratio
from tokenskip.errors import UserError
from tokenskip.inference.runner import RunResult
from tokenskip.methods import Method, get_method
from tokenskip.session import Session


def pick_method(method: str | None, ratio: float | None, **options: Any) -> Method:
    """``--method`` if given, else ``tokenskip@γ`` for ``--ratio γ``, else ``original``."""
    if method is not None:
        if ratio is not None:
            raise UserError("give --method or --ratio, not both (tokenskip@γ is --ratio γ)")
        return get_method(method, **options)
    return get_method("original" if ratio is None else f"tokenskip@{check_ratio(ratio)}", **options)


def _report(result: RunResult, skipped_rows: int, out: str | None, what: str, t0: float) -> dict[str, Any]:
    tokens = [r["cot_tokens"] for r in result.rows]
    mean = f", mean CoT {sum(tokens) / len(tokens):.1f} tokens" if tokens else ""
    long = f", {result.refused} too long for the context skipped" if result.refused else ""
    print(
        f"tokenskip: {result.generated} generated, {result.skipped} already done, {skipped_rows} malformed rows "
        f"skipped{long}{mean} ({what}) -> {out} ({time.perf_counter() - t0:.1f}s)"
    )
    return {**result.counts(), "malformed_skipped": skipped_rows, "too_long_skipped": result.refused}


def ratio_setting(method: Method) -> dict[str, Any]:
    """The requested γ recorded beside the method (as records have always carried it)."""
    return {"ratio": method.requested_ratio if method.kind == "tokenskip" else None}


@flat_options(data=DataArgs(split="train"), model=ModelArgs(), sampling=SamplingArgs(), engine=EngineArgs())
def generate(
    out: str,
    data: DataArgs,
    model: ModelArgs,
    sampling: SamplingArgs,
    engine: EngineArgs,
    preset: str | None = None,
    ratio: float | None = None,
    method: str | None = None,
) -> dict[str, int]:
    """Generate chain-of-thought answers for a dataset and grade them (TokenSkip step 1).

    Args:
        out: output JSONL; one record per question (id, question, answer, prompt, output, cot, prediction,
            correct, cot_tokens, output_tokens, finish_reason, latency_s, batch_size, model, method).
            Re-running resumes.
        preset: prompt preset: default (model's chat template) or tokenskip (original TokenSkip prompt);
            default: the preset an adapter from `tokenskip train` records, else default.
        ratio: optional compression ratio γ in (0, 1] appended to the prompt (for TokenSkip-trained models).
        method: any registered method instead (see `tokenskip bench --help`), e.g. beconcise.
    """
    chosen = pick_method(method, ratio)
    records, skipped = data.load()
    random.seed(sampling.seed)
    t0 = time.perf_counter()
    with Session(model, sampling, preset, engine, on_error=data.on_error) as session:
        result = session.run(chosen, records, out, settings=ratio_setting(chosen))
    return _report(result, skipped, out, chosen.name, t0)


@flat_options(
    data=DataArgs(dataset=None, split="test"), model=ModelArgs(), sampling=SamplingArgs(), engine=EngineArgs()
)
def infer(
    data: DataArgs,
    model: ModelArgs,
    sampling: SamplingArgs,
    engine: EngineArgs,
    ratio: float | None = None,
    input: str | None = None,
    question: str | None = None,
    out: str | None = None,
    preset: str | None = None,
    method: str | None = None,
) -> dict[str, Any]:
    """Generate reasoning at compression ratio γ for one question or a file of questions.

    Args:
        ratio: compression ratio γ in (0, 1]; 1.0 (the default) = full CoT (no ratio in the prompt). Not with
            --method.
        input: .jsonl/.json/.parquet (question or problem; optional id, answer) or .txt (one question per
            line). Same as --dataset.
        question: a single question instead of --input; the answer is printed.
        out: output JSONL (generate's fields + adapter, ratio, preset, backend). Required with --input;
            re-running resumes.
        preset: prompt preset: default, or tokenskip (published TokenSkip adapters). Default: the preset
            recorded by `tokenskip train` in the adapter (or merged model), including its delimiter; else default.
        method: any registered method instead of tokenskip@γ (e.g. budget-forcing@256, beconcise).
    """
    chosen = pick_method(method, 1.0 if method is None and ratio is None else ratio)
    if chosen.needs_original:
        raise UserError(f"{chosen.name} needs the original run's records: use `tokenskip bench`")
    source = input or data.dataset
    if input and data.dataset:
        raise UserError("give --input or --dataset, not both")
    if (source is None) == (question is None):
        raise UserError("give exactly one of --input FILE or --question TEXT")
    if source is not None and out is None:
        raise UserError("--out is required with --input")
    if question is not None:
        if not question.strip():
            raise UserError("--question is empty")
        records = [Record(id="question-0", question=question.strip(), answer="", where="--question")]
        skipped = 0
    else:
        assert source is not None
        records, skipped = data.load(require_answer=False, dataset=source)
    t0 = time.perf_counter()
    with Session(model, sampling, preset, engine, on_error=data.on_error) as session:
        result = session.run(
            chosen, records, out, settings=ratio_setting(chosen), progress=source is not None
        )
    if question is not None and result.rows:
        print(result.rows[0]["output"])
    if out is not None:
        return _report(result, skipped, out, f"{chosen.name}, {model.backend}", t0)
    return {**result.counts(), "malformed_skipped": skipped, "too_long_skipped": result.refused}
