"""``tokenskip metareason iterate``: RaM's expert iteration, every step written and resumable; and ``tokenskip
metareason score``: RaM's reward for every record of a generated JSONL (:mod:`tokenskip.metareason.score`).

Round r (folder ``OUT/round-r``), generating with the previous round's adapter (round 1: ``--adapter``, or
the base model):

1. ``samples.jsonl``: K sampled rollouts per question (``--samples``, seed + k);
2. ``rationalized.jsonl``: each wrong sample redone with the hint "(The correct answer is …)" (STaR);
3. ``direct.jsonl``: the direct answer (empty thought), greedy;
4. ``scored.jsonl``: every row of 1-3 with ``logp_thought``, ``logp_direct``, ``utility``, ``cost``,
   ``reward`` from the generating model (one batched forward pass per batch);
5. ``kept.jsonl`` + ``sft/``: :func:`~tokenskip.metareason.reward.select` (drop questions with no correct
   rollout, keep correct rollouts with reward >= the question's mean), as a build-sft folder;
6. ``adapter/``: a LoRA adapter trained on ``sft/`` by :func:`tokenskip.verbs.train.train` (from the base
   model, STaR's restart; the data come from the latest model); resumes from its checkpoints;
7. ``eval.jsonl`` (with ``--eval_dataset``): the new adapter, greedy, as the ``ram`` method;
8. ``summary.json``, written last: the round's figures (a round with it is done).

Steps 1-4 and 7 go through the one resumable runner, so a killed run loses at most a batch and re-running
the same command continues at the step where it stopped. Generation goes through one
:class:`~tokenskip.session.Session` (vLLM: one engine for the whole run, started with LoRA up to the run's rank,
each round's adapter switched in per request; on a GPU it is closed before scoring and training and started
again when generation resumes; hf: the model with the adapter in its weights, kept while the adapter stays the
same and scored with its own weights, closed before training). ``OUT/summary.json`` and ``OUT/metareason.png`` (mean
reward, mean thought tokens and accuracy per round) are rewritten after every round.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Literal

from tokenskip.args import DataArgs, EngineArgs, LoRAArgs, ModelArgs, SamplingArgs, flat_options
from tokenskip.data.jsonl import read_jsonl, write_json_atomic, write_jsonl_atomic
from tokenskip.data.resume import check_run_file
from tokenskip.errors import UserError
from tokenskip.inference.runner import run_records
from tokenskip.metareason.reward import CostKind, RewardConfig, select, summarize
from tokenskip.metareason.rollouts import (
    RolloutMethod,
    direct_items,
    rationalize_items,
    sample_items,
    sft_info,
    sft_rows,
)
from tokenskip.metareason.score import Scorer, open_scorer, read_scorable
from tokenskip.models import release_memory
from tokenskip.session import Session

Algorithm = Literal["expert-iteration", "grpo"]
RUN_FILE = "run.json"
ADAPTER_DONE = "tokenskip_adapter.json"
# run.json keys a resumed run must share with the first one (--rounds may grow)
RESUME_KEYS = (
    "algorithm", "model", "adapter", "adapter_sha256", "backend", "dtype", "dataset", "split", "limit", "samples",
    "cost", "cost_kind", "temperature", "top_p", "seed", "stop", "max_new_tokens", "preset", "rationalize",
    "direct", "lora_rank", "lora_alpha", "target_modules", "learning_rate", "epochs", "max_steps", "cutoff",
    "eval_dataset", "eval_limit",
)  # fmt: skip


def read_rows(path: Path) -> list[dict[str, Any]]:
    if not path.exists() or path.stat().st_size == 0:
        return []
    return [r for _, r in read_jsonl(path)]


class Round:
    """One round's folder and the model it generates with."""

    def __init__(self, out: Path, r: int, adapter: str | None) -> None:
        self.r, self.dir, self.adapter = r, out / f"round-{r}", adapter
        self.dir.mkdir(parents=True, exist_ok=True)

    def path(self, name: str) -> Path:
        return self.dir / name

    @property
    def new_adapter(self) -> Path:
        return self.dir / "adapter"

    def done(self) -> bool:
        return self.path("summary.json").exists()


