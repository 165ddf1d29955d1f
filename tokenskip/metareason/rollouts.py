"""One round's generations as methods: K sampled rollouts, STaR rationalizations and the direct answer.

Each kind is a :class:`~tokenskip.methods.base.Method` run through the run's session
(:meth:`tokenskip.session.Session.run`) over :class:`Rollout` items (a question plus which rollout
it is). Rows gain ``qid``, ``source`` (``sample`` / ``rationalized`` / ``direct``) and ``sample`` (k).

* ``sample``: the plain prompt, sampled with seed ``seed + k`` (one backend call per k, so the K rollouts of
  a question differ on every backend, vLLM's per-request seeds included);
* ``rationalized``: the prompt with the hint "(The correct answer is …)" (STaR), seed ``seed + 10000 + k``
  (not the failed sample's, whose random draws it would replay); the recorded ``prompt`` is
  the plain one (what the rollout is scored and trained on), the hinted one is kept as ``hint_prompt``;
* ``direct``: the prompt followed by the answer cue (the empty thought), greedy, a few tokens; the
  recorded output is the cue plus the answer, so its CoT is empty.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from tokenskip.data.datasets import Record
from tokenskip.data.prompts import PromptPreset, forced_answer, format_target, user_message
from tokenskip.inference.base import Generation, StreamCallback
from tokenskip.metareason.reward import hint_question
from tokenskip.methods.base import Context, Method, Request

SOURCES = ("sample", "rationalized", "direct")
# rationalization k samples with seed + RATIONALIZE_SEED + k: the same seed as the failed sample k would replay
# its random draws, and the hinted prompt, close to the plain one, would often retrace the same wrong path
RATIONALIZE_SEED = 10_000


@dataclass
class Rollout(Record):
    """A question as one rollout to generate: ``id`` is ``qid#s<k>``, ``qid#r<k>`` or ``qid#d``."""

    qid: str = ""
    source: str = "sample"
    k: int = 0


def sample_items(records: list[Record], samples: int) -> list[Rollout]:
    """K sampled rollouts per question, k-major (batches hold one k: one backend call each)."""
    return [
        Rollout(f"{r.id}#s{k}", r.question, r.answer, r.cot, r.task, r.where, qid=r.id, source="sample", k=k)
        for k in range(samples)
        for r in records
    ]


def rationalize_items(wrong: list[dict[str, Any]], task_of: dict[str, str]) -> list[Rollout]:
    """One hinted redo per wrong sampled rollout (its k keeps the seed distinct)."""
    return [
        Rollout(
            f"{w['qid']}#r{w['sample']}",
            w["question"],
            str(w["answer"]),
            None,
            task_of.get(w["qid"], "gsm8k"),
            qid=w["qid"],
            source="rationalized",
            k=int(w["sample"]),
        )  # fmt: skip
        for w in wrong
    ]


def direct_items(records: list[Record]) -> list[Rollout]:
    return [
        Rollout(f"{r.id}#d", r.question, r.answer, r.cot, r.task, r.where, qid=r.id, source="direct")
        for r in records
    ]


def direct_prefix(preset: PromptPreset) -> str:
    """What follows the prompt in a direct answer: the answer cue (after a closed, empty thinking block)."""
    return forced_answer(preset) if preset.think_close else preset.answer_cue


