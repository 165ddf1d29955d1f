"""Model-backed scorers on offline random checkpoints of LLMLingua-2's architecture (built in tmp dirs)."""

import re

import numpy as np
import pytest

from tokenskip.compressors.blocks import finish_block
from tokenskip.compressors.calibrate import prune_calibrated
from tokenskip.compressors.compress import assign_costs, count_tokens
from tokenskip.compressors.prune import prune
from tokenskip.compressors.testing import build_causal_lm, build_token_classifier, long_cot, synthetic_cots

pytestmark = pytest.mark.slow

RATIOS = [0.9, 0.8, 0.7, 0.6, 0.5]
EDGE = [
    "",
    "小明有3个苹果，又买了5个，一共有8个苹果。",
    "Step 1: Step 2: : : x\n\nStep 3: 45 + 3 = 48.",
    " ".join(["The total is 5 + 7 = 12."] * 120),  # > 512 tokens: chunked, never truncated
]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # tiny models on a shared 2-core machine: two threads mostly wait for each other (10x slower here)
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    root = tmp_path_factory.mktemp("ckpt")
    return {
        "xlmr": build_token_classifier(root, "small"),
        "bert": build_token_classifier(root, "small", family="bert"),
        "lm": build_causal_lm(root),
    }


@pytest.mark.parametrize(
    "family,kwargs,n",
    [
        ("xlmr", {}, 30),
        ("xlmr", {"force_tokens": ["Step", ":"], "keep_digits": True, "drop_consecutive": True}, 30),
        ("xlmr", {"force_tokens": ["<<", "Step", ">>"], "drop_consecutive": True}, 6),  # multi-token force
        ("bert", {"force_tokens": ["Step", ":"], "keep_digits": True, "drop_consecutive": True}, 10),
    ],
)
def test_compat_mode_equals_llmlingua_word_for_word(ckpts, family, kwargs, n):
    from tokenskip.compressors.llmlingua2 import LLMLingua2Scorer, LLMLinguaReference

    texts = synthetic_cots(n, seed=n) + EDGE
    ours = LLMLingua2Scorer(str(ckpts[family]), mode="compat", device="cpu", max_batch_tokens=4096, **kwargs)
    ref = LLMLinguaReference(str(ckpts[family]), device="cpu", **kwargs)
    scored = ours.score(texts)
    mismatches = [
        (r, t)
        for r in [*RATIOS, 1.0]
        for t, s in zip(texts, scored, strict=True)
        if prune(s, r) != ref.compress(t, r)
    ]
    assert mismatches == []


def test_reference_backend_is_a_scorer_like_the_others(ckpts, embedded_tokenizer):
    """``--scorer llmlingua`` (the llmlingua package, one call per text and ratio, in its ``finish``) goes
    through the same block step as every scorer and writes what llmlingua2's compat mode writes."""
    from tokenskip.compressors.finish import compress_block
    from tokenskip.compressors.registry import make_scorer

    texts = [*synthetic_cots(4, seed=9), ""]
    ref = make_scorer("llmlingua", checkpoint=str(ckpts["xlmr"]), device="cpu")
    ours = make_scorer("llmlingua2", checkpoint=str(ckpts["xlmr"]), mode="compat", device="cpu")
    got = compress_block(ref, embedded_tokenizer, texts, [0.9, 0.5])
    assert got == compress_block(ours, embedded_tokenizer, texts, [0.9, 0.5])
    assert got.texts[-1] == ["", ""] and got.texts[0][1] != texts[0]


def test_exact_mode_hits_the_ratio_in_target_tokens(ckpts, embedded_tokenizer):
    from tokenskip.compressors.llmlingua2 import LLMLingua2Scorer

    target = embedded_tokenizer  # the default target model's tokenizer
    texts = synthetic_cots(80, seed=7)
    scorer = LLMLingua2Scorer(str(ckpts["xlmr"]), device="cpu")
    scored = scorer.score(texts)
    assign_costs(target, scored)
    out = prune_calibrated(scored, RATIOS, lambda ts: count_tokens(target, ts))
    original = np.array(count_tokens(target, texts), dtype=float)
    for j, r in enumerate(RATIOS):
        achieved = np.array(count_tokens(target, [o[j] for o in out])) / original
        assert abs(achieved - r).mean() <= 0.02, (r, achieved.mean())
    # newlines survive, and the model saw its own special tokens
    assert any("\n" in o[-1] for o in out)
    assert scorer.cls_id == scorer.tokenizer.cls_token_id


def test_exact_mode_long_and_non_latin_cots(ckpts):
    from tokenskip.compressors.llmlingua2 import LLMLingua2Scorer

    scorer = LLMLingua2Scorer(str(ckpts["xlmr"]), device="cpu", force_tokens=["Step", ":"], keep_digits=True)
    empty, cjk, steps, long = scorer.score(EDGE)
    assert len(empty) == 0 and prune(empty, 0.5) == ""
    assert len(cjk) >= 15  # scripts without spaces are split per character, not one giant word
    assert prune(steps, 0.5).count("Step") == 3 and "45" in prune(steps, 0.5)  # forced tokens and digits
    assert long.ends[-1] == len(EDGE[3])  # the whole long CoT is scored (several windows), not truncated
    assert len(prune(long, 0.5)) < len(EDGE[3])