def write_sft(folder: Path, kept: list[dict[str, Any]], preset: Any, model: str) -> None:
    """The kept rollouts as a build-sft folder (γ = 1.0 rows) that ``tokenskip train`` reads."""
    from tokenskip.training.sft_folder import INFO_FILE, SFT_FILE

    rows = sft_rows(kept, preset)
    write_jsonl_atomic(folder / SFT_FILE, rows)
    write_json_atomic(folder / INFO_FILE, sft_info(len(rows), preset, model))


@flat_options(
    data=DataArgs(split="train"),
    model=ModelArgs(),
    sampling=SamplingArgs(temperature=0.7, max_new_tokens=256),
    engine=EngineArgs(),
    lora=LoRAArgs(),
)
def iterate(
    out: str,
    data: DataArgs,
    model: ModelArgs,
    sampling: SamplingArgs,
    engine: EngineArgs,
    lora: LoRAArgs,
    rounds: int = 1,
    samples: int = 4,
    cost: float = 0.1,
    cost_kind: CostKind = "log",
    algorithm: Algorithm = "expert-iteration",
    rationalize: bool = True,
    direct: bool = True,
    direct_tokens: int = 32,
    preset: str | None = None,
    learning_rate: float = 1e-4,
    epochs: float = 1.0,
    max_steps: int = -1,
    train_batch_size: int = 4,
    grad_accum: int = 1,
    cutoff: int = 1024,
    score_batch_size: int = 8,
    eval_dataset: str | None = None,
    eval_limit: int | None = None,
    grpo_steps: int = 20,
    plot: bool = True,
) -> dict[str, Any]:
    """Rational Metareasoning: expert iteration (or GRPO) on reward = utility − c·log(1+|z|), resumable.

    Args:
        out: run folder: run.json, round-N/ (samples, rationalized, direct, scored, kept .jsonl, sft/,
            adapter/, eval.jsonl, summary.json), summary.json, metareason.png. Re-running resumes.
        rounds: rounds of expert iteration (re-running with more rounds continues the run).
        samples: K sampled rollouts per question and round.
        cost: c, the price of thinking (0 = no length penalty: STaR's filter).
        cost_kind: log (c·log(1+|z|), the paper's) or linear (c·|z|).
        algorithm: expert-iteration (sample, filter, fine-tune) or grpo (trl GRPOTrainer on the same reward).
        rationalize: redo each wrong rollout with the hint "(The correct answer is ...)" (STaR).
        direct: add the direct answer (empty thought, reward 0) as a candidate rollout.
        direct_tokens: token cap of a direct answer.
        preset: prompt preset (default: the --adapter's recorded one, else default).
        learning_rate: LoRA learning rate per round.
        epochs: epochs over each round's kept rollouts.
        max_steps: optimizer steps per round (overrides --epochs when > 0).
        train_batch_size: training examples per forward pass.
        grad_accum: gradient accumulation steps.
        cutoff: maximum tokens of a training example.
        score_batch_size: sequences per scoring forward pass.
        eval_dataset: held-out questions evaluated greedily after every round (and before the first) with
            the round's adapter (the `ram` method); same forms as --dataset.
        eval_limit: only the first N eval questions.
        grpo_steps: GRPO optimizer steps per round (--algorithm grpo).
        plot: write metareason.png (mean reward, thought tokens, accuracy per round).
    """
    if rounds < 1 or samples < 1 or direct_tokens < 1 or score_batch_size < 1:
        raise UserError("--rounds, --samples, --direct_tokens and --score_batch_size must be >= 1")
    cfg = RewardConfig(cost=cost, cost_kind=cost_kind)
    records, _ = data.load()
    if not records:
        raise UserError(f"--dataset {data.dataset}: no questions")
    eval_records = []
    if eval_dataset:
        eval_records, _ = DataArgs(dataset=eval_dataset, split="test", limit=eval_limit).load()
    session = Session(model, sampling, preset, engine, on_error=data.on_error, lora_rank=lora.lora_rank)
    prompt_preset = session.preset
    run_dir = Path(out)
    settings = {
        **session.base_settings(), "algorithm": algorithm, "dataset": data.dataset, "split": data.split,
        "limit": data.limit, "questions": len(records), "samples": samples, "cost": cost, "cost_kind": cost_kind,
        "rationalize": rationalize, "direct": direct, "direct_tokens": direct_tokens, "lora_rank": lora.lora_rank,
        "lora_alpha": lora.lora_alpha, "target_modules": lora.target_modules, "learning_rate": learning_rate,
        "epochs": epochs, "max_steps": max_steps, "cutoff": cutoff, "eval_dataset": eval_dataset,
        "eval_limit": eval_limit, "grpo_steps": grpo_steps, "rounds": rounds,
    }  # fmt: skip
    check_run_file(run_dir / RUN_FILE, settings, RESUME_KEYS)
    from tokenskip.metareason.plot import write_outputs

    t0 = time.perf_counter()
    summaries: list[dict[str, Any]] = []
    adapter = model.adapter
    with session:
        if eval_records:
            summaries.append(_round0(run_dir, session, eval_records, cfg, score_batch_size))
        for r in range(1, rounds + 1):
            rnd = Round(run_dir, r, adapter)
            if not rnd.done():
                print(f"tokenskip: metareason round {r}/{rounds} ({algorithm}, c={cost}, {cost_kind} cost)",
                      flush=True)  # fmt: skip
                if algorithm == "grpo":
                    from tokenskip.metareason.grpo import grpo_round

                    session.release()
                    summary = grpo_round(rnd, records, model, sampling, lora, cfg, prompt_preset, samples,
                                         learning_rate, grpo_steps, cutoff, train_batch_size)  # fmt: skip
                else:
                    summary = _expert_round(
                        rnd, session, records, lora, cfg, samples, rationalize, direct, direct_tokens,
                        learning_rate, epochs, max_steps, train_batch_size, grad_accum, cutoff, score_batch_size,
                    )  # fmt: skip
                if eval_records:
                    trained = str(rnd.new_adapter) if summary.get("trained", True) else adapter
                    summary["eval"] = _evaluate(rnd.path("eval.jsonl"), session, trained, eval_records, cfg,
                                                score_batch_size)  # fmt: skip
                summary["elapsed_s"] = round(time.perf_counter() - t0, 1)
                write_json_atomic(rnd.path("summary.json"), summary)
            summaries.append(json.loads(rnd.path("summary.json").read_text(encoding="utf-8")))
            write_outputs(run_dir, summaries, plot)
            if summaries[-1].get("trained", True):
                adapter = str(rnd.new_adapter)
    print(f"tokenskip: metareason done: {rounds} round(s) -> {run_dir} (adapter {adapter})")
    return {"rounds": summaries, "adapter": adapter}