class RolloutMethod(Method):
    """Generates :class:`Rollout` items (not in the registry: ``metareason iterate`` runs it)."""

    kind = "ram-rollout"

    def __init__(self, value: Any = None, direct_tokens: int = 32, **options: Any) -> None:
        super().__init__(value, **options)
        self.direct_tokens = direct_tokens

    def prepare(self, ctx: Context, records: list[Record]) -> list[dict[str, Any]]:
        out = []
        for r in records:
            assert isinstance(r, Rollout)
            f: dict[str, Any] = {"qid": r.qid, "source": r.source, "sample": r.k}
            if r.source == "rationalized":
                f["hint"] = r.answer
            out.append(f)
        return out

    def user_turn(self, question: str, preset: PromptPreset, eos: str | None, fields: dict[str, Any]) -> str:
        if fields.get("source") == "rationalized":
            question = hint_question(question, str(fields["hint"]))
        return super().user_turn(question, preset, eos, fields)

    def requests(self, ctx: Context, records: list[Record]) -> list[Request]:
        reqs = super().requests(ctx, records)
        for req in reqs:
            if req.fields["source"] == "direct":
                req.prompt += direct_prefix(ctx.preset).lstrip()
                req.max_new_tokens = self.direct_tokens
        return reqs

    def generate(
        self, ctx: Context, requests: list[Request], on_text: StreamCallback | None = None
    ) -> list[Generation]:
        """One backend call per (source, k): direct answers greedy, sample k with seed ``seed + k``,
        rationalization k with ``seed + RATIONALIZE_SEED + k``."""
        groups: dict[tuple[str, int], list[int]] = {}
        for i, r in enumerate(requests):
            groups.setdefault((r.fields["source"], r.fields["sample"]), []).append(i)
        out: list[Generation | None] = [None] * len(requests)
        for (source, k), idx in groups.items():
            sampling = (
                replace(ctx.sampling, temperature=0.0)
                if source == "direct"
                else replace(
                    ctx.sampling, seed=ctx.sampling.seed + k + (RATIONALIZE_SEED if source != "sample" else 0)
                )
            )
            sub = replace(ctx, sampling=sampling)
            for i, g in zip(idx, super().generate(sub, [requests[i] for i in idx]), strict=True):
                out[i] = g
        return [g for g in out if g is not None]

    def finish(
        self, ctx: Context, record: Record, request: Request, gen: Generation
    ) -> tuple[Generation, dict]:
        plain = self.plain_prompt(ctx, record.question)
        source = request.fields["source"]
        extra: dict[str, Any] = {"prompt": plain}
        if source == "direct":
            gen = replace(gen, text=direct_prefix(ctx.preset) + gen.text)
        elif source == "rationalized":
            extra["hint_prompt"] = request.prompt
        return gen, extra

    def plain_prompt(self, ctx: Context, question: str) -> str:
        return Method.prompt(self, ctx, question, {})


def training_output(row: dict[str, Any], preset: PromptPreset) -> str:
    """The completion a kept rollout is trained on: its CoT and the gold answer in the preset's answer
    sentence (thinking presets: the output as generated)."""
    if preset.think_close:
        return row["output"]
    return format_target(row.get("cot") or "", str(row["answer"]), preset).lstrip()


def sft_rows(kept: list[dict[str, Any]], preset: PromptPreset) -> list[dict[str, Any]]:
    """The kept rollouts as build-sft rows (γ = 1.0, no ratio in the prompt) that ``tokenskip train`` reads."""
    rows = []
    for row in kept:
        message = user_message(row["question"], None, preset, preset.delimiter)
        instruction = (
            preset.instruction if preset.instruction and message.startswith(preset.instruction + "\n") else ""
        )
        rows.append({
            "id": row["id"], "ratio": 1.0, "question": row["question"], "answer": row["answer"],
            "instruction": instruction, "input": message[len(instruction) + 1 :] if instruction else message,
            "output": training_output(row, preset),
        })  # fmt: skip
    return rows


def sft_info(examples: int, preset: PromptPreset, model: str) -> dict[str, Any]:
    """The build-sft folder's info file for :func:`sft_rows` (mixture ``metareason``)."""
    return {
        "examples": examples, "ratios": [1.0], "per_ratio": {"1.0": examples}, "preset": preset.name,
        "delimiter": preset.delimiter, "delimiter_source": "preset", "model": model,
        "instruction": preset.instruction, "system": preset.system, "answer_template": preset.answer_template,
        "seed": 0, "mixture": "metareason", "original": None, "compressed": None,
    }  # fmt: skip
