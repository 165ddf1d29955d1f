"""Thinking presets and budget forcing on real weights: the embedded model under a thinking chat template.

No thinking model is available offline (tests/thinking_model.py). Checked here: the preset drives the
template's thinking switch; budget forcing cuts the thinking at N generated tokens and still produces an
answer segment on ``hf`` and ``vllm``, with identical greedy outputs and streamed increments that add up to
the records; ``compress`` prunes only the thinking of thinking records; ``bench`` reports thinking and answer
tokens. ONE vLLM engine serves the module (a start costs 20-60 s on a shared CPU).
"""

from __future__ import annotations

import json

import pytest

from tests.thinking_model import make_thinking_model
from tokenskip.data.datasets import Record
from tokenskip.data.prompts import PRESETS, forced_answer
from tokenskip.inference.base import SamplingConfig
from tokenskip.methods import Context, get_method

pytestmark = pytest.mark.slow

QUESTIONS = [
    Record("q0", "Tom has 3 apples and buys 2 more. How many apples does he have?", "5"),
    Record("q1", "A train travels 60 km in one hour. How far does it travel in 3 hours?", "180"),
]
N = 8
SAMPLING = SamplingConfig(max_new_tokens=24)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, embedded_model_dir) -> str:
    return make_thinking_model(embedded_model_dir, tmp_path_factory.mktemp("thinking") / "model")


@pytest.fixture(scope="module")
def hf(model_dir):
    from tokenskip.inference import make_generator

    return make_generator("hf", model=model_dir, batch_size=8)


@pytest.fixture(scope="module")
def hf_rows(hf):
    ctx = Context(hf, PRESETS["r1-distill"], SAMPLING, model="thinking")
    return get_method(f"budget-forcing@{N}").run_batch(ctx, QUESTIONS)


@pytest.fixture(scope="module")
def vllm_engine(model_dir):
    pytest.importorskip("vllm")
    from tokenskip.inference import make_generator

    gen = make_generator("vllm", model=model_dir, max_model_len=1024)
    yield gen
    gen.close()


def test_presets_drive_the_thinking_switch(hf):
    tok = hf.tokenizer
    ctx = {p: Context(hf, PRESETS[p], SAMPLING) for p in ("r1-distill", "qwen3", "qwen3-nothink")}
    prompts = {p: get_method("original").prompt(c, "Q?") for p, c in ctx.items()}
    assert prompts["r1-distill"].endswith("Q?<|im_end|>\n<|im_start|>assistant\n<think>\n")
    assert prompts["qwen3"] == prompts["r1-distill"]  # enable_thinking=True: the block opens
    assert prompts["qwen3-nothink"].endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")
    assert tok.chat_template.count("enable_thinking") == 2


def test_hf_cuts_thinking_at_n_and_answers(hf_rows):
    for row in hf_rows:
        assert row["forced"] is True and row["thinking_generated"] == N, row
        assert N - 1 <= row["thinking_tokens"] <= N + 1  # the cut, retokenized, plus "\n" before </think>
        thinking, _, answer = row["output"].partition(forced_answer("r1-distill"))
        assert answer and row["answer_tokens"] > 0 and row["cot"] == thinking + "\n"
        assert row["output_tokens"] <= SAMPLING.max_new_tokens + 16  # generated + the inserted close and cue
        assert row["prediction"] != ""


def test_hf_stream_adds_up_to_the_records(hf, hf_rows):
    method = get_method(f"budget-forcing@{N}")
    ctx = Context(hf, PRESETS["r1-distill"], SAMPLING)
    parts: dict[int, list[str]] = {0: [], 1: []}
    gens = method.generate(ctx, method.requests(ctx, QUESTIONS), lambda i, t: parts[i].append(t))
    assert ["".join(parts[i]) for i in (0, 1)] == [g.text for g in gens] == [r["output"] for r in hf_rows]
    assert all(len(parts[i]) > 3 for i in (0, 1))  # token by token, not one piece


def test_vllm_gives_the_same_greedy_budget_forcing(vllm_engine, hf, hf_rows):
    ctx = Context(vllm_engine, PRESETS["r1-distill"], SAMPLING, model="thinking")
    method = get_method(f"budget-forcing@{N}")
    rows = method.run_batch(ctx, QUESTIONS)
    keys = (
        "prompt",
        "output",
        "forced",
        "thinking_generated",
        "thinking_tokens",
        "answer_tokens",
        "output_tokens",
    )
    assert [{k: r[k] for k in keys} for r in rows] == [{k: r[k] for k in keys} for r in hf_rows]
    parts: dict[int, list[str]] = {0: [], 1: []}
    gens = method.generate(ctx, method.requests(ctx, QUESTIONS), lambda i, t: parts[i].append(t))
    assert ["".join(parts[i]) for i in (0, 1)] == [g.text for g in gens] == [r["output"] for r in rows]
    # both backends say which stop string ended a generation
    prompt = [rows[0]["prompt"]]
    cfg = SamplingConfig(max_new_tokens=24, stop=(" ", "\n"))
    ours, ref = vllm_engine.generate(prompt, cfg)[0], hf.generate(prompt, cfg)[0]
    assert ours.stop_string == ref.stop_string is not None and ours.text == ref.text


def test_compress_prunes_only_the_thinking(tmp_path, model_dir, hf_rows):
    from tokenskip.verbs.compress import compress

    src = tmp_path / "thinking.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in hf_rows))
    compress(
        str(src), str(tmp_path / "c"), ratios="0.5", scorer="truncation", model=model_dir, progress=False
    )
    out = [json.loads(x) for x in (tmp_path / "c" / "compressed_0.5.jsonl").read_text().splitlines()]
    for row, c in zip(hf_rows, out, strict=True):
        assert c["cot"] == row["cot"] and "</think>" not in c["compressed_cot"]
        assert "Final Answer" not in c["compressed_cot"] and 0 < c["compressed_tokens"] < c["original_tokens"]


def test_bench_reports_thinking_and_answer_tokens(tmp_path, model_dir):
    from tests.conftest import run_cli

    out = tmp_path / "bench"
    proc = run_cli("bench", "--model", model_dir, "--preset", "r1-distill", "--dataset", "sample",
                   "--limit", "2", "--max-new-tokens", "24", "--batch-size", "2", "--latency-samples", "0",
                   "--methods", f"original,budget-forcing@{N}", "--out", str(out), timeout=1500)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((out / "run.json").read_text())["thinking"] is True
    md = (out / "results.md").read_text()
    assert "| thinking tokens | answer tokens |" in md and "thinking cut (forced)" in md
    methods = json.loads((out / "results.json").read_text())["runs"][0]["methods"]
    bf = next(m for m in methods if m["method"] == f"budget-forcing@{N}")
    assert bf["forced_share"] == 1.0 and bf["mean_answer_tokens"] > 0
    assert N - 1 <= bf["mean_thinking_tokens"] <= N + 1