def _expert_round(
    rnd: Round, session: Session, records, lora: LoRAArgs, cfg: RewardConfig, samples: int, rationalize: bool,
    direct: bool, direct_tokens: int, learning_rate: float, epochs: float, max_steps: int, train_batch_size: int,
    grad_accum: int, cutoff: int, score_batch_size: int,
) -> dict[str, Any]:  # fmt: skip
    method = RolloutMethod(direct_tokens=direct_tokens)
    model = session.model

    def generate(items: list, name: str, what: str) -> None:  # one rollout file, with the round's model
        session.run(method, items, rnd.path(name), adapter=rnd.adapter, settings={"generated_with": rnd.adapter},
                    desc=f"round {rnd.r} {what}")  # fmt: skip

    # 1-3. rollouts (each file is finished before the next starts: the next step's items depend on it)
    generate(sample_items(records, samples), "samples.jsonl", "samples")
    rows = read_rows(rnd.path("samples.jsonl"))
    if rationalize:
        wrong = [w for w in rows if not w["correct"]]
        tasks = {r.id: r.task for r in records}
        generate(rationalize_items(wrong, tasks), "rationalized.jsonl", "rationalize")
        rows += read_rows(rnd.path("rationalized.jsonl"))
    if direct:
        generate(direct_items(records), "direct.jsonl", "direct")
        rows += read_rows(rnd.path("direct.jsonl"))
    # 4. rewards from the generating model (the hf generator's own weights when it has them)
    _score(session, rnd.adapter, rows, rnd.path("scored.jsonl"), cfg, score_batch_size, f"round {rnd.r} score",
           {"cost_c": cfg.cost, "cost_kind": cfg.cost_kind})  # fmt: skip
    session.release()
    # scored longest-first; the filter reads them in rollout order
    at = {str(r["id"]): i for i, r in enumerate(rows)}
    scored = sorted(read_rows(rnd.path("scored.jsonl")), key=lambda r: at[str(r["id"])])
    # 5. the filter, as a build-sft folder
    kept, counts = select(scored)
    write_jsonl_atomic(rnd.path("kept.jsonl"), kept)
    summary = {"round": rnd.r, "generated_with": rnd.adapter, **summarize(scored, kept), **counts}
    if not kept:
        print(
            f"tokenskip: warning: round {rnd.r}: no question has a correct rollout, nothing to train on; the "
            "next round samples from the same model (try more --samples, --max_new_tokens or questions)"
        )
        summary["trained"] = False
        return summary
    summary["trained"] = True
    write_sft(rnd.path("sft"), kept, session.preset, model.model)
    # 6. the adapter (resumes from its checkpoints; tokenskip_adapter.json marks it finished)
    if not (rnd.new_adapter / ADAPTER_DONE).exists():
        from tokenskip.verbs.train import train

        # the generator goes before training, on a CPU too: a 0.5B LoRA step (4 x 768 tokens) peaks near 19 GB,
        # and beside a kept vLLM CPU engine (~5 GB) it was OOM-killed on a 24 GB machine; the next generation
        # (this round's eval, the next round's rollouts) opens it again (~1 min against ~1 h of training)
        session.close()
        train(
            data=str(rnd.path("sft")), out=str(rnd.new_adapter), model=model.model, lora_rank=lora.lora_rank,
            lora_alpha=lora.lora_alpha, lora_dropout=lora.lora_dropout, target_modules=lora.target_modules,
            learning_rate=learning_rate, epochs=epochs, max_steps=max_steps, batch_size=train_batch_size,
            grad_accum=grad_accum, cutoff=cutoff, eval_size=0, save_steps=5, logging_steps=5, seed=rnd.r,
            dtype=model.dtype, device=model.device, progress="none",
        )  # fmt: skip
        release_memory()  # the trainer's ~18 GB peak goes back before the eval's engine starts beside it
    return summary


