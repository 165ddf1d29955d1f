"""Pure parts of scoring long CoTs fast: windows, break points, length buckets, the loader thread, and the
calibrated pruning (no model, milliseconds)."""

import re

import numpy as np
import pytest

from tokenskip.compressors.base import break_points, length_batches, plan_windows, prefetch, run_batched
from tokenskip.compressors.calibrate import calibrate, make_plan, nearest_k
from tokenskip.compressors.prune import ScoredText, regex_words

TEXT = "Tom has 3 apples. He buys 2.5 more!\nStep 2: so 3+2=5.  小明有3个。又买了"


def offsets(text):
    """A whitespace/punctuation tokenizer's character offsets (one token per word or mark)."""
    return np.array([m.span() for m in re.finditer(r"\w+|[^\w\s]|\n", text)], dtype=np.int64)


def tokens_with(text, flags):
    return [text[a:b] for (a, b), f in zip(offsets(text), flags, strict=True) if f]


def test_break_points_find_word_and_sentence_starts():
    word, sent = break_points(TEXT, offsets(TEXT))
    assert tokens_with(TEXT, sent) == ["Tom", "He", "Step", "小明有3个", "又买了"]
    assert "2" in tokens_with(TEXT, word) and "." not in tokens_with(TEXT, word)
    assert tokens_with(TEXT, word).count("5") == 0  # "2.5" and "3+2=5" are not cut inside
    assert not word[[i for i, t in enumerate(tokens_with(TEXT, [True] * len(word))) if t == "\n"]].any()
    # byte-level style offsets that include the leading space of a token
    text = "One. Two three"
    spans = np.array([[0, 3], [3, 4], [4, 8], [8, 14]])  # "One" "." " Two" " three"
    w, s = break_points(text, spans)
    assert w.tolist() == [True, False, True, True] and s.tolist() == [True, False, True, False]
    assert [x.tolist() for x in break_points("", np.zeros((0, 2), dtype=np.int64))] == [[], []]


def test_windows_cover_every_token_once_within_the_window():
    rng = np.random.default_rng(0)
    for n, window, context in [(1, 8, 0), (50, 8, 0), (1000, 64, 16), (5000, 510, 64), (777, 100, 50)]:
        word = rng.random(n) < 0.7
        sent = word & (rng.random(n) < 0.05)
        word[0] = sent[0] = True
        wins = plan_windows(word, sent, window, context)
        kept = np.concatenate([np.arange(st, ed) for _, st, ed in wins])
        assert kept.tolist() == list(range(n))  # every token scored exactly once, in order
        for first, st, ed in wins:
            assert ed - first <= window and 0 <= st - first <= context and ed > st
            assert first == st or word[first]  # context starts at a word
    # a window ends before a sentence start when one lies in its second half
    word = np.ones(100, dtype=bool)
    sent = np.zeros(100, dtype=bool)
    sent[[0, 30, 45, 70]] = True
    assert plan_windows(word, sent, 50, 0)[0] == (0, 0, 45)
    with pytest.raises(ValueError):
        plan_windows(word, sent, 50, 40)


def test_length_batches_bound_padding_rows_and_tokens():
    lengths = [100, 98, 97, 60, 59, 58, 57, 10, 9, 500]
    batches = length_batches(lengths, max_batch_tokens=400, max_batch_size=3, max_padding=0.1)
    assert sorted(np.concatenate(batches).tolist()) == list(range(len(lengths)))
    for b in batches:
        longest = max(lengths[i] for i in b)
        assert len(b) <= 3 and (len(b) == 1 or len(b) * longest <= 400)
        assert sum(lengths[i] for i in b) >= 0.9 * len(b) * longest
    assert [len(b) for b in batches] == [1, 3, 3, 1, 2]  # 500 alone; 57 is not padded to 100


def test_prefetch_runs_ahead_and_hands_errors_to_the_consumer():
    assert [x for _, x in prefetch(lambda i: i * i, range(5))] == [0, 1, 4, 9, 16]

    def boom(i):
        if i == 2:
            raise RuntimeError("bad batch")
        return i

    got = []
    with pytest.raises(RuntimeError, match="bad batch"):
        for _, x in prefetch(boom, range(5)):
            got.append(x)
    assert got == [0, 1]
    gen = prefetch(lambda i: i, range(10**6))
    next(gen)
    gen.close()  # a consumer that stops early stops the thread


def test_run_batched_returns_unpadded_values_in_input_order():
    import torch

    seqs = [np.arange(n, dtype=np.int64) + 1 for n in (5, 1, 9, 3, 9)]
    shapes = []

    def forward(ids, mask):
        shapes.append(tuple(ids.shape))
        return (ids * 10 + mask).to(torch.float32)

    out = run_batched(seqs, forward, pad_id=0, max_batch_tokens=20, max_batch_size=8)
    assert [o.tolist() for o in out] == [(s * 10 + 1).tolist() for s in seqs]
    assert all(r * c <= 20 or r == 1 for r, c in shapes)


def scored(text, costs, scores=None):
    starts, ends = regex_words(text)
    s = -np.arange(len(starts), dtype=float) if scores is None else np.asarray(scores, dtype=float)
    return ScoredText(text, starts, ends, s, costs=np.asarray(costs))


def test_nearest_k_matches_a_brute_force_search():
    rng = np.random.default_rng(3)
    for _ in range(200):
        n = int(rng.integers(1, 30))
        costs = rng.integers(0, 4, n)
        s = scored(" ".join(["w"] * n), costs, rng.random(n))
        plan = make_plan(s)
        for r in (0.1, 0.37, 0.5, 0.9):
            target = r * plan.total
            dist = [abs(plan.cum[k] - target) for k in range(1, n + 1)]
            want = int(np.argmin(dist)) + 1  # first (fewest words) among the closest
            assert nearest_k(plan, np.array([target]))[0] == want


def test_calibrate_corrects_renders_that_tokenise_differently():
    # 2 "tokens" per word by cost, but the counter also charges every space: renders cost more than
    # estimated, so the first guess overshoots and calibration moves to fewer words
    words = [f"w{i:02d}" for i in range(200)]
    s = scored(" ".join(words), [2] * 200)
    calls = []

    def count(texts):
        calls.append(len(texts))
        return [len(t.replace(" ", "")) // 3 * 2 + t.count(" ") for t in texts]

    original = count([s.text])[0]
    calls.clear()
    texts, counts = calibrate([s], [0.5, 0.25], count, original_tokens=[original])
    assert sum(calls) <= 2 * 4  # at most 4 counts per (text, ratio)
    assert counts[0] == count(texts[0])
    for j, r in enumerate([0.5, 0.25]):
        assert abs(counts[0][j] - r * original) <= 2  # a word costs 3 here: as close as words allow


def test_calibrate_stops_after_one_count_when_the_estimate_is_right():
    s = scored("aa bb cc dd ee ff gg hh ii jj", [1] * 10)
    calls = []

    def count(texts):
        calls.append(len(texts))
        return [len(t.split()) for t in texts]

    texts, counts = calibrate([s, scored("", [])], [0.5, 0.9, 1.0], count, original_tokens=[10, 0])
    assert texts[0] == ["aa bb cc dd ee", "aa bb cc dd ee ff gg hh ii", s.text]
    assert counts == [[5, 9, 10], [0, 0, 0]] and texts[1] == ["", "", ""]
    assert calls == [3]  # one batch, one count per (text, ratio); the empty text costs nothing
