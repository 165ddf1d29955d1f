"""Pure pruning logic of tokenskip.compressors (no model, milliseconds)."""

import numpy as np
import pytest

from tokenskip.compressors.baselines import RandomScorer, TruncationScorer
from tokenskip.compressors.calibrate import prune_calibrated
from tokenskip.compressors.compress import parse_ratios, parse_shard
from tokenskip.compressors.prune import (
    CompatChunk,
    CompatScored,
    ScoredText,
    costs_from_offsets,
    join_words,
    protect_words,
    prune,
    prune_compat,
    prune_compat_chunk,
    prune_compat_many,
    regex_words,
    select_words,
)
from tokenskip.errors import UserError

TEXT = "Tom has 3 apples.\n\nThen he eats 2.\nSo 1 is left."


def scored(text, scores=None, costs=None):
    starts, ends = regex_words(text)
    s = np.arange(len(starts))[::-1].astype(float) if scores is None else np.asarray(scores, dtype=float)
    return ScoredText(text, starts, ends, s, costs=None if costs is None else np.asarray(costs))


def test_regex_words_split_punctuation_keep_numbers_and_cjk_chars():
    text = "It costs $2.50, i.e. 1,000 don't. 小明有3个"
    starts, ends = regex_words(text)
    words = [text[a:b] for a, b in zip(starts, ends, strict=True)]
    assert words == [
        "It",
        "costs",
        "$",
        "2.50",
        ",",
        "i.e",
        ".",
        "1,000",
        "don't",
        ".",
        "小",
        "明",
        "有",
        "3",
        "个",
    ]


def test_select_words_picks_the_budget_closest_to_ratio_and_keeps_forced_words():
    scores = np.array([0.9, 0.1, 0.5, np.inf, 0.3])
    costs = np.array([2, 2, 2, 2, 2])
    keep = select_words(scores, costs, 0.4)  # 4 of 10 tokens: the forced word + the best other
    assert keep.tolist() == [True, False, False, True, False]
    keep = select_words(scores, costs, 0.01)  # forced word always kept, even over budget
    assert keep.tolist() == [False, False, False, True, False]
    assert select_words(np.array([0.2, 0.1]), np.array([5, 5]), 0.01).sum() == 1  # never empty


def test_prune_keeps_line_structure_and_prefix_for_truncation():
    s = scored(TEXT)  # earlier words score higher: truncation
    assert prune(s, 1.0) == TEXT
    assert prune(s, 0.7) == "Tom has 3 apples.\n\nThen he eats 2."
    assert prune(s, 0.3) == "Tom has 3 apples"
    rnd = scored(TEXT, scores=np.random.default_rng(1).random(15))
    out = prune(rnd, 0.5)
    assert out.count("\n") >= 1 and len(out) < len(TEXT)


def test_ratio_is_share_of_costs():
    text = "alpha beta gamma delta"
    s = scored(text, scores=[4, 3, 2, 1], costs=[1, 1, 1, 7])  # "delta" is 7 target tokens
    assert prune(s, 0.3) == "alpha beta gamma"  # 3 of 10 tokens
    assert prune(s, 0.7) == text  # 10 tokens is closer to 7 than 3 is


def test_drop_consecutive_collapses_repeated_force_words():
    text = "Step : : : go"
    starts, ends = regex_words(text)
    s = ScoredText(
        text,
        starts,
        ends,
        np.array([np.inf, np.inf, np.inf, np.inf, 1.0]),
        force_keys=np.array([0, 1, 1, 1, -1]),
        drop_consecutive=True,
    )
    assert prune(s, 1.0) == "Step : go"


def test_protect_words_forces_numbers_and_force_tokens():
    text = "Step 1: she has 12 x 2 = 24 pens, 3.5 each."
    starts, ends = regex_words(text)
    words = [text[a:b] for a, b in zip(starts, ends, strict=True)]
    base = np.arange(len(words), dtype=float)
    same, keys = protect_words(text, starts, ends, base)
    assert np.array_equal(same, base) and keys is None
    digits, _ = protect_words(text, starts, ends, base, keep_digits=True)
    assert [w for w, v in zip(words, digits, strict=True) if np.isinf(v)] == ["1", "12", "2", "24", "3.5"]
    both, keys = protect_words(text, starts, ends, base, force_tokens=["Step", ":"], keep_digits=True)
    assert [w for w, v in zip(words, both, strict=True) if np.isinf(v)] == [
        "Step",
        "1",
        ":",
        "12",
        "2",
        "24",
        "3.5",
    ]
    assert keys.tolist() == [0 if w == "Step" else 1 if w == ":" else -1 for w in words]
    # pruned to any γ, the protected words survive
    kept = prune(ScoredText(text, starts, ends, both, keys), 0.1)
    assert kept == "Step 1: 12 2 24 3.5"