def _scorer(session: Session, adapter: str | None, cfg: RewardConfig, batch_size: int) -> Any:
    """A :class:`~tokenskip.metareason.score.Scorer` for ``adapter``: the open hf generator's own weights when
    it runs that adapter, else the model loaded for scoring (after the generator's memory is released)."""
    gen = session.gen
    if gen is not None and not session.vllm and session.loaded == (adapter or None):
        return Scorer(gen.model, gen.tokenizer, session.preset, cfg, batch_size)  # type: ignore[attr-defined]
    session.release()
    m = session.model
    return open_scorer(m.model, adapter, session.preset.name, cfg, batch_size, m.dtype, m.device)


def _score(session: Session, adapter: str | None, rows: list[dict[str, Any]], path: Path, cfg: RewardConfig,
           batch: int, desc: str, settings: dict[str, Any] | None = None) -> None:  # fmt: skip
    """Score ``rows`` into ``path`` (resumable) with the model that generated them."""
    scorers: list = []

    def step(b: list[dict[str, Any]]) -> list[dict[str, Any]]:
        if not scorers:
            scorers.append(_scorer(session, adapter, cfg, batch))
        return scorers[0].score(b)

    run_records(
        rows, step, path, batch, settings or {}, key=lambda r: str(r["id"]), order=_by_length, desc=desc
    )
    scorers.clear()
    release_memory()  # a scoring model of its own goes back before training or the next engine


