"""RaM's reward for every record of a generated JSONL, on any model (the verb ``tokenskip metareason score``:
:mod:`tokenskip.verbs.metareason`).

Each record (``tokenskip generate``/``infer``/``bench`` output, or a ``metareason iterate`` rollout) needs
``id``, ``answer`` (the gold answer) and ``prompt`` (else ``question``, and the prompt is rebuilt with the
preset) and ``cot`` (else ``output``, split at the answer cue). The scorer adds ``logp_thought``
(``log p(y*|x,z)``), ``logp_direct`` (``log p(y*|x,∅)``), ``thought_tokens``, ``utility``, ``cost`` and
``reward``; the likelihoods come from one batched forward pass per batch (:mod:`.likelihood`), the direct
answer's once per prompt. Output is resumable like every other verb.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tokenskip.data.prompts import PromptPreset, format_prompt, split_answer
from tokenskip.errors import UserError
from tokenskip.metareason.likelihood import answer_context, answer_logprobs
from tokenskip.metareason.reward import RewardConfig, reward


class Scorer:
    """A causal LM (``model``, ``tokenizer``) that prices thoughts with :class:`RewardConfig`."""

    def __init__(
        self, model: Any, tokenizer: Any, preset: PromptPreset, cfg: RewardConfig, batch_size: int = 8,
        cache_direct: bool = True,
    ) -> None:  # fmt: skip
        self.model, self.tokenizer, self.preset, self.cfg, self.batch_size = (
            model, tokenizer, preset, cfg, batch_size,
        )  # fmt: skip
        # (prompt, gold) -> log p(y*|x,∅), kept across batches while the model does not change (not in GRPO)
        self.cache_direct = cache_direct
        self.direct: dict[tuple[str, str], float] = {}

    def prompt(self, row: dict[str, Any]) -> str:
        return row.get("prompt") or format_prompt(self.tokenizer, row["question"], None, self.preset)

    def thought(self, row: dict[str, Any]) -> str:
        if isinstance(row.get("cot"), str):
            return row["cot"]
        return split_answer(row.get("output") or "", self.preset)[0]

    def thought_tokens(self, row: dict[str, Any], thought: str) -> int:
        if not thought.strip():
            return 0
        if isinstance(row.get("cot_tokens"), int):
            return row["cot_tokens"]
        return len(self.tokenizer(thought, add_special_tokens=False)["input_ids"])

    def score(self, rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        """The rows with the likelihood and reward fields added (new dicts, input order)."""
        prompts = [self.prompt(r) for r in rows]
        thoughts = [self.thought(r) for r in rows]
        gold = [str(r["answer"]).strip() for r in rows]
        if not self.cache_direct:
            self.direct = {}
        direct_keys = [k for k in dict.fromkeys(zip(prompts, gold, strict=True)) if k not in self.direct]
        # an empty thought is the direct answer itself (utility 0 exactly): only non-empty ones are scored
        thinking = [i for i, t in enumerate(thoughts) if t.strip()]
        pairs = [(answer_context(prompts[i], thoughts[i], self.preset), gold[i]) for i in thinking]
        pairs += [(answer_context(p, "", self.preset), a) for p, a in direct_keys]
        lps = answer_logprobs(self.model, self.tokenizer, pairs, self.batch_size)
        self.direct.update(zip(direct_keys, lps[len(thinking) :], strict=True))
        own = dict(zip(thinking, lps[: len(thinking)], strict=True))
        out = []
        for i, (r, p, t, a) in enumerate(zip(rows, prompts, thoughts, gold, strict=True)):
            n = self.thought_tokens(r, t)
            lp0 = self.direct[(p, a)]
            lp = own.get(i, lp0)
            priced = reward(lp, lp0, n, self.cfg)
            out.append(
                {**r, "logp_thought": round(lp, 6), "logp_direct": round(lp0, 6), "thought_tokens": n,
                 **{k: round(v, 6) for k, v in priced.items()}}
            )  # fmt: skip
        return out


def check_row(path: str, lineno: int, row: dict[str, Any]) -> None:
    """A UserError naming file and line (or row) when a record lacks what scoring needs."""
    from tokenskip.data.inputs import locate

    where = locate(path, lineno)
    if row.get("id") is None:
        raise UserError(f"{where}: record has no 'id'")
    if row.get("answer") is None or not str(row["answer"]).strip():
        raise UserError(f"{where}: record has no gold 'answer' to score")
    if not isinstance(row.get("prompt") or row.get("question"), str):
        raise UserError(f"{where}: record needs a 'prompt' or a 'question'")
    if not isinstance(row.get("cot"), str) and not isinstance(row.get("output"), str):
        raise UserError(f"{where}: record needs a 'cot' or an 'output'")


def read_scorable(path: str) -> list[dict[str, Any]]:
    from tokenskip.data.inputs import locate, read_rows

    rows, seen = [], set()
    for lineno, row in read_rows(path):
        check_row(path, lineno, row)
        if str(row["id"]) in seen:
            raise UserError(f"{locate(path, lineno)}: duplicate id {row['id']!r}")
        seen.add(str(row["id"]))
        rows.append(row)
    if not rows:
        raise UserError(f"{path}: no records")
    return rows


def open_scorer(
    model: str, adapter: str | None, preset: str | None, cfg: RewardConfig, batch_size: int,
    dtype: str = "auto", device: str = "auto",
) -> Scorer:  # fmt: skip
    """A :class:`Scorer` on ``model`` (+ ``adapter``) with the preset the adapter records (else ``preset``)."""
    from tokenskip.data.adapters import resolve_preset
    from tokenskip.inference.hf import load_adapter
    from tokenskip.models import load_model

    m, tok = load_model(model, dtype=dtype, device=device)
    if adapter:
        m = load_adapter(m, adapter)
    return Scorer(m, tok, resolve_preset(preset, adapter, model), cfg, batch_size)
