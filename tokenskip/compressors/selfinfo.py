"""Self-information scorer (Selective Context): a word matters as much as it surprises a causal LM.

Each token's surprisal ``-log p(token | prefix)`` under a causal LM (default: the embedded model, so it
works offline) is summed over the word it belongs to (words: :data:`tokenskip.compressors.prune.WORD_RE`).
CoTs of any length: a CoT longer than ``window`` tokens is cut into windows at sentence ends, and every
window after the first is conditioned on up to ``context`` tokens of the text before it (their surprisal is
discarded), so no token is scored without a prefix and every token is scored once.
This is the Selective-Context baseline of the TokenSkip paper and tokenskip's offline default scorer.
Force tokens, ``keep_digits`` and ``drop_consecutive`` work as for the LLMLingua-2 scorer (TokenSkip's
LLaMA-3 settings keep every number of the CoT).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from tokenskip.compressors.base import (
    MAX_PADDING,
    MODEL_OPTIONS,
    MatmulPrecision,
    Scorer,
    ScorerOptions,
    break_points,
    plan_windows,
    resolve_device_dtype,
    run_batched,
)
from tokenskip.compressors.prune import ScoredText, protect_words, regex_words, token_word_index
from tokenskip.errors import UserError


class SelfInfoScorer(Scorer):
    """Word scores = summed token surprisal under a causal LM.

    Args:
        model: embedded alias, hub id or local folder of a causal LM (default: the embedded model).
        device: ``auto``, ``cpu``, ``cuda`` ...
        dtype: ``auto`` (bf16/fp16 on CUDA or an AMX CPU, else fp32) or an explicit dtype.
        aggregate: ``sum`` (Selective Context: a word's self-information) or ``mean`` per token.
        window: tokens per model window (BOS included); longer texts are scored window by window (never
            truncated). Default: 1024, or the model's ``max_position_embeddings`` when smaller.
        context: tokens of preceding text each window after the first is conditioned on (at most half the
            window; default ``min(128, window // 4)``).
        max_batch_tokens: padded tokens per forward pass.
        max_batch_size: rows per forward pass.
        max_padding: padded share of a batch above which shorter windows start a new batch.
        force_tokens: words always kept (e.g. ``["Step", ":"]``).
        keep_digits: always keep words containing a digit.
        drop_consecutive: drop a force token that repeats the kept word before it.
        trust_remote_code: allow checkpoints with custom code (off by default).
    """

    name = "selfinfo"
    options = MODEL_OPTIONS

    @classmethod
    def build(cls, options: ScorerOptions) -> SelfInfoScorer:
        from tokenskip.models import DEFAULT_MODEL

        return cls(options.checkpoint or DEFAULT_MODEL, **options.model_kwargs())

    def __init__(
        self,
        model: str = "smollm2-135m",
        device: str = "auto",
        dtype: str = "auto",
        aggregate: str = "sum",
        window: int | None = None,
        context: int | None = None,
        max_batch_tokens: int = 8192,
        max_batch_size: int = 64,
        max_padding: float = MAX_PADDING,
        force_tokens: Sequence[str] = (),
        keep_digits: bool = False,
        drop_consecutive: bool = False,
        trust_remote_code: bool = False,
    ) -> None:
        from tokenskip.models import load_model

        if aggregate not in ("sum", "mean"):
            raise UserError(f"aggregate must be 'sum' or 'mean', got '{aggregate}'")
        if window is not None and window < 2:
            raise UserError(f"window must be >= 2, got {window}")
        self.device, _ = resolve_device_dtype(device, dtype)
        self.tf32 = dtype == "tf32"
        dtype = "float32" if self.tf32 else dtype
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
        limit = getattr(self.model.config, "max_position_embeddings", None)
        if window is None:
            window = min(1024, limit) if isinstance(limit, int) and limit >= 2 else 1024
        elif isinstance(limit, int) and window > limit:
            raise UserError(f"window {window} exceeds the model's {limit} positions")
        if context is None:
            context = min(128, window // 4)
        if not 0 <= context <= (window - 1) // 2:
            raise UserError(f"context must be in [0, {(window - 1) // 2}] for window {window}, got {context}")
        self.window = window
        self.context = context
        self.max_batch_tokens = max_batch_tokens
        self.max_batch_size = max_batch_size
        self.max_padding = max_padding
        self.force_tokens = [str(t) for t in force_tokens]
        self.keep_digits = keep_digits
        self.drop_consecutive = drop_consecutive

    def describe(self) -> dict[str, Any]:
        return {
            "scorer": self.name,
            "model": self.model_name,
            "aggregate": self.aggregate,
            "window": self.window,
            "context": self.context,
            "force_tokens": self.force_tokens,
            "keep_digits": self.keep_digits,
            "drop_consecutive": self.drop_consecutive,
            "device": self.device,
        }

    def _forward(self, ids: Any, mask: Any) -> Any:
        """Surprisal of every token given the tokens before it (0 at position 0), tensors on the device."""
        import torch
        import torch.nn.functional as F

        with torch.inference_mode(), MatmulPrecision(self.tf32 and self.device.startswith("cuda")):
            logits = self.model(input_ids=ids, attention_mask=mask).logits[:, :-1]
            nll = F.cross_entropy(logits.float().transpose(1, 2), ids[:, 1:], reduction="none")
            return F.pad(nll, (1, 0))  # position 0 is the BOS / context token

    def score(self, texts: Sequence[str]) -> list[ScoredText]:
        backend = self.tokenizer.backend_tokenizer
        encs = backend.encode_batch(list(texts), add_special_tokens=False) if texts else []
        body = self.window - (self.bos_id is not None)  # text tokens per window
        head = np.array([self.bos_id] if self.bos_id is not None else [], dtype=np.int64)
        seqs: list[np.ndarray] = []
        owners: list[tuple[int, int, int, int]] = []
        per_text = []
        for ti, (text, enc) in enumerate(zip(texts, encs, strict=True)):
            ids = np.asarray(enc.ids, dtype=np.int64)
            offs = np.asarray(enc.offsets, dtype=np.int64).reshape(-1, 2)
            per_text.append((ids, offs))
            if len(ids) <= body:
                windows = [(0, 0, len(ids))] if len(ids) else []
            else:
                windows = plan_windows(*break_points(text, offs), body, self.context)
            for first, st, ed in windows:
                seqs.append(np.concatenate([head, ids[first:ed]]))
                owners.append((ti, first, st, ed))
        values = run_batched(
            seqs,
            self._forward,
            self.pad_id,
            self.max_batch_tokens,
            self.max_batch_size,
            device=self.device,
            max_padding=self.max_padding,
        )
        lead = len(head)
        surprisal = [np.zeros(len(ids), dtype=np.float64) for ids, _ in per_text]
        for (ti, first, st, ed), v in zip(owners, values, strict=True):
            surprisal[ti][st:ed] = v[lead + st - first : lead + ed - first]
        out = []
        for ti, text in enumerate(texts):
            starts, ends = regex_words(text)
            offs = per_text[ti][1]
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