def _by_length(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows of similar length batched together (little padding in a scoring forward pass): longest first, so
    the first batch shows the peak memory at once. The length is the characters of prompt and thought."""
    return sorted(
        rows,
        key=lambda r: (
            -len((r.get("prompt") or r.get("question") or "") + (r.get("cot") or r.get("output") or ""))
        ),
    )


def _evaluate(path: Path, session: Session, adapter: str | None, records, cfg: RewardConfig,
              score_batch_size: int) -> dict[str, Any]:  # fmt: skip
    """Greedy ``ram`` (the adapter) or ``original`` on held-out questions, scored; the mean figures."""
    from dataclasses import replace

    from tokenskip.methods import get_method

    method = get_method("ram" if adapter else "original")
    greedy = replace(session.sampling, temperature=0.0)
    session.run(
        method, records, str(path), adapter=adapter, sampling=greedy, settings={"eval_adapter": adapter}
    )
    scored_path = path.with_name(path.stem + "_scored.jsonl")
    _score(session, adapter, read_rows(path), scored_path, cfg, score_batch_size, "eval score")
    s = summarize(read_rows(scored_path))
    return {k: s[k] for k in ("rollouts", "accuracy", "thought_tokens", "utility", "cost", "reward")}


def _round0(
    run_dir: Path, session: Session, records, cfg: RewardConfig, score_batch_size: int
) -> dict[str, Any]:
    """Round 0: the starting model on the eval questions (the baseline every round is compared with)."""
    d = run_dir / "round-0"
    d.mkdir(parents=True, exist_ok=True)
    if not (d / "summary.json").exists():
        ev = _evaluate(d / "eval.jsonl", session, session.model.adapter, records, cfg, score_batch_size)
        write_json_atomic(d / "summary.json", {"round": 0, "eval": ev})
    return json.loads((d / "summary.json").read_text(encoding="utf-8"))


def score(
    input: str,
    out: str,
    model: str = "smollm2-135m",
    adapter: str | None = None,
    preset: str | None = None,
    cost: float = 0.1,
    cost_kind: CostKind = "log",
    batch_size: int = 8,
    dtype: str = "auto",
    device: str = "auto",
) -> dict[str, Any]:
    """Score every record of a generated JSONL with RaM's reward (utility − cost), resumable.

    Args:
        input: records with id, answer, prompt (or question) and cot (or output), e.g. `tokenskip generate`
            output: .jsonl, .json or .parquet (.jsonl.gz / .json.gz too).
        out: output JSONL: the input records plus logp_thought, logp_direct, thought_tokens, utility, cost,
            reward (and the scoring settings). Re-running resumes.
        model: the model whose likelihoods price the thoughts (alias, hub id or folder).
        adapter: optional peft adapter on top of --model (e.g. a `metareason iterate` round's adapter).
        preset: prompt preset for records without a prompt, and for the answer cue; default: the adapter's.
        cost: c, the price of thinking (0 = no length penalty).
        cost_kind: log (c·log(1+|z|), the paper's) or linear (c·|z|).
        batch_size: sequences per forward pass.
        dtype: auto (bf16 on a GPU or an AMX CPU, else fp32), float32, bfloat16, float16.
        device: auto, cpu, cuda, cuda:N.
    """
    from tokenskip.inference.runner import run_records

    cfg = RewardConfig(cost=cost, cost_kind=cost_kind)
    if batch_size < 1:
        raise UserError(f"--batch_size must be >= 1, got {batch_size}")
    rows = read_scorable(input)
    scorers: list[Scorer] = []

    def step(batch: list[dict[str, Any]]) -> list[dict[str, Any]]:
        if not scorers:
            scorers.append(open_scorer(model, adapter, preset, cfg, batch_size, dtype, device))
        return scorers[0].score(batch)

    settings = {"score_model": model, "score_adapter": adapter, "cost_c": cost, "cost_kind": cost_kind}
    t0 = time.perf_counter()
    result = run_records(rows, step, out, batch_size, settings, key=lambda r: str(r["id"]), desc="score")
    done = result.rows
    mean = (
        {
            k: round(sum(r[k] for r in done) / len(done), 4)
            for k in ("utility", "cost", "reward", "thought_tokens")
        }
        if done
        else {}
    )
    print(
        f"tokenskip: scored {result.generated} records ({result.skipped} already done) -> {out} "
        f"({time.perf_counter() - t0:.1f}s){'; mean ' + str(mean) if mean else ''}"
    )
    return {**result.counts(), **mean}
