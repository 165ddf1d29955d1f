"""Likelihoods on the embedded model: batched equals unbatched, and `metareason score` end to end."""

import json
import math

import pytest

from tests.conftest import run_cli
from tokenskip.data.prompts import get_preset
from tokenskip.metareason.likelihood import answer_context, answer_logprobs


@pytest.fixture(scope="module")
def model_and_tok():
    from tokenskip.models import load_model

    return load_model("smollm2-135m", device="cpu")


def _manual_logprob(model, tok, context, answer):
    import torch

    c = tok(context, add_special_tokens=False)["input_ids"]
    a = tok(answer, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([c + a])).logits[0].float()
    logp = torch.log_softmax(logits, -1)
    return sum(float(logp[len(c) + j - 1, t]) for j, t in enumerate(a))


@pytest.mark.slow
def test_batched_equals_unbatched_and_full_forward(model_and_tok):
    model, tok = model_and_tok
    preset = get_preset("default")
    pairs = [
        (answer_context("Q: 2+2?\n", "Two plus two is four.", preset), "4"),
        (answer_context("Q: What is 12 times 12, in total, for the whole class?\n", "", preset), "144"),
        (answer_context("Q: 7-3?\n", "Seven minus three equals four, so", preset), "4"),
        (answer_context("Q: 100/4?\n", "A quarter of 100 is 25.", preset), "25.5"),
    ]
    one = [answer_logprobs(model, tok, [p], batch_size=1)[0] for p in pairs]
    batched = answer_logprobs(model, tok, pairs, batch_size=4)
    assert batched == pytest.approx(one, abs=2e-4)
    manual = [_manual_logprob(model, tok, c, a) for c, a in pairs]
    assert one == pytest.approx(manual, abs=2e-4)
    assert all(lp < 0 and math.isfinite(lp) for lp in one)


def test_answer_context_cues():
    p = get_preset("default")
    assert answer_context("P", "think. ", p) == "Pthink.\n\nThe final answer is: $\\boxed{"
    assert answer_context("P", "", p) == "PThe final answer is: $\\boxed{"
    r1 = get_preset("r1-distill")
    assert answer_context("P", "hm", r1) == "Phm\n</think>\n\nFinal Answer: $\\boxed{"


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


@pytest.mark.slow
def test_score_cli_and_resume(tmp_path):
    rows = [
        {"id": "a", "question": "Tom has 3 boxes of 12 pencils. How many pencils?", "answer": "36",
         "cot": "3 * 12 = 36 pencils.", "cot_tokens": 9},
        {"id": "b", "question": "Tom has 3 boxes of 12 pencils. How many pencils?", "answer": "36",
         "cot": "Tom likes pencils. " * 20},
        {"id": "c", "question": "Tom has 3 boxes of 12 pencils. How many pencils?", "answer": "36", "cot": ""},
    ]  # fmt: skip
    src, out = tmp_path / "gen.jsonl", tmp_path / "scored.jsonl"
    _write(src, rows)
    r = run_cli("metareason", "score", "--input", str(src), "--out", str(out), "--device", "cpu")
    assert r.returncode == 0, r.stderr[-2000:]
    got = {x["id"]: x for x in map(json.loads, out.read_text().splitlines())}
    assert set(got) == {"a", "b", "c"}
    for x in got.values():
        assert x["reward"] == pytest.approx(x["utility"] - x["cost"], abs=1e-5)
        assert x["cost"] == pytest.approx(0.1 * math.log1p(x["thought_tokens"]), abs=1e-5)
        assert x["logp_direct"] == got["a"]["logp_direct"]  # one direct answer per prompt
    assert got["a"]["thought_tokens"] == 9 and got["c"]["thought_tokens"] == 0
    assert got["c"]["utility"] == 0 and got["c"]["reward"] == 0
    assert got["b"]["utility"] < got["a"]["utility"]  # the right computation helps more than chatter
    # resume: a finished file is not rescored; other settings are refused
    r = run_cli("metareason", "score", "--input", str(src), "--out", str(out), "--device", "cpu")
    assert r.returncode == 0 and "0 records (3 already done)" in r.stdout
    r = run_cli("metareason", "score", "--input", str(src), "--out", str(out), "--cost", "0.5")
    assert r.returncode == 2 and "cost_c" in r.stderr


def test_score_bad_input_names_the_line(tmp_path):
    src = tmp_path / "gen.jsonl"
    _write(
        src,
        [{"id": "a", "question": "q", "answer": "1", "cot": "x"}, {"id": "b", "question": "q", "cot": "x"}],
    )
    r = run_cli("metareason", "score", "--input", str(src), "--out", str(tmp_path / "o.jsonl"))
    assert r.returncode == 2
    assert f"{src}:2: record has no gold 'answer'" in r.stderr
