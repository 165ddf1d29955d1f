"""The run's per-round figures: ``OUT/summary.json``, a markdown table and ``OUT/metareason.png``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tokenskip.data.jsonl import write_json_atomic

COLUMNS = (
    ("accuracy", "accuracy"), ("thought_tokens", "thought tokens"), ("utility", "utility"),
    ("reward", "reward"), ("kept", "kept"),
)  # fmt: skip


def _fmt(v: Any) -> str:
    if v is None:
        return "–"
    return f"{v:.3f}" if isinstance(v, float) else str(v)


def table(summaries: list[dict[str, Any]]) -> str:
    """One markdown row per round: the sampled rollouts' figures, and the eval figures when there are some."""
    has_eval = any("eval" in s for s in summaries)
    head = ["round", *(f"rollout {name}" for _, name in COLUMNS)]
    if has_eval:
        head += ["eval accuracy", "eval thought tokens", "eval utility"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for s in summaries:
        row = [str(s["round"]), *(_fmt(s.get(k)) for k, _ in COLUMNS)]
        if has_eval:
            ev = s.get("eval") or {}
            row += [_fmt(ev.get("accuracy")), _fmt(ev.get("thought_tokens")), _fmt(ev.get("utility"))]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def plot(summaries: list[dict[str, Any]], path: Path) -> None:
    """Mean reward, mean thought tokens and accuracy per round (rollouts solid, eval dashed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, axes = plt.subplots(1, 3, figsize=(12, 3.4))
    for ax, (key, title) in zip(axes, (("reward", "mean reward"), ("thought_tokens", "mean thought tokens"),
                                       ("accuracy", "accuracy")), strict=True):  # fmt: skip
        pts = [(s["round"], s[key]) for s in summaries if s.get(key) is not None]
        if pts:
            ax.plot(*zip(*pts, strict=True), "o-", label="rollouts")
        ev = [(s["round"], s["eval"][key]) for s in summaries if (s.get("eval") or {}).get(key) is not None]
        if ev:
            ax.plot(*zip(*ev, strict=True), "s--", label="eval (greedy)")
        ax.set_title(title)
        ax.set_xlabel("round")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        if pts or ev:
            ax.legend(fontsize=8)
    fig.tight_layout()
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)


def write_outputs(run_dir: Path, summaries: list[dict[str, Any]], with_plot: bool = True) -> None:
    write_json_atomic(run_dir / "summary.json", summaries)
    (run_dir / "summary.md").write_text(table(summaries) + "\n", encoding="utf-8")
    if with_plot:
        plot(summaries, run_dir / "metareason.png")