def test_selfinfo_scorer_on_tiny_causal_lm(ckpts):
    from tokenskip.compressors.selfinfo import SelfInfoScorer

    scorer = SelfInfoScorer(str(ckpts["lm"]), device="cpu", window=16)
    texts = synthetic_cots(3) + ["", "短文本"]
    scored = scorer.score(texts)
    assert [len(s) > 0 for s in scored] == [True, True, True, False, True]
    assert all((s.scores > 0).all() for s in scored if len(s))  # every word got some surprisal
    # windowing (16 tokens) gives the same surprisal as one pass except at window seams
    wide = SelfInfoScorer(str(ckpts["lm"]), device="cpu", window=256).score(texts[:1])[0]  # the model's limit
    assert np.corrcoef(wide.scores, scored[0].scores)[0, 1] > 0.5
    assert len(prune(scored[0], 0.5)) < len(texts[0])
    # TokenSkip's LLaMA-3 settings work on selfinfo too: every number survives any γ
    keep = SelfInfoScorer(str(ckpts["lm"]), device="cpu", keep_digits=True, force_tokens=["Step"])
    text = texts[0]
    numbers = re.findall(r"\d+(?:[.,]\d+)*", text)
    assert numbers
    short = prune(keep.score([text])[0], 0.3)
    assert re.findall(r"\d+(?:[.,]\d+)*", short) == numbers and len(short) < len(text)
    assert keep.describe()["keep_digits"] is True


LONG = [200, 1000, 4000, 16000]  # target-model tokens


def widths_of(scorer):
    """Record the width of every model input the scorer builds."""
    widths = []
    inner = scorer._forward

    def forward(ids, mask):
        widths.append(ids.shape[1])
        return inner(ids, mask)

    scorer._forward = forward
    return widths


def check_long(scorer, tokenizer, window):
    widths = widths_of(scorer)
    texts = [long_cot(n, lambda ts: count_tokens(tokenizer, ts), seed=n) for n in LONG]
    scored = scorer.score(texts)
    for text, s in zip(texts, scored, strict=True):
        assert s.ends[-1] == len(text.rstrip()) and np.isfinite(s.scores).all()
    res = finish_block(scored, tokenizer, texts, RATIOS)
    assert res.original_tokens == count_tokens(tokenizer, texts)
    for i, n in enumerate(LONG):
        assert n <= res.original_tokens[i] <= n * 1.1
        assert res.compressed_tokens[i] == count_tokens(tokenizer, res.texts[i])  # real counts
        achieved = np.array(res.compressed_tokens[i]) / res.original_tokens[i]
        assert np.abs(achieved - RATIOS).max() <= 0.02, (n, achieved)
    assert max(widths) <= window  # the scorer's window is never exceeded
    assert len(widths) >= 2  # 16k tokens took several batches of windows


def test_exact_mode_prunes_long_cots_to_the_ratio_within_the_window(ckpts, embedded_tokenizer):
    from tokenskip.compressors.llmlingua2 import LLMLingua2Scorer

    scorer = LLMLingua2Scorer(str(ckpts["xlmr"]), device="cpu", max_batch_tokens=4096)
    check_long(scorer, embedded_tokenizer, 512)


def test_selfinfo_prunes_long_cots_to_the_ratio_within_the_window(ckpts, embedded_tokenizer):
    from tokenskip.compressors.selfinfo import SelfInfoScorer

    scorer = SelfInfoScorer(str(ckpts["lm"]), device="cpu", window=256, context=64)
    check_long(scorer, embedded_tokenizer, 256)
    # a window after the first is conditioned on the text before it: the surprisal of its first tokens
    # is close to a one-pass score (window 256 covers this text whole), not that of a text start
    text = long_cot(240, lambda ts: count_tokens(scorer.tokenizer, ts), seed=1)
    whole = scorer.score([text])[0].scores
    cut = SelfInfoScorer(str(ckpts["lm"]), device="cpu", window=96, context=40).score([text])[0].scores
    bare = SelfInfoScorer(str(ckpts["lm"]), device="cpu", window=96, context=0).score([text])[0].scores
    assert np.abs(cut - whole).sum() < np.abs(bare - whole).sum()


def test_scorer_dtypes_bf16_and_tf32_on_cpu(ckpts):
    from tokenskip.compressors.llmlingua2 import LLMLingua2Scorer

    texts = synthetic_cots(20, seed=5)
    fp32 = LLMLingua2Scorer(str(ckpts["xlmr"]), mode="compat", device="cpu")
    tf32 = LLMLingua2Scorer(str(ckpts["xlmr"]), mode="compat", device="cpu", dtype="tf32")
    bf16 = LLMLingua2Scorer(str(ckpts["xlmr"]), mode="compat", device="cpu", dtype="bfloat16")
    assert (fp32.describe()["dtype"], tf32.describe()["dtype"], bf16.describe()["dtype"]) == (
        "float32",
        "tf32",
        "bfloat16",
    )
    want = [[prune(s, r) for r in RATIOS] for s in fp32.score(texts)]
    assert [[prune(s, r) for r in RATIOS] for s in tf32.score(texts)] == want  # TF32 is CUDA-only
    got = [[prune(s, r) for r in RATIOS] for s in bf16.score(texts)]
    same = np.mean([g == w for gr, wr in zip(got, want, strict=True) for g, w in zip(gr, wr, strict=True)])
    assert same >= 0.5  # near-identical: bf16 may move a few words across the threshold
    probs32 = [c.probs for s in fp32.score(texts) for c in s.chunks]
    probs16 = [c.probs for s in bf16.score(texts) for c in s.chunks]
    assert max(np.abs(a - b).max() for a, b in zip(probs32, probs16, strict=True)) < 0.05
