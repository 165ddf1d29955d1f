"""``tokenskip report DIR...``: tables and plots re-rendered from saved bench results (no model needed).

Several run folders (e.g. two models) go into one table and one pair of figures, labelled per run.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from tokenskip.data.jsonl import read_jsonl, write_json_atomic
from tokenskip.errors import UserError
from tokenskip.eval.metrics import (
    BENCH_COLUMNS,
    FORCED_COLUMN,
    THINKING_COLUMNS,
    bench_markdown,
    method_summary,
)
from tokenskip.eval.verdicts import verdict_markdown, verdicts
from tokenskip.methods import Method, get_method, parse_methods

# CSV columns after "method" (empty where a run has no such records)
EXTRA_CSV = [k for k, _, _ in (*THINKING_COLUMNS, FORCED_COLUMN)]


def csv_columns() -> list[str]:
    """The CSV's columns: the table's, with the 95% interval as two numbers (accuracy_low, accuracy_high)."""
    cols = ["run"]
    for key, _, _ in BENCH_COLUMNS[1:]:
        cols.extend(("accuracy_low", "accuracy_high") if key == "accuracy_ci" else (key,))
    return [*cols, "method", *EXTRA_CSV]


def load_run(root: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A bench folder's run.json and one summary row per method (methods with no records are skipped)."""
    meta_path = root / "run.json"
    if not meta_path.exists():
        raise UserError(f"{root}: not a bench folder (no run.json)")
    meta = json.loads(meta_path.read_text())

    def rows(name: str) -> list[dict[str, Any]]:
        p = root / "records" / name
        if not p.exists() or p.stat().st_size == 0:
            return []
        return [r for _, r in read_jsonl(p, on_error="skip")]

    original = rows("original.jsonl")
    orig_summary = method_summary("original", original, None, batch1_rows=rows("original.b1.jsonl"))
    summaries = []
    for method in parse_methods(meta["methods"]):
        recs = rows(f"{method.name}.jsonl")
        if not recs:
            continue
        summaries.append(
            method_summary(
                method.name,
                recs,
                orig_summary["mean_cot_tokens"],
                method.requested_ratio,
                rows(f"{method.name}.b1.jsonl"),
                meta.get("batch_size"),
            )
        )
    base_b1 = orig_summary["latency_batch1_s"]
    for row in summaries:  # the paper's speedup: original's batch-1 latency over the method's
        b1 = row["latency_batch1_s"]
        row["speedup_batch1"] = base_b1 / b1 if base_b1 and b1 else None
    return meta, summaries


def _label(meta: dict[str, Any], root: Path, several: bool) -> str | None:
    if not several:
        return None
    return f"{Path(str(meta.get('model'))).name}{'+adapter' if meta.get('adapter') else ''} ({root.name})"


def render(dirs: list[Path], out: Path) -> list[dict[str, Any]]:
    """Write results.md/.csv/.json and both PNGs for ``dirs`` into ``out``; return all summary rows."""
    several = len(dirs) > 1
    runs = []
    for d in dirs:
        meta, rows = load_run(Path(d))
        runs.append((_label(meta, Path(d), several), meta, rows))
    out.mkdir(parents=True, exist_ok=True)
    md = []
    for label, meta, rows in runs:
        md.append(
            f"**{label or meta.get('model')}** on {meta.get('dataset')} ({rows[0]['n'] if rows else 0} questions, "
            f"max {meta.get('max_new_tokens')} new tokens, batched run at batch size {meta.get('batch_size')}, "
            f"batch-1 latency on the first {meta.get('latency_samples')} questions)\n"
        )
        md.append(bench_markdown(rows, None, thinking=bool(meta.get("thinking"))))
        md.append("")
    all_rows = [{"run": label or meta.get("model"), **r} for label, meta, rows in runs for r in rows]
    found = verdicts(all_rows)
    if found:
        original = next((r for r in all_rows if r["method"] == "original"), None)
        md.append("Following γ (ActRatio against `original`; other methods within 15% of the CoT tokens):\n")
        md.extend(verdict_markdown(v, original) for v in found)
        md.append("")
    (out / "results.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    with (out / "results.csv").open("w", newline="") as f:
        writer = csv.DictWriter(
            f,
            fieldnames=csv_columns(),
            extrasaction="ignore",
        )
        writer.writeheader()
        writer.writerows(all_rows)
    write_json_atomic(
        out / "results.json",
        {"runs": [{"label": lb, "meta": m, "methods": r} for lb, m, r in runs], "verdicts": found},
    )
    _plots(runs, out)
    return all_rows


def error_bars(rows: list[dict[str, Any]]) -> list[list[float]]:
    """Matplotlib's ``yerr`` (percent points below, above) from each row's accuracy interval (0 when a row
    has none, e.g. written before intervals existed)."""
    lows, highs = [], []
    for r in rows:
        acc, lo, hi = r["accuracy"], r.get("accuracy_low"), r.get("accuracy_high")
        lows.append(100 * (acc - lo) if lo is not None else 0.0)
        highs.append(100 * (hi - acc) if hi is not None else 0.0)
    return [lows, highs]


def ratio_points(rows: list[dict[str, Any]]) -> dict[type[Method], list[tuple[float, float]]]:
    """The ratio-adherence figure's lines: per method class that takes a ratio γ, its ``(requested γ,
    achieved ActRatio)`` points in γ order (rows without an ActRatio are left out)."""
    out: dict[type[Method], list[tuple[float, float]]] = {}
    for r in rows:
        method = get_method(r["method"])
        if method.arg == "ratio" and r["act_ratio"] is not None:
            out.setdefault(type(method), []).append((r["requested_ratio"], r["act_ratio"]))
    return {cls: sorted(pts) for cls, pts in out.items()}


def _plots(runs: list[tuple[str | None, dict[str, Any], list[dict[str, Any]]]], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for label, meta, rows in runs:
        pts = [r for r in rows if r["mean_cot_tokens"] is not None and r["accuracy"] is not None]
        if not pts:
            continue
        xs = [r["mean_cot_tokens"] for r in pts]
        ys = [100 * r["accuracy"] for r in pts]
        ax.errorbar(
            xs, ys, yerr=error_bars(pts), fmt="o", capsize=3, elinewidth=1,
            label=label or str(meta.get("model")),
        )  # fmt: skip
        for x, y, name in zip(xs, ys, [r["method"] for r in pts], strict=True):
            ax.annotate(name, (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set_xlabel("mean CoT tokens (answer part excluded)")
    ax.set_ylabel("accuracy (%)")
    ax.set_title("Accuracy (95% Wilson interval) vs CoT tokens")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "accuracy_vs_tokens.png", dpi=120)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(5.5, 5))
    ax.plot([0, 1], [0, 1], "--", color="grey", label="achieved = requested")
    for label, _meta, rows in runs:
        for cls, pts in ratio_points(rows).items():
            name = f"{label}: {cls.kind}" if label else cls.kind
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker=cls.marker, label=name)
    ax.set_xlabel("requested ratio γ")
    ax.set_ylabel("achieved ActRatio (CoT tokens / original)")
    ax.set_xlim(0, 1.05)
    ax.set_ylim(0, max(1.2, ax.get_ylim()[1]))
    ax.set_title("Ratio adherence")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "ratio_adherence.png", dpi=120)
    plt.close(fig)
