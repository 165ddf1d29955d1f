"""LLMLingua-2 token-classifier scorer (any ``*ForTokenClassification`` checkpoint).

TokenSkip compresses CoTs with ``microsoft/llmlingua-2-xlm-roberta-large-meetingbank``: a token classifier
whose label-1 probability says "keep this token". :class:`LLMLingua2Scorer` runs it on GPU or CPU over
length-bucketed batches, encodes each CoT once, and hands out scored words; every ratio is then a pure
pruning step (:mod:`tokenskip.compressors.prune`).

Modes:

* ``compat`` reproduces llmlingua's ``compress_prompt(text, rate=γ, ...)`` word for word
  (:mod:`tokenskip.compressors.lingua_compat`). Its output is whitespace-normalised like llmlingua's.
* ``exact`` (default) feeds the model its real special tokens and scores CoTs of any length: a CoT longer
  than the 512-token window is cut into windows at sentence ends, each window after the first sees up to
  ``context`` tokens of the text before it (scored, then discarded), and every token is scored exactly
  once. One threshold over the whole CoT keeps the words whose share of *target-model* tokens is as close
  to γ as the words allow; newlines are kept. Force tokens and (with ``keep_digits``) every word containing
  a digit are always kept.
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
    first_line,
    plan_windows,
    resolve_device_dtype,
    run_batched,
)
from tokenskip.compressors.lingua_compat import (
    DEFAULT_CHECKPOINT,
    MAX_FORCE_TOKENS,
    MAX_SEQ_LEN,
    CompatMode,
    LLMLinguaReference,
    cl100k,
    ensure_tiktoken_cl100k,
)
from tokenskip.compressors.prune import ScoredText, protect_words, regex_words
from tokenskip.errors import UserError

__all__ = [
    "DEFAULT_CHECKPOINT",
    "LLMLingua2Scorer",
    "LLMLinguaReference",
    "TOKENSKIP_LLAMA3",
    "cl100k",
    "ensure_tiktoken_cl100k",
    "load_token_classifier",
]

# TokenSkip's settings for LLaMA-3 CoTs (its Qwen runs use plain compress_prompt(cot, rate=γ)).
TOKENSKIP_LLAMA3 = {"force_tokens": ["Step", ":"], "keep_digits": True, "drop_consecutive": True}
DEFAULT_CONTEXT = 64  # tokens of left context of every window after the first (exact mode)


def _family(tokenizer: Any) -> str:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise UserError("the scorer checkpoint needs a fast (tokenizers-backed) tokenizer")
    model = type(backend.model).__name__
    decoder = type(backend.decoder).__name__ if backend.decoder is not None else ""
    if model == "WordPiece" or decoder == "WordPiece":
        return "wordpiece"
    return "sentencepiece"


def load_token_classifier(checkpoint: str, device: str, dtype: Any, trust_remote_code: bool = False):
    """Load ``(config, tokenizer, model)`` of a token-classification checkpoint (hub id or local folder)."""
    from transformers import AutoConfig, AutoModelForTokenClassification, AutoTokenizer

    from tokenskip.models import resolve_model

    ref = resolve_model(checkpoint)
    try:
        config = AutoConfig.from_pretrained(ref, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as e:
        raise UserError(f"could not load scorer checkpoint '{checkpoint}': {first_line(e)}") from None
    archs = config.architectures or []
    if not any("ForTokenClassification" in a for a in archs):
        raise UserError(
            f"scorer checkpoint '{checkpoint}' is not a token classifier (architectures: {archs or 'none'}); "
            "the llmlingua2 scorer needs an LLMLingua-2-style *ForTokenClassification model"
        )
    if getattr(config, "num_labels", 2) != 2:
        raise UserError(f"scorer checkpoint '{checkpoint}' has {config.num_labels} labels; LLMLingua-2 has 2")
    try:
        tokenizer = AutoTokenizer.from_pretrained(ref, trust_remote_code=trust_remote_code)
        model = AutoModelForTokenClassification.from_pretrained(
            ref, config=config, dtype=dtype, trust_remote_code=trust_remote_code
        )
    except OSError as e:
        raise UserError(f"could not load scorer checkpoint '{checkpoint}': {first_line(e)}") from None
    model.to(device)
    model.eval()
    return config, tokenizer, model


class LLMLingua2Scorer(CompatMode, Scorer):
    """Word scores from an LLMLingua-2 token classifier.

    Args:
        checkpoint: hub id or local folder of a ``*ForTokenClassification`` model with 2 labels
            (XLM-R/SentencePiece or (multilingual) BERT/WordPiece tokenizer; any folder name).
        mode: ``exact`` (one threshold per text on target-model tokens) or ``compat`` (llmlingua's output).
        force_tokens: tokens always kept (TokenSkip's LLaMA-3 run: ``Step`` and ``:``).
        keep_digits: keep words containing a digit (llmlingua's ``force_reserve_digit``).
        drop_consecutive: drop a force token that repeats the kept word before it.
        token_to_word: word probability from its tokens: ``mean`` (llmlingua's default) or ``first``.
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:1`` ...
        dtype: ``auto`` (bf16/fp16 on CUDA or an AMX CPU, else fp32), float32, tf32 (float32 weights, TensorFloat-32
            matmuls on CUDA), bfloat16 or float16. In compat mode ``auto`` means float32 (llmlingua's own
            precision), so that outputs match word for word; tf32/bf16 give near-identical output.
        max_batch_tokens: padded tokens per forward pass (rows x longest row).
        max_batch_size: rows per forward pass.
        max_padding: padded share of a batch above which shorter windows start a new batch.
        context: exact mode: tokens of left context given to every window after the first of a long CoT
            (at most half the window; scored, then discarded).
        trust_remote_code: allow checkpoints with custom code (off by default).
    """

    name = "llmlingua2"
    options = MODEL_OPTIONS | {"mode"}

    @classmethod
    def build(cls, options: ScorerOptions) -> LLMLingua2Scorer:
        return cls(options.checkpoint or DEFAULT_CHECKPOINT, mode=options.mode, **options.model_kwargs())

    @classmethod
    def unavailable(cls, checkpoint: str | None) -> str | None:
        from transformers import AutoConfig

        from tokenskip.models import resolve_model

        try:
            AutoConfig.from_pretrained(resolve_model(checkpoint or DEFAULT_CHECKPOINT))
        except Exception as e:  # offline without the weights, a bad folder ...
            return first_line(e)
        return None

    def __init__(
        self,
        checkpoint: str = DEFAULT_CHECKPOINT,
        mode: str = "exact",
        force_tokens: Sequence[str] = (),
        keep_digits: bool = False,
        drop_consecutive: bool = False,
        token_to_word: str = "mean",
        device: str = "auto",
        dtype: str = "auto",
        max_batch_tokens: int = 16384,
        max_batch_size: int = 128,
        max_padding: float = MAX_PADDING,
        context: int = DEFAULT_CONTEXT,
        trust_remote_code: bool = False,
    ) -> None:
        if mode not in ("exact", "compat"):
            raise UserError(f"--mode must be 'exact' or 'compat', got '{mode}'")
        if token_to_word not in ("mean", "first"):
            raise UserError(f"token_to_word must be 'mean' or 'first', got '{token_to_word}'")
        if len(force_tokens) > MAX_FORCE_TOKENS:
            raise UserError(f"at most {MAX_FORCE_TOKENS} force tokens, got {len(force_tokens)}")
        if not 0 <= context <= (MAX_SEQ_LEN - 2) // 2:
            raise UserError(f"context must be in [0, {(MAX_SEQ_LEN - 2) // 2}] tokens, got {context}")
        if not 0.0 <= max_padding < 1.0:
            raise UserError(f"max_padding must be in [0, 1), got {max_padding}")
        if mode == "compat" and dtype == "auto":
            dtype = "float32"
        self.device, self.dtype = resolve_device_dtype(device, dtype)
        self.tf32 = dtype == "tf32"
        self.checkpoint = checkpoint
        self.mode = mode
        self.force_tokens = [str(t) for t in force_tokens]
        self.keep_digits = keep_digits
        self.drop_consecutive = drop_consecutive
        self.token_to_word = token_to_word
        self.max_batch_tokens = max_batch_tokens
        self.max_batch_size = max_batch_size
        self.max_padding = max_padding
        self.context = context
        self.config, self.tokenizer, self.model = load_token_classifier(
            checkpoint, self.device, self.dtype, trust_remote_code
        )
        self.family = _family(self.tokenizer)
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        if mode == "compat":
            self._init_compat()
        else:
            self._init_exact()

    def describe(self) -> dict[str, Any]:
        return {
            "scorer": self.name,
            "checkpoint": self.checkpoint,
            "mode": self.mode,
            "force_tokens": self.force_tokens,
            "keep_digits": self.keep_digits,
            "drop_consecutive": self.drop_consecutive,
            "device": self.device,
            "dtype": "tf32" if self.tf32 else str(self.dtype).replace("torch.", ""),
            **({"context": self.context} if self.mode == "exact" else {}),
        }

    # ------------------------------------------------------------------------------------ vocabulary

    def _vocab_strings(self) -> np.ndarray:
        backend = self.tokenizer.backend_tokenizer
        size = max(len(self.tokenizer), backend.get_vocab_size(with_added_tokens=True))
        return np.array([backend.id_to_token(i) or "" for i in range(size)], dtype=object)

    def _pure(self, token: str) -> str:
        # llmlingua's get_pure_token: token.lstrip("##"), i.e. every leading "#" (or "▁")
        return token.lstrip("#") if self.family == "wordpiece" else token.lstrip("▁")

    def _forward(self, ids: Any, mask: Any) -> Any:
        """Keep probability of every token of a padded batch (tensors on the scorer's device)."""
        import torch

        with torch.inference_mode(), MatmulPrecision(self.tf32 and self.device.startswith("cuda")):
            logits = self.model(input_ids=ids, attention_mask=mask == 1).logits
            return torch.softmax(logits.float(), dim=-1)[..., 1]

    # ----------------------------------------------------------------------------------------- exact

    def _init_exact(self) -> None:
        fset = set(self.force_tokens)
        self._force_tok = np.array([self._pure(t) in fset for t in self._vocab_strings()], dtype=bool)
        tok = self.tokenizer
        self.cls_id = tok.cls_token_id if tok.cls_token_id is not None else tok.bos_token_id
        self.sep_id = tok.sep_token_id if tok.sep_token_id is not None else tok.eos_token_id
        self.window = MAX_SEQ_LEN - (self.cls_id is not None) - (self.sep_id is not None)

    def _encode_exact(
        self, texts: Sequence[str]
    ) -> tuple[list, list[np.ndarray], list[tuple[int, int, int, int]]]:
        """Host side of exact scoring: each text's ids and offsets, and its model windows.

        Returns ``(per text (ids, offsets), model inputs, (text, first token, first kept token, end) per input)``.
        """
        backend = self.tokenizer.backend_tokenizer
        encs = backend.encode_batch(list(texts), add_special_tokens=False) if texts else []
        per_text = []
        seqs: list[np.ndarray] = []
        owners: list[tuple[int, int, int]] = []
        head = np.array([self.cls_id] if self.cls_id is not None else [], dtype=np.int64)
        tail = np.array([self.sep_id] if self.sep_id is not None else [], dtype=np.int64)
        for ti, (text, enc) in enumerate(zip(texts, encs, strict=True)):
            ids = np.asarray(enc.ids, dtype=np.int64)
            offs = np.asarray(enc.offsets, dtype=np.int64).reshape(-1, 2)
            per_text.append((ids, offs))
            if len(ids) <= self.window:
                windows = [(0, 0, len(ids))] if len(ids) else []
            else:
                windows = plan_windows(*break_points(text, offs), self.window, self.context)
            for first, st, ed in windows:
                seqs.append(np.concatenate([head, ids[first:ed], tail]))
                owners.append((ti, first, st, ed))
        return per_text, seqs, owners

    def _score_exact(self, texts: Sequence[str]) -> list[ScoredText]:
        per_text, seqs, owners = self._encode_exact(texts)
        probs = run_batched(
            seqs,
            self._forward,
            self.pad_id,
            self.max_batch_tokens,
            self.max_batch_size,
            device=self.device,
            max_padding=self.max_padding,
        )
        token_probs = [np.zeros(len(ids), dtype=np.float64) for ids, _ in per_text]
        lead = 1 if self.cls_id is not None else 0
        for (ti, first, st, ed), p in zip(owners, probs, strict=True):
            token_probs[ti][st:ed] = p[lead + st - first : lead + ed - first]
        return [
            self._words_exact(t, ids, offs, tp)
            for t, (ids, offs), tp in zip(texts, per_text, token_probs, strict=True)
        ]

    def _words_exact(self, text: str, ids: np.ndarray, offs: np.ndarray, probs: np.ndarray) -> ScoredText:
        """Aggregate token probabilities onto :data:`~tokenskip.compressors.prune.WORD_RE` words.

        A word's score is the mean (``first``: the first) probability of the tokens overlapping it, so the
        units kept or dropped do not depend on how the classifier's vocabulary happens to split text.
        """
        starts, ends = regex_words(text)
        n = len(starts)
        if n == 0 or len(ids) == 0:
            return ScoredText(text, starts, ends, np.zeros(n), drop_consecutive=self.drop_consecutive)
        tok_s, tok_e = offs[:, 0], np.maximum(offs[:, 1], offs[:, 0] + 1)
        lo = np.searchsorted(ends, tok_s, side="right")  # first word ending after the token starts
        hi = np.searchsorted(starts, tok_e, side="left") - 1  # last word starting before the token ends
        span = np.maximum(hi - lo + 1, 0)
        tok = np.repeat(np.arange(len(ids)), span)
        word = np.repeat(lo - np.cumsum(span) + span, span) + np.arange(int(span.sum()))
        if self.token_to_word == "mean":
            total = np.bincount(word, weights=probs[tok], minlength=n)
            count = np.bincount(word, minlength=n)
            scores = np.where(count > 0, total / np.maximum(count, 1), 0.0)
        else:
            scores = np.zeros(n)
            first_tok = np.full(n, len(ids))
            np.minimum.at(first_tok, word, tok)
            has = first_tok < len(ids)
            scores[has] = probs[first_tok[has]]
        scores, force_keys = protect_words(text, starts, ends, scores, self.force_tokens, self.keep_digits)
        if self.force_tokens:  # a force token the regex splits (e.g. "<<") is matched token by token
            tok_force = self._force_tok[ids][tok]
            scores[word[tok_force]] = np.inf
        return ScoredText(
            text=text,
            starts=starts,
            ends=ends,
            scores=scores,
            force_keys=force_keys,
            drop_consecutive=self.drop_consecutive,
        )

    # ----------------------------------------------------------------------------------------- entry

    def score(self, texts: Sequence[str]) -> list[Any]:
        if self.mode == "compat":
            return self._score_compat(texts)
        return self._score_exact(texts)
