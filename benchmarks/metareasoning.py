"""RaM ablation on the embedded model: c = 0.1 (Rational Metareasoning) against c = 0 (STaR), same rounds,
same questions, same seeds.

Each arm is one ``tokenskip metareason iterate`` run (resumable: re-running with the same --work continues
it). The arms share what does not depend on c: the base model's round-0 evaluation and round-1 rollouts are
generated once (same model, same seeds) and copied; each arm scores them with its own c. Prints, per arm and round, the sampled rollouts' accuracy, mean thought tokens and mean utility, and
the same figures for greedy decoding of the round's adapter on held-out test questions (round 0 = the base
model). Writes ``WORK/results.md`` and each arm's ``metareason.png``.

    python benchmarks/metareasoning.py                     # defaults: ~20-30 min on 2 idle CPU cores
    python benchmarks/metareasoning.py --questions 4 --eval 4 --rounds 1 --work /tmp/ram-smoke   # smoke
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(REPO / "tokenskip/data/samples/grade_school.jsonl"),
                    help="questions: the first --questions train, the next --eval held out (default: the bundled "
                    "grade-school sample, easy enough for the 135M model to get some right)")  # fmt: skip
    ap.add_argument("--work", default="/tmp/tokenskip_metareason")
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--questions", type=int, default=8, help="training questions (the first N of --data)")
    ap.add_argument("--eval", type=int, default=8, help="held-out questions (the N after them)")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--samples", type=int, default=2, help="K rollouts per question and round")
    ap.add_argument("--costs", default="0.1,0",
                    help="the arms: values of c, each optionally :linear (c·|z|; default :log, c·log(1+|z|)), "
                    "e.g. 0.1,0,0.1:linear")  # fmt: skip
    ap.add_argument("--max_new_tokens", type=int, default=128)
    ap.add_argument("--max_steps", type=int, default=8, help="LoRA steps per round")
    ap.add_argument("--learning_rate", type=float, default=1e-3)
    ap.add_argument("--temperature", type=float, default=0.7)
    ap.add_argument("--batch_size", type=int, default=16, help="generation batch")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--backend", default="hf", help="hf or vllm (rollouts and eval)")
    ap.add_argument("--dtype", default="auto", help="generation dtype (auto, float32, bfloat16)")
    ap.add_argument("--eval_data", default=None,
                    help="held-out questions from another file (e.g. GSM8K test: the first --eval); default: the "
                    "--eval questions of --data after the training ones")  # fmt: skip
    ap.add_argument("--train_batch_size", type=int, default=4)
    ap.add_argument("--grad_accum", type=int, default=1)
    ap.add_argument("--cutoff", type=int, default=1024, help="LoRA training sequence cap (tokens)")
    ap.add_argument(
        "--reuse",
        default=None,
        help="an earlier --work of this script: its first arm's c-independent "
        "generations (same questions and seeds; e.g. rollouts k < K of a smaller --samples) are reused",
    )
    return ap.parse_args(argv)


def arms(costs: str) -> list[tuple[str, float, str]]:
    """``--costs`` as (arm name, c, cost kind): ``0.1`` -> ("c=0.1", 0.1, "log"), ``0.1:linear`` ->
    ("c=0.1-linear", 0.1, "linear")."""
    out = []
    for tok in costs.split(","):
        c, _, kind = tok.strip().partition(":")
        kind = kind or "log"
        if kind not in ("log", "linear"):
            raise SystemExit(f"--costs: {tok!r}: the cost kind must be log or linear")
        out.append((f"c={float(c):g}" + ("" if kind == "log" else f"-{kind}"), float(c), kind))
    return out


def share(src: Path, dst: Path, cost: float, kind: str = "log") -> None:
    """Give arm ``dst`` (price ``cost``, of ``kind``) the first arm's work that does not depend on c: the base model's
    round-0 eval and round-1 rollouts (same model, same seeds, so the same text) as they are, and their scored
    files re-priced with ``cost`` (the likelihoods and thought tokens do not depend on c; only utility, cost
    and reward are recomputed, :func:`~tokenskip.metareason.reward.reprice`). The resumable runner then
    skips them: only the filter, training and the trained adapter's eval run again. Only a finished arm's
    files are shared (its round-1 summary exists)."""
    import shutil

    from tokenskip.data.jsonl import read_jsonl, write_jsonl_atomic
    from tokenskip.metareason.reward import RewardConfig, reprice

    if not (src / "round-1" / "summary.json").exists():
        return
    cfg = RewardConfig(cost=cost, cost_kind=kind)  # type: ignore[arg-type]
    for rel in ("round-0/eval.jsonl", "round-1/samples.jsonl", "round-1/rationalized.jsonl",
                "round-1/direct.jsonl", "round-0/eval_scored.jsonl", "round-1/scored.jsonl"):  # fmt: skip
        if not (src / rel).exists() or (dst / rel).exists():
            continue
        (dst / rel).parent.mkdir(parents=True, exist_ok=True)
        if not rel.endswith("scored.jsonl"):
            shutil.copyfile(src / rel, dst / rel)
            continue
        rows = [reprice(r, cfg) for _, r in read_jsonl(src / rel)]
        for r in rows:  # the run's recorded price (round-1's scoring settings), as scoring with c writes it
            if "cost_c" in r:
                r["cost_c"], r["cost_kind"] = cost, kind
        write_jsonl_atomic(dst / rel, rows)


def refilter(scored_path: Path, settings: list[tuple[float, str]]) -> str:
    """The filter alone under other prices: the scored rollouts' likelihoods re-priced (pure, no model) for
    each (c, cost kind), and what the filter keeps."""
    from tokenskip.data.jsonl import read_jsonl
    from tokenskip.metareason.reward import RewardConfig, reprice, select

    rows = [r for _, r in read_jsonl(scored_path)]
    lines = [
        "| c | cost | kept | kept thought tokens (mean) | kept thought tokens |",
        "|---|---|---|---|---|",
    ]
    for c, kind in settings:
        cfg = RewardConfig(cost=c, cost_kind=kind)  # type: ignore[arg-type]
        priced = [reprice(r, cfg) for r in rows]
        kept, _ = select(priced)
        toks = sorted(k["thought_tokens"] for k in kept)
        mean = f"{sum(toks) / len(toks):.1f}" if toks else "–"
        lines.append(f"| {c:g} | {kind} | {len(kept)} | {mean} | {toks} |")
    return "\n".join(lines)


def interval(ev: dict) -> tuple[float, float] | None:
    """The 95% Wilson interval of an eval's accuracy (``rollouts`` greedy answers)."""
    from tokenskip.eval.metrics import wilson_interval

    n, a = ev.get("rollouts"), ev.get("accuracy")
    return None if not n or a is None else wilson_interval(round(a * n), n)


