"""Self-information scorer (Selective Context): a word matters as much as it surprises a causal LM.

Each token's surprisal ``-log p(token | prefix)`` under a causal LM (default: the embedded model, so it
works offline) is summed over the word it belongs to (words: :data:`tokenskip.compressors.prune.WORD_RE`).
This is the Selective-Context baseline of the TokenSkip paper and tokenskip's offline default scorer.
Force tokens, ``keep_digits`` and ``drop_consecutive`` work as for the LLMLingua-2 scorer (TokenSkip's
LLaMA-3 settings keep every number of the CoT).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from tokenskip.compressors.base import Scorer, resolve_device_dtype, run_batched
from tokenskip.compressors.prune import ScoredText, protect_words, regex_words, token_word_index
from tokenskip.errors import UserError


class SelfInfoScorer(Scorer):
    """Word scores = summed token surprisal under a causal LM.

    Args:
        model: embedded alias, hub id or local folder of a causal LM (default: the embedded model).
        device: ``auto``, ``cpu``, ``cuda`` ...
        dtype: ``auto`` (bf16/fp16 on CUDA, fp32 on CPU) or an explicit dtype.
        aggregate: ``sum`` (Selective Context: a word's self-information) or ``mean`` per token.
        window: tokens per model window; longer texts are scored window by window (never truncated).
        max_batch_tokens: padded tokens per forward pass.
        max_batch_size: rows per forward pass.
        force_tokens: words always kept (e.g. ``["Step", ":"]``).
        keep_digits: always keep words containing a digit.
        drop_consecutive: drop a force token that repeats the kept word before it.
        trust_remote_code: allow checkpoints with custom code (off by default).
    """

    name = "selfinfo"

    def __init__(
        self,
        model: str = "smollm2-135m",
        device: str = "auto",
        dtype: str = "auto",
        aggregate: str = "sum",
        window: int = 1024,
        max_batch_tokens: int = 8192,
        max_batch_size: int = 64,
        force_tokens: Sequence[str] = (),
        keep_digits: bool = False,
        drop_consecutive: bool = False,
        trust_remote_code: bool = False,
    ) -> None:
        from tokenskip.models import load_model

        if aggregate not in ("sum", "mean"):
            raise UserError(f"aggregate must be 'sum' or 'mean', got '{aggregate}'")
        if window < 2:
            raise UserError(f"window must be >= 2, got {window}")
        self.device, _ = resolve_device_dtype(device, dtype)
        self.model_name = model
        self.model, self.tokenizer = load_model(
            model, dtype=dtype, device=self.device, trust_remote_code=trust_remote_code
        )
        if getattr(self.tokenizer, "backend_tokenizer", None) is None:
            raise UserError(f"the selfinfo scorer needs a fast tokenizer; '{model}' has none")
        tok = self.tokenizer
        self.bos_id = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
        self.pad_id = tok.pad_token_id if tok.pad_token_id is not None else (self.bos_id or 0)
        self.aggregate = aggregate
        self.window = window
        self.max_batch_tokens = max_batch_tokens
        self.max_batch_size = max_batch_size
        self.force_tokens = [str(t) for t in force_tokens]
        self.keep_digits = keep_digits
        self.drop_consecutive = drop_consecutive

    def describe(self) -> dict[str, Any]:
        return {
            "scorer": self.name,
            "model": self.model_name,
            "aggregate": self.aggregate,
            "force_tokens": self.force_tokens,
            "keep_digits": self.keep_digits,
            "drop_consecutive": self.drop_consecutive,
            "device": self.device,
        }

    def _forward(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            input_ids = torch.from_numpy(ids).to(self.device)
            attention = torch.from_numpy(mask).to(self.device)
            logits = self.model(input_ids=input_ids, attention_mask=attention).logits[:, :-1]
            logp = torch.log_softmax(logits.float(), dim=-1)
            nll = -logp.gather(-1, input_ids[:, 1:, None]).squeeze(-1)
            out = torch.zeros(ids.shape, dtype=torch.float32, device=nll.device)
            out[:, 1:] = nll  # position 0 is the BOS / context token
            return out.cpu().numpy()

    def score(self, texts: Sequence[str]) -> list[ScoredText]:
        enc = self.tokenizer(list(texts), add_special_tokens=False, return_offsets_mapping=True)
        step = self.window - 1
        seqs: list[np.ndarray] = []
        owners: list[tuple[int, int, int]] = []
        for ti in range(len(texts)):
            ids = np.asarray(enc["input_ids"][ti], dtype=np.int64)
            for st in range(0, len(ids), step):
                ed = min(st + step, len(ids))
                # each window is conditioned on BOS (or, after the first, on the previous window's last token)
                ctx = self.bos_id if st == 0 or self.bos_id is None else None
                head = [ctx] if ctx is not None else [int(ids[st - 1])]
                seqs.append(np.concatenate([np.asarray(head, dtype=np.int64), ids[st:ed]]))
                owners.append((ti, st, ed))
        values = run_batched(seqs, self._forward, self.pad_id, self.max_batch_tokens, self.max_batch_size)
        surprisal = [np.zeros(len(ids), dtype=np.float64) for ids in enc["input_ids"]]
        for (ti, st, ed), v in zip(owners, values, strict=True):
            surprisal[ti][st:ed] = v[1 : 1 + ed - st]
        out = []
        for ti, text in enumerate(texts):
            starts, ends = regex_words(text)
            offs = np.asarray(enc["offset_mapping"][ti], dtype=np.int64).reshape(-1, 2)
            scores = np.zeros(len(starts), dtype=np.float64)
            if len(starts) and len(offs):
                idx = token_word_index(starts, ends, offs[:, 0])
                inside = offs[:, 1] > starts[idx]  # tokens entirely in a gap (spaces, newlines) score nothing
                scores = np.bincount(idx[inside], weights=surprisal[ti][inside], minlength=len(starts))
                if self.aggregate == "mean":
                    scores = scores / np.maximum(np.bincount(idx[inside], minlength=len(starts)), 1)
            scores, force_keys = protect_words(
                text, starts, ends, scores, self.force_tokens, self.keep_digits
            )
            out.append(ScoredText(text, starts, ends, scores, force_keys, self.drop_consecutive))
        return out
