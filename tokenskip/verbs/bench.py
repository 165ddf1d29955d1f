"""``tokenskip bench``: every method on the same questions, one table, CSV, JSON and two plots.

Methods come from the registry (:mod:`tokenskip.methods`) and run through one :class:`~tokenskip.session.Session`
(the model opens once; adapter methods switch to ``--adapter``).
Layout of ``--out DIR``::

    run.json                 what was run (model, adapter + hash, dataset, methods, limits, backend, dtype,
                             sampling); a resumed run must match its settings
    records/<method>.jsonl   per-question records of the batched run (resumable per method)
    records/<method>.b1.jsonl  the first --latency_samples questions again at batch size 1
    results.md / .csv / .json  one row per method (see tokenskip.eval.metrics.method_summary), accuracy
                             with its 95% Wilson interval
    accuracy_vs_tokens.png   accuracy (95% Wilson interval as error bars) against mean CoT tokens
    ratio_adherence.png      requested γ against achieved ActRatio

Killing the job and re-running the same command resumes: finished records are skipped per method.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from tokenskip.args import DataArgs, EngineArgs, ModelArgs, SamplingArgs, flat_options
from tokenskip.data.jsonl import read_jsonl
from tokenskip.data.resume import check_run_file
from tokenskip.errors import UserError
from tokenskip.methods import DEFAULT_METHODS, execution_order, parse_methods
from tokenskip.session import Session

# run.json keys a resumed run must share with the first one (each records file also checks its own settings)
RESUME_KEYS = (
    "model", "adapter", "adapter_sha256", "dataset", "split", "max_new_tokens", "preset", "backend", "dtype",
    "temperature", "top_p", "seed", "stop", "adapter_merged",
)  # fmt: skip


def read_done(path: Path) -> dict[str, dict[str, Any]]:
    """``id -> record`` of a finished (or partly finished) method file."""
    if not path.exists() or path.stat().st_size == 0:
        return {}
    return {str(r["id"]): r for _, r in read_jsonl(path, on_error="skip")}


@flat_options(
    data=DataArgs(limit=16), model=ModelArgs(), sampling=SamplingArgs(batch_size=8), engine=EngineArgs()
)
def bench(
    out: str,
    data: DataArgs,
    model: ModelArgs,
    sampling: SamplingArgs,
    engine: EngineArgs,
    methods: str = DEFAULT_METHODS,
    latency_samples: int = 4,
    preset: str | None = None,
    tale_template: str = "tale",
) -> list[dict[str, Any]]:
    """Compare original CoT, TokenSkip ratios, baselines and TALE-EP on the same questions.

    Args:
        out: output folder (records/, results.md/.csv/.json, accuracy_vs_tokens.png, ratio_adherence.png).
            Re-running with the same folder resumes.
        methods: comma list of registered methods: original, tokenskip@γ, truncation@γ, lc-prompt@γ,
            beconcise, onlynumbers, abbrewords, tale-ep (tale-ep@N: fixed budget N), and every method added
            since (`python -c "from tokenskip.methods import known_specs; print(known_specs())"`). `original`
            always runs (ActRatio and truncation are relative to it). tokenskip@γ runs on --adapter; without
            one it prompts the base model with the ratio marker.
        latency_samples: the first N questions of each method are also run at batch size 1 to measure
            per-sample latency as the TokenSkip paper reports it (0 = skip).
        preset: prompt preset (default or tokenskip); must match how the adapter was trained. Default: the
            preset the adapter's tokenskip_adapter.json records (else default).
        tale_template: TALE prompt template (tale, or tale-boxed for MATH).
    """
    from tokenskip.eval.report import render

    if latency_samples < 0:
        raise UserError("--latency_samples must be >= 0")
    plan = execution_order(parse_methods(methods, template=tale_template))
    if model.adapter and not (Path(model.adapter) / "adapter_config.json").exists():
        raise UserError(f"--adapter {model.adapter}: not a peft adapter folder (no adapter_config.json)")
    prompt_preset = model.preset(preset)
    records, _ = data.load()
    for m in plan:
        m.setup(records)
    root = Path(out)
    batch = sampling.batch(model.backend)
    with Session(model, sampling, prompt_preset, engine, on_error=data.on_error) as session:
        meta = {
            **session.base_settings(),
            "dataset": data.dataset,
            "split": data.split,
            "limit": data.limit,
            "methods": [m.name for m in plan],
            "batch_size": batch,
            "latency_samples": latency_samples,
            "thinking": prompt_preset.think_close is not None,
        }
        # a folder accumulates methods: a run of some of them keeps the others in run.json (and in the table)
        check_run_file(root / "run.json", meta, RESUME_KEYS, accumulate=("methods",))
        (root / "records").mkdir(parents=True, exist_ok=True)
        runs = [
            (method, root / "records" / f"{method.name}{suffix}.jsonl", qs, size)
            for method in plan
            for suffix, qs, size in [("", records, batch), (".b1", records[:latency_samples], 1)]
            if qs
        ]
        for method, path, _, _ in runs:  # every file's settings before the first record is generated
            session.check(method, path, model.adapter if method.uses_adapter else None)
        t0 = time.perf_counter()
        for method, path, qs, size in runs:
            session.run(method, qs, path, adapter=model.adapter if method.uses_adapter else None, batch_size=size,
                        original=read_done(root / "records" / "original.jsonl"), desc=f"{method.name} ({path.name})")  # fmt: skip
    rows = render([root], root)
    print(f"tokenskip: bench finished in {time.perf_counter() - t0:.0f}s -> {root}")
    return rows