def verdict(results: dict[str, list[dict]]) -> str:
    """The issue's question on the last round's evals: does each c > 0 arm end with fewer thought tokens than
    c = 0, at accuracy inside c = 0's 95% interval?"""
    last = {arm: (rounds[-1].get("eval") or {}) for arm, rounds in results.items() if rounds}
    star = last.get("c=0")
    if not star or star.get("accuracy") is None:
        return ""
    ci = interval(star)
    out = []
    for arm, ev in last.items():
        if arm == "c=0" or ev.get("accuracy") is None or ci is None:
            continue
        fewer = ev["thought_tokens"] < star["thought_tokens"]
        inside = ci[0] <= ev["accuracy"] <= ci[1]
        change = 100 * (ev["thought_tokens"] / star["thought_tokens"] - 1) if star["thought_tokens"] else 0.0
        out.append(f"{arm} against c=0 (last round's eval): thought tokens {ev['thought_tokens']:.1f} vs "
                   f"{star['thought_tokens']:.1f} ({change:+.1f}%): {'fewer' if fewer else 'NOT fewer'}; accuracy "
                   f"{ev['accuracy']:.3f} {'inside' if inside else 'OUTSIDE'} c=0's interval "
                   f"({ci[0]:.3f}-{ci[1]:.3f}).")  # fmt: skip
    return ("\n\n" + "\n".join(out)) if out else ""


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    from tokenskip.verbs.metareason import iterate

    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    lines = [x for x in Path(a.data).read_text(encoding="utf-8").split("\n") if x.strip()]
    held = a.questions if a.eval_data is None else 0  # held-out rows follow the training ones in --data
    need = a.questions + (a.eval if a.eval_data is None else 0)
    if len(lines) < need:
        raise SystemExit(f"{a.data}: {len(lines)} rows, need {need}")
    train, test = str(work / "train.jsonl"), str(work / "eval.jsonl") if a.eval else None
    Path(train).write_text("\n".join(lines[: a.questions]) + "\n", encoding="utf-8")
    if test:
        src = lines if a.eval_data is None else [
            x for x in Path(a.eval_data).read_text(encoding="utf-8").split("\n") if x.strip()
        ]  # fmt: skip
        Path(test).write_text("\n".join(src[held : held + a.eval]) + "\n", encoding="utf-8")
    load0, t0 = os.getloadavg(), time.perf_counter()
    print(f"metareason ablation: {a.questions} questions x {a.samples} rollouts, {a.rounds} rounds, eval {a.eval}; "
          f"load average at start {load0[0]:.1f} on {os.cpu_count()} CPUs", flush=True)  # fmt: skip
    results: dict[str, list[dict]] = {}
    times: dict[str, float] = {}
    first: Path | None = None
    reused = sorted(p for p in Path(a.reuse).iterdir() if p.name.startswith("c=")) if a.reuse else []
    for arm, c, kind in arms(a.costs):
        t = time.perf_counter()
        for src in [first, *reused[:1]]:  # this run's first arm, else the reused run's
            if src is not None:
                share(src, work / arm, c, kind)
        first = first or work / arm
        res = iterate(
            out=str(work / arm), dataset=train, limit=a.questions, model=a.model, rounds=a.rounds,
            samples=a.samples, cost=c, cost_kind=kind, max_new_tokens=a.max_new_tokens, max_steps=a.max_steps,
            learning_rate=a.learning_rate, temperature=a.temperature, batch_size=a.batch_size, device=a.device,
            backend=a.backend, dtype=a.dtype, eval_dataset=test, eval_limit=a.eval,
            train_batch_size=a.train_batch_size, grad_accum=a.grad_accum, cutoff=a.cutoff,
        )  # fmt: skip
        results[arm], times[arm] = res["rounds"], time.perf_counter() - t
    lines = [
        "| arm | round | rollout accuracy | rollout thought tokens | rollout utility | kept | kept thought tokens | "
        "eval accuracy | eval thought tokens | eval utility |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]

    def f(v, d=3):
        return "–" if v is None else (f"{v:.{d}f}" if isinstance(v, float) else str(v))

    def acc(ev: dict) -> str:  # the eval accuracy with its 95% Wilson interval
        ci = interval(ev)
        return f(ev.get("accuracy")) + ("" if ci is None else f" ({ci[0]:.3f}-{ci[1]:.3f})")

    for arm, rounds in results.items():
        for s in rounds:
            ev = s.get("eval") or {}
            lines.append(
                f"| {arm} | {s['round']} | {f(s.get('accuracy'))} | {f(s.get('thought_tokens'), 1)} | "
                f"{f(s.get('utility'))} | {f(s.get('kept'))} | {f(s.get('kept_thought_tokens'), 1)} | "
                f"{acc(ev)} | "
                f"{f(ev.get('thought_tokens'), 1)} | {f(ev.get('utility'))} |"
            )
    load1 = os.getloadavg()
    footer = (
        f"\n{a.model} ({a.backend}, {a.dtype}): {a.questions} questions of {Path(a.data).name} x {a.samples} rollouts (T={a.temperature}, max {a.max_new_tokens} "
        f"tokens), {a.rounds} rounds, {a.max_steps} LoRA steps/round, eval: "
        f"{'the next' if a.eval_data is None else 'the first'} {a.eval} questions"
        f"{'' if a.eval_data is None else ' of ' + Path(a.eval_data).name}, "
        f"greedy. Wall time: "
        + ", ".join(f"{k} {v / 60:.1f} min" for k, v in times.items())
        + f" (total {(time.perf_counter() - t0) / 60:.1f} min); load average {load0[0]:.1f} at start, "
        f"{load1[0]:.1f} at end, {os.cpu_count()} CPUs."
    )
    scored = (first / "round-1" / "scored.jsonl") if first else None
    if scored is not None and scored.exists():
        grid = [(0.0, "log"), (0.1, "log"), (1.0, "log"), (3.0, "log"), (0.01, "linear"), (0.03, "linear"),
                (0.1, "linear")]  # fmt: skip
        footer += "\n\nThe round-1 filter alone, re-priced (same rollouts and likelihoods):\n\n" + refilter(
            scored, grid
        )
    table = "\n".join(lines) + "\n" + footer + verdict(results)
    print(table)
    (work / "results.md").write_text(table + "\n", encoding="utf-8")
    (work / "results.json").write_text(json.dumps(results, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
