"""The scorer interface and what every model-backed scorer shares: devices, dtypes, batches, windows.

A :class:`Scorer` takes a batch of texts and returns one scored text per input (see
:mod:`tokenskip.compressors.prune`); it says which ``tokenskip compress`` options it reads
(:class:`ScorerOptions`) and is registered by name in :data:`tokenskip.compressors.registry.SCORERS`.
Model-backed scorers encode every text once, cut texts longer than the model's window into windows at
sentence ends (:func:`plan_windows`), sort the windows by length and group them into batches whose padding
stays small (:func:`length_batches`): one long CoT never pads a batch of short ones, and a batch holds at
most ``max_batch_tokens`` padded tokens. :func:`run_batched` pads the next batch on a loader thread (into
pinned memory on CUDA) while the model runs the current one.
"""

from __future__ import annotations

import queue
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from tokenskip.compressors.finish import BlockOutput, finish_block
from tokenskip.compressors.prune import Scored

# padded share of a batch's tokens above which a shorter row starts a new batch. CPU time is linear in the
# padded tokens and hardly depends on the rows per batch; on a real dataset neighbouring lengths are close,
# so batches stay large (GSM8K train: 68 batches of ~110 rows, 1.9% padding).
MAX_PADDING = 0.05


@dataclass(frozen=True)
class ScorerOptions:
    """The ``tokenskip compress`` options a scorer may read (each scorer lists its own in ``options``).

    Attributes:
        checkpoint: the scorer's model (None: the scorer's default).
        mode: ``exact`` or ``compat`` (scorers that reproduce llmlingua's output).
        force_tokens: tokens always kept.
        keep_digits: always keep words containing a digit.
        drop_consecutive: drop a force token that repeats the kept word before it.
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:1`` ...
        dtype: ``auto``, float32, tf32, bfloat16, float16.
        max_batch_tokens: padded tokens per forward pass (None: the scorer's default).
        seed: seed of a random scorer.
    """

    checkpoint: str | None = None
    mode: str = "exact"
    force_tokens: Sequence[str] = ()
    keep_digits: bool = False
    drop_consecutive: bool = False
    device: str = "auto"
    dtype: str = "auto"
    max_batch_tokens: int | None = None
    seed: int = 0

    def model_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of a model-backed scorer: words always kept, device, dtype, batch size."""
        kwargs: dict[str, Any] = {
            "force_tokens": self.force_tokens,
            "keep_digits": self.keep_digits,
            "drop_consecutive": self.drop_consecutive,
            "device": self.device,
            "dtype": self.dtype,
        }
        if self.max_batch_tokens:
            kwargs["max_batch_tokens"] = self.max_batch_tokens
        return kwargs


WORD_OPTIONS = frozenset({"force_tokens", "keep_digits", "drop_consecutive"})
MODEL_OPTIONS = frozenset({"checkpoint", "device", "dtype", "max_batch_tokens"}) | WORD_OPTIONS


class Scorer(ABC):
    """A batch of texts in, per-word importance scores out.

    Subclasses set ``name`` (the registry name) and implement :meth:`score`. ``device`` / ``dtype`` are
    resolved at construction (CUDA with bf16/fp16 when present, CPU fp32 otherwise).

    Class attributes: ``options`` (the :class:`ScorerOptions` fields it reads: ``tokenskip compress``
    refuses the others, e.g. ``--force_tokens`` for a scorer that cannot keep words; one that reads
    ``device`` runs on every visible GPU by default), ``compared`` (offered to ``tokenskip fidelity``;
    False for a slow reference implementation of another scorer).
    """

    name: ClassVar[str] = "scorer"
    options: ClassVar[frozenset[str]] = frozenset()
    compared: ClassVar[bool] = True
    device: str = "cpu"

    @classmethod
    def build(cls, options: ScorerOptions) -> Scorer:
        """The scorer for these options (a scorer that reads none takes no arguments)."""
        return cls()

    @classmethod
    def unavailable(cls, checkpoint: str | None) -> str | None:
        """Why the scorer's model cannot be loaded here (None: it can), checked before an optional
        scorer (``name?``) runs."""
        return None

    @abstractmethod
    def score(self, texts: Sequence[str]) -> list[Scored]:
        """Score each text; the i-th result belongs to ``texts[i]``."""

    def finish(
        self, scored: Sequence[Any], tokenizer: Any, texts: Sequence[str], ratios: Sequence[float]
    ) -> BlockOutput:
        """Host side of a block: prune what :meth:`score` returned to every ratio and count the results'
        target-model tokens with ``tokenizer`` (default:
        :func:`~tokenskip.compressors.finish.finish_block`)."""
        return finish_block(scored, tokenizer, texts, ratios)

    def describe(self) -> dict[str, Any]:
        """What produced the scores (written into ``summary.json``)."""
        return {"scorer": self.name, "device": self.device}


def length_batches(
    lengths: Sequence[int], max_batch_tokens: int, max_batch_size: int, max_padding: float = MAX_PADDING
) -> list[np.ndarray]:
    """Group sequence indices into batches of similar length, longest first.

    A batch holds at most ``max_batch_size`` rows and ``max_batch_tokens`` padded tokens (rows x its
    longest row), and grows only while its padding stays at most ``max_padding`` of its padded tokens; a
    single row longer than the budget gets a batch of its own.
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    order = np.argsort(-lengths, kind="stable")
    sorted_lens = np.maximum(lengths[order], 1)
    cum = np.concatenate([[0], np.cumsum(sorted_lens)])
    batches: list[np.ndarray] = []
    start, n = 0, len(order)
    while start < n:
        longest = int(sorted_lens[start])
        cap = max(1, min(max_batch_size, max_batch_tokens // longest, n - start))
        rows = np.arange(1, cap + 1)
        real = cum[start + 1 : start + cap + 1] - cum[start]
        ok = real >= (1.0 - max_padding) * rows * longest  # the mean length only falls as rows are added
        take = int(np.argmin(ok)) if not ok.all() else cap
        take = max(take, 1)
        batches.append(order[start : start + take])
        start += take
    return batches


def pad_batch(seqs: Sequence[np.ndarray], pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Right-pad id sequences to the batch's longest; returns ``(ids, attention_mask)`` as int64 arrays."""
    longest = max((len(s) for s in seqs), default=0)
    ids = np.full((len(seqs), longest), pad_id, dtype=np.int64)
    mask = np.zeros((len(seqs), longest), dtype=np.int64)
    for row, s in enumerate(seqs):
        ids[row, : len(s)] = s
        mask[row, : len(s)] = 1
    return ids, mask


def prefetch(make: Callable[[Any], Any], items: Iterable[Any], depth: int = 2) -> Iterator[tuple[Any, Any]]:
    """Yield ``(item, make(item))``, computing up to ``depth`` items ahead on a loader thread.

    An exception in ``make`` is raised in the consumer; a consumer that stops early stops the thread.
    """
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def put(x: Any) -> bool:
        while not stop.is_set():
            try:
                q.put(x, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def work() -> None:
        try:
            for item in items:
                if not put((item, make(item))):
                    return
            put(done)
        except BaseException as e:  # handed to the consumer
            put(e)

    thread = threading.Thread(target=work, name="tokenskip-loader", daemon=True)
    thread.start()
    try:
        while True:
            got = q.get()
            if got is done:
                return
            if isinstance(got, BaseException):
                raise got
            yield got
    finally:
        stop.set()
        thread.join(timeout=5)


def run_batched(
    seqs: Sequence[np.ndarray],
    forward: Callable[[Any, Any], Any],
    pad_id: int,
    max_batch_tokens: int,
    max_batch_size: int,
    masks: Sequence[np.ndarray] | None = None,
    device: str = "cpu",
    max_padding: float = MAX_PADDING,
) -> list[np.ndarray]:
    """Apply ``forward(ids, mask) -> per-token values [rows, longest]`` over length-bucketed batches.

    ``ids`` / ``mask`` are int64 torch tensors already on ``device``; ``forward`` returns a float tensor
    there. A loader thread pads the next batch (into pinned memory on CUDA, copied without blocking) while
    the model runs the current one; results come back to the host without a sync per batch. Returns each
    sequence's values (unpadded, float32 numpy), in input order. ``masks`` optionally replaces the default
    all-ones attention mask of a sequence (positions with 0 are padding inside the sequence).
    """
    import torch

    cuda = str(device).startswith("cuda")

    def make(batch: np.ndarray) -> tuple[Any, Any]:
        ids, mask = pad_batch([seqs[i] for i in batch], pad_id)
        if masks is not None:
            for row, i in enumerate(batch):
                mask[row, : len(masks[i])] = masks[i]
        t_ids, t_mask = torch.from_numpy(ids), torch.from_numpy(mask)
        if cuda:
            t_ids, t_mask = t_ids.pin_memory(), t_mask.pin_memory()
        return t_ids, t_mask

    batches = length_batches([len(s) for s in seqs], max_batch_tokens, max_batch_size, max_padding)
    pending: list[tuple[np.ndarray, Any]] = []
    for batch, (ids, mask) in prefetch(make, batches):
        if cuda:
            ids, mask = ids.to(device, non_blocking=True), mask.to(device, non_blocking=True)
        values = forward(ids, mask).float()
        pending.append((batch, values.to("cpu", non_blocking=True) if cuda else values))
    if cuda and pending:
        torch.cuda.synchronize(device)
    out: list[np.ndarray | None] = [None] * len(seqs)
    for batch, values in pending:
        host = values.numpy()
        for row, i in enumerate(batch):
            out[i] = host[row, : len(seqs[i])]
    return out  # type: ignore[return-value]


def break_points(text: str, offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Where a model window may start, from a fast tokenizer's character offsets (one row per token).

    Returns ``(word_start, sentence_start)``. Token ``i`` starts a word when whitespace separates its first
    non-space character from the last non-space character of the tokens before it (or when either is a
    character of a script written without spaces); it starts a sentence when, besides, that character ends
    a sentence (``. ! ?`` and full-width forms) or the whitespace holds a line break. A full-width sentence
    end starts a sentence without whitespace. Token 0 is both; whitespace-only tokens are neither.
    """
    n = len(offsets)
    word = np.zeros(n, dtype=bool)
    sent = np.zeros(n, dtype=bool)
    if n == 0:
        return word, sent
    code = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
    size = len(code)
    pos = np.arange(size)
    nonspace = ~np.isin(code, _SPACES)
    last_ns = np.maximum.accumulate(np.where(nonspace, pos, -1)) if size else pos  # at or before p
    next_ns = np.append(np.minimum.accumulate(np.where(nonspace, pos, size)[::-1])[::-1], size)
    nl_prefix = np.concatenate([[0], np.cumsum(code == 10)])
    cjk = np.zeros(size + 1, dtype=bool)
    for lo, hi in _CJK_RANGES:
        cjk[:-1] |= (code >= lo) & (code <= hi)
    s = np.clip(offsets[:, 0], 0, size)
    e = np.clip(offsets[:, 1], 0, size)
    anchor = next_ns[s]  # first non-space character of the token (size: none)
    real = anchor < e
    q = np.where(anchor > 0, last_ns[np.maximum(anchor - 1, 0)], -1) if size else np.full(n, -1)
    qc = np.maximum(q, 0)
    earlier = q < s  # the previous non-space character belongs to an earlier token
    word = real & earlier & ((anchor - q > 1) | cjk[np.minimum(anchor, size)] | cjk[qc])
    after_end = (q >= 0) & np.isin(code[qc] if size else np.zeros(n, np.uint32), _SENTENCE_END)
    line = nl_prefix[np.minimum(anchor, size)] > nl_prefix[qc + (q >= 0)]
    wide = (q >= 0) & np.isin(code[qc] if size else np.zeros(n, np.uint32), _WIDE_END)
    sent = (word & (after_end | line)) | (real & earlier & wide)
    word |= sent
    word[0] = sent[0] = True
    return word, sent


_SPACES = np.array([ord(c) for c in " \t\n\r\f\v\u00a0\u3000"], dtype=np.uint32)
_SENTENCE_END = np.array([ord(c) for c in ".!?。！？"], dtype=np.uint32)
_WIDE_END = np.array([ord(c) for c in "。！？"], dtype=np.uint32)
_CJK_RANGES = [
    (0x3040, 0x30FF), (0x3400, 0x4DBF), (0x4E00, 0x9FFF), (0xF900, 0xFAFF),
    (0xAC00, 0xD7AF), (0x0E00, 0x0E7F), (0xFF00, 0xFFEF),
]  # fmt: skip


def plan_windows(
    word_start: np.ndarray, sentence_start: np.ndarray, window: int, context: int = 0
) -> list[tuple[int, int, int]]:
    """Cut ``len(word_start)`` tokens into model windows of at most ``window`` tokens.

    Returns ``(first, start, end)`` per window: the model sees tokens ``first .. end - 1`` and the scores
    of ``start .. end - 1`` are kept, so every token is scored exactly once. ``start - first`` is the left
    context (up to ``context`` tokens of the text before the window, starting at a word, scored but
    discarded). A window ends before a sentence start when one lies in its second half, else before a
    word start, else at the window's edge.
    """
    n = len(word_start)
    if n == 0:
        return []
    if not 0 <= context < window // 2 + 1:
        raise ValueError(f"context must be in [0, window / 2], got {context} for window {window}")
    words = np.flatnonzero(word_start)
    sents = np.flatnonzero(sentence_start)
    out: list[tuple[int, int, int]] = []
    st = 0
    while st < n:
        first = st
        if st > 0 and context:
            lo = st - context
            i = int(np.searchsorted(words, lo, side="left"))  # first word start at or after lo
            first = int(words[i]) if i < len(words) and words[i] < st else st
        hi = first + window
        if hi >= n:
            out.append((first, st, n))
            break
        ed = hi
        half = st + (hi - st) // 2
        for cuts in (sents, words):
            i = int(np.searchsorted(cuts, hi, side="right")) - 1  # last cut at or before hi
            if i >= 0 and cuts[i] > half:
                ed = int(cuts[i])
                break
        out.append((first, st, ed))
        st = ed
    return out


def resolve_device_dtype(device: str, dtype: str) -> tuple[str, Any]:
    """``auto`` = CUDA (bf16, or fp16 where bf16 is unsupported) when present, else CPU fp32.

    ``tf32`` = float32 weights with TensorFloat-32 matmuls on CUDA (plain float32 on a CPU).
    """
    from tokenskip.models import resolve_device, resolve_dtype

    dev = resolve_device(device)
    return dev, resolve_dtype("float32" if dtype == "tf32" else dtype, dev)


class MatmulPrecision:
    """Context manager: TF32 matmuls on CUDA while a ``tf32`` scorer runs its model (restored after)."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self._saved: tuple[bool, bool] | None = None

    def __enter__(self) -> MatmulPrecision:
        if self.enabled:
            import torch

            self._saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        return self

    def __exit__(self, *exc: object) -> None:
        if self._saved is not None:
            import torch

            torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = self._saved
            self._saved = None


def first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0][:300] if text else type(e).__name__