def test_join_words_never_runs_kept_numbers_together():
    text = "So 84/2 = 42, $50-$8 and 我们的"
    starts, ends = regex_words(text)
    words = [text[a:b] for a, b in zip(starts, ends, strict=True)]
    keep = np.array([w not in ("/", "=", "-", "们") for w in words])
    assert join_words(text, starts, ends, keep) == "So 84 2 42, $50$8 and 我的"  # "$" cannot merge numbers
    assert join_words(text, starts, ends, np.ones(len(words), dtype=bool)) == text


def test_calibrated_pruning_uses_real_token_counts():
    s = scored("aa bb cc dd ee ff gg hh ii jj")
    count = lambda texts: [len(t.replace(" ", "")) for t in texts]  # noqa: E731  2 "tokens" per word
    out = prune_calibrated([s, scored("")], [0.5, 0.9], count)
    assert out[0] == ["aa bb cc dd ee", "aa bb cc dd ee ff gg hh ii"]
    assert out[1] == ["", ""]


def test_costs_from_offsets_assign_gap_tokens_to_next_word():
    starts, ends = np.array([0, 4]), np.array([3, 7])  # "one two"
    assert costs_from_offsets(starts, ends, np.array([0, 2, 3, 4, 6])).tolist() == [2, 3]


def test_compat_chunk_threshold_follows_llmlingua_percentile():
    words = np.array(["▁a", "▁b", "▁c", "▁d"], dtype=object)
    probs = np.array([0.2, 0.9, 0.5, 0.7], dtype=np.float32)
    chunk = CompatChunk("a b c d", words, probs, np.zeros(4, bool), np.array([1, 1, 1, 1]), np.zeros(4, bool))
    thr = np.percentile(probs, int(100 * 0.5 + 1))
    assert prune_compat_chunk(chunk, 0.5, False) == [w for w, p in zip(words, probs, strict=True) if p > thr]
    cs = CompatScored([chunk], detokenize=lambda ws: "".join(ws).replace("▁", " ").strip())
    assert prune(cs, 1.0) == "a b c d"
    assert prune(cs, 0.5) == "b d"


def test_baseline_scorers():
    r1, r2 = RandomScorer(seed=3).score([TEXT, TEXT])
    assert np.array_equal(r1.scores, r2.scores)  # reproducible per text
    assert not np.array_equal(r1.scores, RandomScorer(seed=4).score([TEXT])[0].scores)
    (t,) = TruncationScorer().score([TEXT])
    assert prune(t, 0.5).startswith("Tom has 3 apples")
    (e,) = TruncationScorer().score([""])
    assert prune(e, 0.5) == ""


@pytest.mark.parametrize("bad", ["0", "1.5", "-0.1", "abc", ""])
def test_bad_ratios_are_user_errors(bad):
    with pytest.raises(UserError):
        parse_ratios(bad)


def test_parse_ratios_and_shard():
    assert parse_ratios("0.9, 0.8,0.9") == [0.9, 0.8]
    assert parse_shard("1/4") == (1, 4) and parse_shard(None) == (0, 1)
    for bad in ("4/4", "x", "1/0"):
        with pytest.raises(UserError):
            parse_shard(bad)


def test_compat_thresholds_of_many_ratios_equal_one_call_per_ratio():
    rng = np.random.default_rng(0)
    for trial in range(50):
        n = int(rng.integers(1, 40))
        pyf = rng.random(n) < (0.3 if trial % 2 else 0.0)
        probs = np.where(pyf, 1.0, rng.random(n)).astype(np.float32)
        words = np.array([f"▁w{i}" for i in range(n)], dtype=object)
        chunk = CompatChunk("".join(words), words, probs, pyf, rng.integers(1, 4, n), np.zeros(n, dtype=bool))
        scored = CompatScored([chunk, chunk], detokenize=" ".join)
        ratios = [0.9, 0.8, 0.7, 0.6, 0.5, 0.33, 1.0]
        many = prune_compat_many(scored, ratios)
        assert many == [prune_compat(scored, r) for r in ratios]
        # ... and one np.percentile call per ratio, as llmlingua makes it (two identical chunks)
        assert many[:-1] == [" ".join(prune_compat_chunk(chunk, 1 - r, False)) * 2 for r in ratios[:-1]]
        assert many[-1] == chunk.text * 2
