"""``log p(y*|x,z)``: the gold answer's log-likelihood after a thought and the answer cue, batched.

The scored text is ``prompt + thought + cue + answer``: the cue is what the model writes before its answer
(``"\\n\\nThe final answer is: $\\boxed{"``; for thinking presets the closed thinking block first, see
:func:`tokenskip.data.prompts.forced_answer`). The empty thought ∅ is the prompt followed directly by the
cue. Context and answer are tokenized separately (the answer's tokens are what the model would emit after
the cue) and ``log p`` is the sum of the answer tokens' log-probabilities.

Sequences are left-padded with explicit position ids, so every row's answer sits at the end of the batch and
only those last positions go through the LM head (``logits_to_keep``); a batched score equals the unbatched
one (tested).
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

from tokenskip.data.prompts import PromptPreset, forced_answer


def answer_context(prompt: str, thought: str, preset: PromptPreset) -> str:
    """The text the gold answer is scored after: prompt, thought (may be empty) and the answer cue."""
    if preset.think_close:
        return prompt + thought + forced_answer(preset)
    if not thought.strip():
        return prompt + preset.answer_cue.lstrip()
    return prompt + thought.rstrip() + preset.answer_cue


def _accepts_logits_to_keep(model: Any) -> bool:
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "logits_to_keep" in inspect.signature(base.forward).parameters


def encode_pairs(tokenizer: Any, pairs: Sequence[tuple[str, str]]) -> list[tuple[list[int], list[int]]]:
    """``(context ids, answer ids)`` per pair (no special tokens added: prompts carry their own)."""
    out = []
    for context, answer in pairs:
        c = tokenizer(context, add_special_tokens=False)["input_ids"]
        a = tokenizer(answer, add_special_tokens=False)["input_ids"]
        if not a:
            raise ValueError(f"empty gold answer {answer!r}")
        out.append((c, a))
    return out


def answer_logprobs(
    model: Any, tokenizer: Any, pairs: Sequence[tuple[str, str]], batch_size: int = 8
) -> list[float]:
    """Sum of the answer tokens' log-probabilities after each context; one forward pass per batch.

    Rows are sorted by length before batching (less padding) and returned in input order.
    """
    import torch

    encoded = encode_pairs(tokenizer, pairs)
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i][0]) + len(encoded[i][1]))
    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    keep_ok = _accepts_logits_to_keep(model)
    out = [0.0] * len(encoded)
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        seqs = [encoded[i][0] + encoded[i][1] for i in idx]
        width = max(len(s) for s in seqs)
        ids = torch.full((len(idx), width), pad, dtype=torch.long)
        mask = torch.zeros((len(idx), width), dtype=torch.long)
        for row, s in enumerate(seqs):
            ids[row, width - len(s) :] = torch.tensor(s)
            mask[row, width - len(s) :] = 1
        positions = (mask.cumsum(dim=1) - 1).clamp(min=0)
        longest = max(len(encoded[i][1]) for i in idx)
        kwargs: dict[str, Any] = {}
        if keep_ok:
            kwargs["logits_to_keep"] = longest + 1
        with torch.no_grad():
            logits = model(
                input_ids=ids.to(device),
                attention_mask=mask.to(device),
                position_ids=positions.to(device),
                use_cache=False,
                **kwargs,
            ).logits.float()
        logits = logits[:, -(longest + 1) :]
        logp = torch.log_softmax(logits[:, :-1], dim=-1)  # position j predicts token j+1
        for row, i in enumerate(idx):
            answer = encoded[i][1]
            n = len(answer)
            target = torch.tensor(answer, device=logp.device)
            picked = logp[row, longest - n :, :].gather(1, target[:, None]).squeeze(1)
            out[i] = float(picked.sum())
    return out
